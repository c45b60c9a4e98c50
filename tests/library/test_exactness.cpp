// The exactness contract in the conditions training loops meet: mixed precision,
// gradients autograd hands in, other threads and explicit generators, closures, right-hand sides
// that write into their input, retrying a failed backward, memory budgets, and the smaller
// contracts of the Adjoint, PeakScope and the options. Each test here failed before the fix.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <thread>

using namespace anode_test;
using anode::Gradient;
using anode::Method;

namespace {

anode::ODEBlockOptions opts(Method m, int64_t steps, Gradient g = Gradient::Anode) {
  return anode::ODEBlockOptions().method(m).steps(steps).gradient(g);
}

/// A user's CPU autocast region (bf16 by default).
struct CpuAutocast : ScopedAutocast {
  explicit CpuAutocast(c10::ScalarType dtype = torch::kBFloat16)
      : ScopedAutocast(c10::DeviceType::CPU, dtype) {}
};

/// conv-ReLU-conv on an fp32 state: under autocast the convs run in bf16 and return bf16.
struct AmpConvImpl : torch::nn::Module {
  explicit AmpConvImpl(bool cast_back = false)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 3, 3).padding(1)))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 3, 3).padding(1)))),
        cast_back(cast_back) {}
  torch::Tensor forward(torch::Tensor x) {
    autocast_seen.push_back(anode::detail::AutocastState::capture().cpu_enabled);
    auto y = conv2(torch::relu(conv1(x)));
    return cast_back ? y.to(x.scalar_type()) : y;
  }
  torch::nn::Conv2d conv1, conv2;
  bool cast_back;
  std::vector<bool> autocast_seen;
};
TORCH_MODULE(AmpConv);

// Gradients of a block's parameters and input for a sum loss, forward under CPU bf16 autocast and
// backward outside it (as a training loop does).
std::vector<torch::Tensor> amp_grads(anode::ODEBlock<AmpConvImpl>& block, const torch::Tensor& x0) {
  auto x = x0.clone().requires_grad_(true);
  torch::Tensor y;
  {
    CpuAutocast amp;
    y = block->forward(x);
  }
  EXPECT_EQ(y.scalar_type(), torch::kFloat);  // the state keeps its dtype
  std::vector<torch::Tensor> inputs = block->parameters();
  inputs.push_back(x);
  return grads_of((y * y).sum(), inputs);
}

anode::ODEBlock<AmpConvImpl> amp_block(const anode::ODEBlockOptions& o, bool cast_back = false) {
  torch::manual_seed(3);
  return anode::ODEBlock<AmpConvImpl>(AmpConv(cast_back), o);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Mixed precision: a bf16 derivative of an fp32 state is accepted under autocast, and every
// recompute runs under the forward's autocast state, so Anode gives Backprop's gradient.

struct AmpCase {
  Method method;
  int64_t checkpoints;
  bool cast_back;
};
class AutocastExact : public ::testing::TestWithParam<AmpCase> {};

TEST_P(AutocastExact, AnodeEqualsBackpropUnderCpuBf16) {
  const auto c = GetParam();
  torch::manual_seed(0);
  auto x = torch::randn({2, 3, 6, 6});
  auto ref = amp_block(opts(c.method, 4, Gradient::Backprop), c.cast_back);
  auto anode_block = amp_block(opts(c.method, 4).checkpoints(c.checkpoints), c.cast_back);
  auto want = amp_grads(ref, x);
  auto got = amp_grads(anode_block, x);
  EXPECT_LT(max_rel_err(got, want), 1e-6);
  // The recompute ran under autocast, as the forward did; nothing ran without it.
  for (bool on : anode_block->func()->autocast_seen) EXPECT_TRUE(on);
  // And autocast is off again afterwards, as the caller left it.
  EXPECT_FALSE(anode::detail::AutocastState::capture().cpu_enabled);
}

INSTANTIATE_TEST_SUITE_P(
    MethodsAndCheckpoints, AutocastExact,
    ::testing::Values(AmpCase{Method::Euler, 0, false}, AmpCase{Method::RK2, 0, false},
                      AmpCase{Method::RK4, 0, false}, AmpCase{Method::RK2, 0, true},
                      AmpCase{Method::Euler, 2, false}, AmpCase{Method::RK2, 2, false},
                      AmpCase{Method::RK4, 1, false}, AmpCase{Method::RK2, 2, true}),
    [](const ::testing::TestParamInfo<AmpCase>& i) {
      return std::string(anode::to_string(i.param.method)) + "_k" +
             std::to_string(i.param.checkpoints) + (i.param.cast_back ? "_castback" : "");
    });

TEST(Autocast, AdjointReverseSolveRunsUnderTheForwardsAutocast) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 3, 6, 6});
  auto block = amp_block(opts(Method::RK2, 2, Gradient::Adjoint));
  auto g = amp_grads(block, x);
  for (const auto& t : g) EXPECT_TRUE(t.defined() && torch::isfinite(t).all().item<bool>());
  const auto& seen = block->func()->autocast_seen;
  EXPECT_GT(seen.size(), 4u);  // forward and reverse evaluations
  for (bool on : seen) EXPECT_TRUE(on);
}

