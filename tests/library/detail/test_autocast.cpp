// Mixed precision: a right-hand side under autocast (bf16 on the CPU) may return a lower precision
// than the state, every recompute runs under the forward's autocast state (backward runs outside
// the caller's autocast scope), and Anode gives Backprop's gradient.

#include "support/testing.hpp"

namespace test_autocast {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

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

// Mixed precision: a bf16 derivative of an fp32 state is accepted under autocast, and every
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

}  // namespace test_autocast
