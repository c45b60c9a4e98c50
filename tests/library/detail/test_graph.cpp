// The graph checks of a closure right-hand side: a tensor requiring grad that the callable reads
// but that is not listed in `params` is an error in Anode and Adjoint (it would get no gradient);
// listed tensors, non-leaf parameters and by-value captures get Backprop's gradients.

#include "support/testing.hpp"

namespace test_graph {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

// Closures: a tensor requiring grad that the callable reads but that is not in `params` is an
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

}  // namespace test_graph