TEST(Autocast, HigherPrecisionOutputIsStillAnError) {
  auto x = torch::randn({2, 3}).to(torch::kBFloat16);
  CpuAutocast amp;
  auto f = [](const torch::Tensor& z) { return z.to(torch::kDouble); };
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(f, x, opts(Method::Euler, 1)); },
                                {"dtype Double", "BFloat16", "never a higher one"}));
}

TEST(Autocast, LowerPrecisionOutputWithoutAutocastIsAnError) {
  auto x = torch::randn({2, 3});
  auto f = [](const torch::Tensor& z) { return z.to(torch::kBFloat16); };
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(f, x, opts(Method::Euler, 1)); },
                                {"dtype BFloat16", "only under autocast"}));
}

// A backward inside the user's autocast region (common in C++, where autocast is switched on for
// the whole loop): the graph-free forward must not leave casts without a graph in the weight
// cache, where the recompute would find them and give the weights no gradient.
TEST(Autocast, BackwardInsideTheAutocastRegionStillTrainsWeights) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 3, 6, 6});
  for (int64_t k : {0, 2}) {
    auto ref = amp_block(opts(Method::RK2, 4, Gradient::Backprop));
    auto blk = amp_block(opts(Method::RK2, 4).checkpoints(k));
    std::vector<std::vector<torch::Tensor>> g;
    for (auto* b : {&ref, &blk}) {
      CpuAutocast amp;
      auto y = (*b)->forward(x);
      g.push_back(grads_of((y * y).sum(), (*b)->parameters()));
    }
    for (const auto& t : g[1]) ASSERT_TRUE(t.defined()) << "k " << k;
    EXPECT_LT(max_rel_err(g[1], g[0]), 1e-6) << "k " << k;
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The binomial backward never writes into a gradient autograd handed it: with a Linear RHS on
// an unbatched state and Euler steps of h = 1 the bias gradient of a step *is* dL/dz.

TEST(GradientAliasing, BinomialDoesNotWriteIntoTheIncomingGradient) {
  for (int64_t k : {1, 2}) {
    torch::manual_seed(1);
    torch::nn::Linear ref_f(4, 4);
    torch::manual_seed(1);
    torch::nn::Linear f(4, 4);
    const auto o = opts(Method::Euler, 4).t0(0).t1(4);  // h = 1
    auto x = torch::randn({4});
    // The sum's backward hands every node the same expanded ones: must not throw.
    auto y = anode::odeint(f, x, anode::ODEBlockOptions(o).checkpoints(k));
    ASSERT_NO_THROW(y.sum().backward()) << "k " << k;
    auto y_ref = anode::odeint(ref_f, x, anode::ODEBlockOptions(o).gradient(Gradient::Backprop));
    y_ref.sum().backward();
    EXPECT_LT(
        max_rel_err({f->weight.grad(), f->bias.grad()}, {ref_f->weight.grad(), ref_f->bias.grad()}),
        1e-6);
    // A gradient the caller owns is left as it was.
    auto g = torch::randn({4});
    const auto g_copy = g.clone();
    auto y2 = anode::odeint(f, x, anode::ODEBlockOptions(o).checkpoints(k));
    auto grads = torch::autograd::grad({y2}, {f->weight, f->bias}, {g});
    EXPECT_TRUE(torch::equal(g, g_copy)) << "k " << k;
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Random numbers: replayed when they can be, an error when they were not, never silent.

namespace {

/// f(z) = W dropout(tanh(z)) with a hook run at each evaluation (to draw from another thread at a
/// chosen moment) and, optionally, its own generator.
struct NoisyImpl : torch::nn::Module {
  NoisyImpl() : fc(register_module("fc", torch::nn::Linear(6, 6))) { fc->to(torch::kDouble); }
  torch::Tensor forward(torch::Tensor x) {
    ++calls;
    if (hook) hook(calls);
    auto h = torch::tanh(x);
    if (gen.defined()) {
      auto keep = torch::empty_like(h).bernoulli_(0.7, gen);
      h = h * keep / 0.7;
    } else {
      h = torch::dropout(h, 0.3, is_training());
    }
    return fc(h);
  }
  torch::nn::Linear fc;
  at::Generator gen;
  std::function<void(int)> hook;
  int calls = 0;
};
TORCH_MODULE(Noisy);

// Draws `n` numbers from the default CPU generator in another thread, and waits for it.
void draw_in_other_thread(int n = 10) {
  std::thread t([n] { torch::rand({n}); });
  t.join();
}

torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

anode::ODEBlock<NoisyImpl> noisy_block(const anode::ODEBlockOptions& o) {
  torch::manual_seed(11);
  return anode::ODEBlock<NoisyImpl>(Noisy(), o);
}

std::vector<torch::Tensor> noisy_grads(anode::ODEBlock<NoisyImpl>& b, const torch::Tensor& y) {
  return grads_of((y * y).sum(), b->parameters());
}

}  // namespace

class RngReplay : public ::testing::TestWithParam<int64_t> {};

// Another thread draws between the forward pass and the backward: the replay gives the forward's
// masks, and the other thread's stream is not rewound.
TEST_P(RngReplay, OtherThreadDrawingBetweenForwardAndBackwardIsHarmless) {
  const int64_t k = GetParam();
  auto x = torch::randn({5, 6}, torch::kDouble);
  auto ref = noisy_block(opts(Method::RK2, 4, Gradient::Backprop));
  auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(k));
  torch::manual_seed(5);
  auto want = noisy_grads(ref, ref->forward(x));
  torch::manual_seed(5);
  auto y = blk->forward(x);
  draw_in_other_thread();
  const auto before = cpu_rng_state();
  auto got = noisy_grads(blk, y);
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  EXPECT_TRUE(torch::equal(cpu_rng_state(), before));  // nobody's numbers handed out twice
}

// Another thread draws while the block's forward pass runs: the recompute cannot reproduce the
// masks, and says so.
TEST_P(RngReplay, OtherThreadDrawingDuringForwardIsAnError) {
  auto x = torch::randn({5, 6}, torch::kDouble);
  auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(GetParam()));
  blk->func()->hook = [](int call) {
    if (call == 3) draw_in_other_thread();
  };
  auto y = blk->forward(x);
  blk->func()->hook = nullptr;
  EXPECT_TRUE(throws_mentioning(
      [&] { noisy_grads(blk, y); },
      {"did not draw the same random numbers", "Another thread", "ODEBlockOptions::generators"}));
}

// Another thread draws while the recompute runs.
TEST_P(RngReplay, OtherThreadDrawingDuringTheRecomputeIsAnError) {
  auto x = torch::randn({5, 6}, torch::kDouble);
  auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(GetParam()));
  auto y = blk->forward(x);
  blk->func()->hook = [](int) { draw_in_other_thread(); };
  EXPECT_TRUE(
      throws_mentioning([&] { noisy_grads(blk, y); }, {"did not draw the same random numbers"}));
}

