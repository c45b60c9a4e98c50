// Gradient::Anode's recompute, in the conditions training loops meet: gradients autograd hands in
// (never written into), random numbers (replayed when they can be, an error when they were not,
// never silent unless verify_recompute is turned off), and a backward that throws and is retried.

#include "support/testing.hpp"

#include <iostream>
#include <thread>

namespace test_checkpoint {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

// The binomial backward never writes into a gradient autograd handed it: with a Linear RHS on
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

// Random numbers: replayed when they can be, an error when they were not, never silent.

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

// Another thread draws as many numbers during the forward pass as during the recompute, at other
// positions: each generator ends both passes in the same state. The whole-block recompute checks
// the generators at its end only, so there only verify_recompute's comparison of the outputs can
// tell: with it (the default) backward raises and names the cause, without it the gradient is
// silently another computation's (the contract says so, and this pins that statement: the gap is
// far above round-off). Binomial checkpointing checks the generators after every reversed step,
// which catches the interleaving whether or not verify_recompute is on.
TEST_P(RngReplay, SameCountAtOtherPositionsIsCaughtOnlyByVerifyRecompute) {
  const int64_t k = GetParam();
  auto x = torch::randn({5, 6}, torch::kDouble);
  // RK2 with 4 steps: evaluations 1-8 are the forward pass's, the recompute's come after.
  const auto hook = [](int call) {
    if (call == 3 || call == 10) draw_in_other_thread();
  };
  auto ref = noisy_block(opts(Method::RK2, 4, Gradient::Backprop));
  ref->func()->hook = [](int call) {
    if (call == 3) draw_in_other_thread();
  };
  torch::manual_seed(5);
  auto want = noisy_grads(ref, ref->forward(x));  // the gradient of the forward pass that ran
  for (bool verify : {true, false}) {
    auto blk = noisy_block(opts(Method::RK2, 4).checkpoints(k).verify_recompute(verify));
    blk->func()->hook = hook;
    torch::manual_seed(5);
    auto y = blk->forward(x);
    if (k > 0) {
      EXPECT_TRUE(throws_mentioning([&] { noisy_grads(blk, y); },
                                    {"did not draw the same random numbers", "(step "}))
          << "verify " << verify;
    } else if (verify) {
      EXPECT_TRUE(throws_mentioning([&] { noisy_grads(blk, y); },
                                    {"different output", "Another thread", "same count"}));
    } else {
      const double gap = max_rel_err(noisy_grads(blk, y), want);
      std::cout << "whole-block recompute, verify_recompute(false): relative gradient error " << gap
                << "\n";
      EXPECT_GT(gap, 1e-3);
    }
  }
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

// A backward that throws can be retried once the cause is fixed.

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

}  // namespace test_checkpoint
