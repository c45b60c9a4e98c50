// Gradient::Adjoint, the reverse-time (optimize-then-discretize) baseline: it converges to the
// exact gradient as N_t grows on a smooth RHS, and on a ReLU conv RHS its error is orders of
// magnitude above Anode's round-off.

#include "support/testing.hpp"

namespace test_adjoint {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

template <typename Impl, typename Holder>
std::vector<torch::Tensor> block_grads(const Holder& rhs, const torch::Tensor& x, Method m,
                                       int64_t steps, Gradient g) {
  anode::ODEBlock<Impl> block(rhs, anode::ODEBlockOptions().method(m).steps(steps).gradient(g));
  auto xin = x.clone().requires_grad_(true);
  auto loss = block->forward(xin).pow(2).sum();
  std::vector<torch::Tensor> in{xin};
  for (auto& p : block->parameters()) in.push_back(p);
  return grads_of(loss, in);
}

TEST_F(Seeded, AdjointConvergesOnSmoothRHS) {
  MLP rhs(4, 16, "tanh");
  rhs->to(torch::kDouble);
  auto x = torch::randn({8, 4}, torch::kDouble);
  for (auto method : all_methods()) {
    std::vector<double> errors;
    for (int64_t steps : {2, 8, 32}) {
      auto exact = block_grads<MLPImpl>(rhs, x, method, steps, Gradient::Backprop);
      auto adjoint = block_grads<MLPImpl>(rhs, x, method, steps, Gradient::Adjoint);
      errors.push_back(max_rel_err(adjoint, exact));
    }
    SCOPED_TRACE(anode::to_string(method));
    std::cout << anode::to_string(method) << " adjoint rel. error at N_t 2/8/32: " << errors[0]
              << " " << errors[1] << " " << errors[2] << "\n";
    EXPECT_GT(errors[0], 1e-12);          // not the discrete gradient...
    EXPECT_LT(errors[1], errors[0] / 3);  // ...but it converges to it
    EXPECT_LT(errors[2], errors[1] / 3);
    EXPECT_LT(errors[2], 5e-2);
  }
}

TEST_F(Seeded, AdjointIsFarOffOnReluConvWhereAnodeIsExact) {
  ConvRHS rhs(4, 0.0, /*batchnorm=*/false);
  rhs->to(torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : rhs->parameters()) p.mul_(3.0);  // a stiff-ish network, as trained nets are
  }
  auto x = torch::randn({2, 4, 8, 8}, torch::kDouble);
  auto exact = block_grads<ConvRHSImpl>(rhs, x, Method::RK2, 4, Gradient::Backprop);
  auto anode_g = block_grads<ConvRHSImpl>(rhs, x, Method::RK2, 4, Gradient::Anode);
  auto adjoint = block_grads<ConvRHSImpl>(rhs, x, Method::RK2, 4, Gradient::Adjoint);
  const double anode_err = max_rel_err(anode_g, exact);
  const double adjoint_err = max_rel_err(adjoint, exact);
  EXPECT_LT(anode_err, 1e-12);
  EXPECT_GT(adjoint_err, 1e-3);
  EXPECT_GT(adjoint_err, 1e6 * std::max(anode_err, 1e-300));
}

// The reverse solve re-evaluates a BatchNorm RHS: its statistics must still end as Backprop's.
TEST_F(Seeded, AdjointLeavesBatchNormStatisticsAlone) {
  std::vector<std::vector<torch::Tensor>> buffers;
  for (auto g : {Gradient::Backprop, Gradient::Adjoint}) {
    torch::manual_seed(2);
    anode::ODEBlock<ConvRHSImpl> block(ConvRHS(3), anode::ODEBlockOptions().steps(2).gradient(g));
    auto x = torch::randn({2, 3, 5, 5}).requires_grad_(true);
    block->forward(x).sum().backward();
    buffers.push_back(block->buffers());
  }
  ASSERT_EQ(buffers[0].size(), buffers[1].size());
  for (std::size_t i = 0; i < buffers[0].size(); ++i) {
    EXPECT_TRUE(torch::allclose(buffers[0][i], buffers[1][i])) << i;
  }
}

// A parameter the RHS never uses keeps an undefined gradient in every mode, as with Backprop.
struct UnusedParamImpl : torch::nn::Module {
  UnusedParamImpl()
      : fc(register_module("fc", torch::nn::Linear(3, 3))),
        unused(register_parameter("unused", torch::ones({2}))) {}
  torch::Tensor forward(torch::Tensor x) { return torch::tanh(fc(x)); }
  torch::nn::Linear fc;
  torch::Tensor unused;
};
TORCH_MODULE(UnusedParam);

TEST_F(Seeded, UnusedParameterGradientStaysUndefined) {
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    anode::ODEBlock<UnusedParamImpl> block(UnusedParam(),
                                           anode::ODEBlockOptions().steps(3).gradient(g));
    block->forward(torch::randn({2, 3})).sum().backward();
    EXPECT_FALSE(block->func()->unused.grad().defined()) << anode::to_string(g);
    EXPECT_TRUE(block->func()->fc->weight.grad().defined()) << anode::to_string(g);
  }
}

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

}  // namespace test_adjoint