// An RHS drawing from its own generator: not named, the recompute differs and that is an error;
// named, it is replayed, and other threads using the default generator do not matter.
TEST_P(RngReplay, ExplicitGeneratorIsAnErrorUnlessNamedThenReplayed) {
  const int64_t k = GetParam();
  auto x = torch::randn({5, 6}, torch::kDouble);
  auto make_gen = [] {
    auto g = at::detail::createCPUGenerator(1234);
    return g;
  };
  {
    auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(k));
    blk->func()->gen = make_gen();
    auto y = blk->forward(x);
    EXPECT_TRUE(
        throws_mentioning([&] { noisy_grads(blk, y); },
                          {"different output", "not named in ODEBlockOptions::generators"}));
  }
  auto ref = noisy_block(opts(Method::RK2, 4, Gradient::Backprop));
  ref->func()->gen = make_gen();
  auto want = noisy_grads(ref, ref->forward(x));
  auto gen = make_gen();
  auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(k).generators({gen}));
  blk->func()->gen = gen;
  blk->func()->hook = [](int) { draw_in_other_thread(); };  // the default generator is not used
  auto y = blk->forward(x);
  const auto default_state = cpu_rng_state();
  auto got = noisy_grads(blk, y);
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  // The default generator was neither replayed nor rewound: only the other threads moved it.
  EXPECT_FALSE(torch::equal(cpu_rng_state(), default_state));
}

// preserve_rng_state(false): free for an RHS without randomness, an error for one with it.
TEST_P(RngReplay, PreserveRngStateOff) {
  const int64_t k = GetParam();
  auto x = torch::randn({5, 6}, torch::kDouble);
  auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(k).preserve_rng_state(false));
  auto y = blk->forward(x);
  EXPECT_TRUE(throws_mentioning([&] { noisy_grads(blk, y); },
                                {"different output", "preserve_rng_state(false)"}));
  // In eval() dropout draws nothing: exact, and the generator is not touched.
  auto ref = noisy_block(opts(Method::RK2, 4, Gradient::Backprop));
  ref->eval();
  blk->eval();
  auto want = noisy_grads(ref, ref->forward(x));
  const auto state = cpu_rng_state();
  auto got = noisy_grads(blk, blk->forward(x));
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  EXPECT_TRUE(torch::equal(cpu_rng_state(), state));
}

INSTANTIATE_TEST_SUITE_P(WholeBlockAndBinomial, RngReplay, ::testing::Values(0, 1, 2),
                         [](const ::testing::TestParamInfo<int64_t>& i) {
                           return "k" + std::to_string(i.param);
                         });

// ---------------------------------------------------------------------------------------------
// 4. Closures: a tensor requiring grad that the callable reads but that is not in `params` is an
// error in Anode and Adjoint, whether or not the input requires grad.

TEST(Closures, UnlistedTensorRequiringGradIsAnError) {
  torch::manual_seed(2);
  auto W = torch::randn({3, 3}, torch::kDouble).requires_grad_(true);
  auto f = [W](const torch::Tensor& z) { return torch::tanh(z.matmul(W)); };
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    for (bool x_grad : {true, false}) {
      auto x = torch::randn({2, 3}, torch::kDouble).requires_grad_(x_grad);
      EXPECT_TRUE(throws_mentioning(
          [&] {
            auto y = anode::odeint(f, x, opts(Method::RK2, 3, g));
            y.sum().backward();
          },
          {"requires grad", "[3, 3]", "params"}))
          << anode::to_string(g) << " x_grad " << x_grad;
    }
  }
}

TEST(Closures, ListedTensorsGetBackpropsGradient) {
  torch::manual_seed(2);
  auto W = torch::randn({3, 3}, torch::kDouble).requires_grad_(true);
  auto x = torch::randn({2, 3}, torch::kDouble);
  auto f = [W](const torch::Tensor& z) { return torch::tanh(z.matmul(W)); };
  auto want = grads_of(anode::odeint(f, x, opts(Method::RK2, 3, Gradient::Backprop)).sum(), {W});
  for (int64_t k : {0, 1}) {
    auto got = grads_of(anode::odeint(f, x, opts(Method::RK2, 3).checkpoints(k), {W}).sum(), {W});
    EXPECT_LT(max_rel_err(got, want), 1e-12) << k;
  }
}

// The safe pattern the README shows: capture tensors by value (they are handles), so the callable
// may run again in backward after the scope that built it is gone.
TEST(Closures, ByValueCaptureOutlivesItsScope) {
  torch::manual_seed(2);
  auto W = torch::randn({3, 3}, torch::kDouble).requires_grad_(true);
  auto x = torch::randn({2, 3}, torch::kDouble);
  torch::Tensor y;
  {
    const double scale = 0.5;
    torch::Tensor weight = W;
    y = anode::odeint([weight, scale](const torch::Tensor& z) { return scale * z.matmul(weight); },
                      x, opts(Method::RK4, 2), {W});
  }
  y.sum().backward();
  EXPECT_TRUE(W.grad().defined());
}

// A tensor computed from a parameter (not a leaf) passed in `params` is an input like any other.
TEST(Closures, NonLeafParameterIsKnown) {
  auto V = torch::randn({3, 3}, torch::kDouble).requires_grad_(true);
  auto W = V * 2;
  auto x = torch::randn({2, 3}, torch::kDouble);
  auto f = [W](const torch::Tensor& z) { return torch::tanh(z.matmul(W)); };
  auto want = grads_of(anode::odeint(f, x, opts(Method::RK2, 3, Gradient::Backprop)).sum(), {V});
  auto got = grads_of(anode::odeint(f, x, opts(Method::RK2, 3), {W}).sum(), {V});
  EXPECT_LT(max_rel_err(got, want), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// 5. An RHS that writes into its input is an error in every mode.

TEST(InPlace, RhsModifyingItsInputIsAnError) {
  torch::manual_seed(2);
  torch::nn::Linear lin(3, 3);
  lin->to(torch::kDouble);
  auto f = [lin](const torch::Tensor& z) mutable {
    auto zz = z;
    zz.add_(1);
    return lin(zz);
  };
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    for (bool x_grad : {false, true}) {
      auto x = torch::randn({2, 3}, torch::kDouble);
      auto xi = x_grad ? (x * 1).detach().requires_grad_(true) : x;
      EXPECT_TRUE(throws_mentioning(
          [&] {
            auto y = anode::odeint(f, xi * 1, opts(Method::RK2, 2, g), lin->parameters());
            y.sum().backward();
          },
          {"modified its input in place"}))
          << anode::to_string(g) << " x_grad " << x_grad;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 6. A backward that throws can be retried once the cause is fixed.

namespace {
struct FailingImpl : torch::nn::Module {
  FailingImpl()
      : fc(register_module("fc", torch::nn::Linear(4, 4))),
        bn(register_module("bn", torch::nn::BatchNorm1d(4))) {}
  torch::Tensor forward(torch::Tensor x) {
    ++calls;
    TORCH_CHECK(fail_after < 0 || calls <= fail_after, "test: the RHS failed on purpose");
    return torch::dropout(torch::tanh(bn(fc(x))), 0.2, is_training());
  }
  torch::nn::Linear fc;
  torch::nn::BatchNorm1d bn;
  int calls = 0;
  int fail_after = -1;
};
TORCH_MODULE(Failing);
}  // namespace

TEST(Retry, BackwardAfterAFailedBackwardIsExact) {
  auto x = torch::randn({6, 4}, torch::kDouble);
  for (int64_t k : {0, 1, 2}) {
    for (bool keep : {false, true}) {
      if (keep && k == 0) continue;
      torch::manual_seed(4);
      anode::ODEBlock<FailingImpl> ref(Failing(), opts(Method::RK2, 6, Gradient::Backprop));
      torch::manual_seed(4);
      anode::ODEBlock<FailingImpl> blk(
          Failing(), opts(Method::RK2, 6).checkpoints(k).keep_forward_checkpoints(keep));
      ref->to(torch::kDouble);
      blk->to(torch::kDouble);
      torch::manual_seed(9);
      auto want = grads_of(ref->forward(x).pow(2).sum(), ref->parameters());
      torch::manual_seed(9);
      auto loss = blk->forward(x).pow(2).sum();
      const auto rng = cpu_rng_state();
      std::vector<torch::Tensor> buffers;
      for (const auto& b : blk->buffers()) buffers.push_back(b.clone());
      auto& f = *blk->func();
      f.fail_after = f.calls + 5;  // fails part-way through the rebuild or the reversal
      const auto params = blk->parameters();
      EXPECT_TRUE(throws_mentioning(
          [&] { torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true); },
          {"failed on purpose"}))
          << "k " << k << " keep " << keep;
      EXPECT_TRUE(torch::equal(cpu_rng_state(), rng));
      for (std::size_t i = 0; i < buffers.size(); ++i)
        EXPECT_TRUE(torch::equal(blk->buffers()[i], buffers[i]));
      f.fail_after = -1;
      auto got = grads_of(loss, params);
      EXPECT_LT(max_rel_err(got, want), 1e-12) << "k " << k << " keep " << keep;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 8. Smaller contracts.

// The Adjoint of an RHS whose output has no graph (a constant field): the VJP is zero.
TEST(AdjointEdges, RhsWithoutGraphHasZeroVjp) {
  auto x = torch::randn({2, 3}, torch::kDouble).requires_grad_(true);
  auto f = [](const torch::Tensor& z) { return torch::ones_like(z.detach()); };
  auto y = anode::odeint(f, x, opts(Method::RK2, 3, Gradient::Adjoint));
  y.sum().backward();
  // z(t1) = z0 + t1: dL/dz0 is the incoming gradient.
  EXPECT_TRUE(torch::allclose(x.grad(), torch::ones_like(x)));
  // A field independent of z but not of a parameter.
  auto b = torch::randn({3}, torch::kDouble).requires_grad_(true);
  auto x2 = torch::randn({2, 3}, torch::kDouble).requires_grad_(true);
  auto fb = [b](const torch::Tensor& z) { return (b * 1).expand_as(z).clone(); };
  auto y2 = anode::odeint(fb, x2, opts(Method::Euler, 2, Gradient::Adjoint), {b});
  y2.sum().backward();
  EXPECT_TRUE(torch::allclose(b.grad(), torch::full({3}, 2.0, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(x2.grad(), torch::ones_like(x2)));
}

TEST(PeakScopeContract, NestedScopeKeepsTheOuterPeak) {
  anode::memory::install_cpu_meter();
  anode::memory::PeakScope outer;
  {
    auto big = torch::empty({1 << 18});  // 1 MiB, freed before the inner scope opens
  }
  {
    anode::memory::PeakScope inner;
    auto small = torch::empty({1 << 10});
    EXPECT_GE(inner.peak_bytes(), 4 << 10);
    EXPECT_LT(inner.peak_bytes(), 1 << 20);
  }
  EXPECT_GE(outer.peak_bytes(), 1 << 20);
}

#if !defined(ANODE_WITH_CUDA)
TEST(PeakScopeContract, CudaScopeInACpuBuildIsAnError) {
  EXPECT_TRUE(throws_mentioning([] { anode::memory::PeakScope s(torch::Device(torch::kCUDA, 0)); },
                                {"ANODE_WITH_CUDA"}));
}
#endif

TEST(OptionsContract, AnodeOnlyOptionsAreRejectedWithOtherModes) {
  for (auto g : {Gradient::Backprop, Gradient::Adjoint}) {
    const std::string mode = anode::to_string(g);
    EXPECT_TRUE(throws_mentioning([&] { opts(Method::RK2, 4, g).checkpoints(2).validate(); },
                                  {"checkpoints(2)", "Gradient::Anode only", mode}));
    EXPECT_TRUE(throws_mentioning([&] { opts(Method::RK2, 4, g).memory_budget(100).validate(); },
                                  {"memory_budget(100)", "Gradient::Anode only", mode}));
    EXPECT_TRUE(throws_mentioning(
        [&] { opts(Method::RK2, 4, g).keep_forward_checkpoints(true).validate(); },
        {"keep_forward_checkpoints(true)", "Gradient::Anode only"}));
  }
  EXPECT_TRUE(
      throws_mentioning([&] { opts(Method::RK2, 4).keep_forward_checkpoints(true).validate(); },
                        {"keep_forward_checkpoints(true)", "checkpoints is 0"}));
  EXPECT_NO_THROW(opts(Method::RK2, 4).checkpoints(2).keep_forward_checkpoints(true).validate());
  EXPECT_TRUE(throws_mentioning(
      [&] { opts(Method::RK2, 4).generators({at::Generator()}).validate(); }, {"generators[0]"}));
}
