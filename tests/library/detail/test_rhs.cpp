// The right-hand side as users write it: every kind of module (Sequential, AnyModule, a
// ModuleHolder, a shared_ptr, a module with both forward overloads) and every kind of callable
// solves, and differentiates exactly, in ODEBlock and in odeint.

#include <anode/anode.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "support/testing.hpp"

namespace test_rhs {

using anode::Gradient;
using anode::Method;
using namespace anode_test;

anode::ODEBlockOptions rk4(Gradient g = Gradient::Anode) {
  return anode::ODEBlockOptions().method(Method::RK4).steps(3).gradient(g);
}

torch::nn::Sequential tanh_mlp(int64_t dim, int64_t hidden) {
  torch::nn::Sequential seq(torch::nn::Linear(dim, hidden), torch::nn::Tanh(),
                            torch::nn::Linear(hidden, dim));
  seq->to(torch::kDouble);
  return seq;
}

/// The same field written out by hand: z' = W2 tanh(W1 z + b1) + b2.
torch::Tensor by_hand(torch::nn::Sequential& seq, const torch::Tensor& z) {
  const auto& l1 = seq[0]->as<torch::nn::Linear>();
  const auto& l2 = seq[2]->as<torch::nn::Linear>();
  return torch::nn::functional::linear(
      torch::tanh(torch::nn::functional::linear(z, l1->weight, l1->bias)), l2->weight, l2->bias);
}

/// z' = W2 tanh(W1 z): a module with a plain forward(x), for AnyModule (which cannot hold a
/// Sequential, whose forward is a template).
struct TanhMLPImpl : torch::nn::Cloneable<TanhMLPImpl> {
  TanhMLPImpl(int64_t dim, int64_t hidden) : dim(dim), hidden(hidden) { reset(); }
  void reset() override {
    l1 = register_module("l1", torch::nn::Linear(dim, hidden));
    l2 = register_module("l2", torch::nn::Linear(hidden, dim));
    to(torch::kDouble);
  }
  torch::Tensor forward(torch::Tensor x) { return l2(torch::tanh(l1(x))); }
  int64_t dim, hidden;
  torch::nn::Linear l1{nullptr}, l2{nullptr};
};
TORCH_MODULE(TanhMLP);

/// A module with both forms: dz/dt = t * z with the time, -z without.
struct BothFormsImpl : torch::nn::Module {
  torch::Tensor forward(torch::Tensor x) { return -x; }
  torch::Tensor forward(double t, torch::Tensor x) { return t * x; }
};
TORCH_MODULE(BothForms);

/// A module taking the time only: dz/dt = cos(t) * W z.
struct TimeOnlyImpl : torch::nn::Module {
  TimeOnlyImpl() : w(register_parameter("w", torch::randn({3, 3}, torch::kDouble) * 0.3)) {}
  torch::Tensor forward(double t, torch::Tensor x) { return std::cos(t) * torch::mm(x, w); }
  torch::Tensor w;
};
TORCH_MODULE(TimeOnly);

/// Gradients of a fixed weighting of y with respect to x and `params`.
std::vector<torch::Tensor> gradients(const torch::Tensor& y, const torch::Tensor& x,
                                     std::vector<torch::Tensor> params) {
  params.insert(params.begin(), x);
  const auto w = torch::linspace(-1.0, 1.0, y.numel(), torch::kDouble).view(y.sizes());
  return anode_test::grads_of((y * w).sum(), params);
}

// torch::nn::Sequential, the commonest right-hand side of neural-ODE code: its variadic forward
// must be called with the state alone (it passed (t, x) to its first Linear before).
TEST(ModuleRHS, SequentialInODEBlockMatchesTheHandWrittenField) {
  torch::manual_seed(0);
  auto seq = tanh_mlp(3, 8);
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_();
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    anode::ODEBlock<torch::nn::SequentialImpl> block(seq, rk4(g));
    auto y = block->forward(x);
    auto want = anode::odeint([&](const torch::Tensor& z) { return by_hand(seq, z); }, x,
                              rk4(Gradient::Backprop));
    EXPECT_TRUE(torch::allclose(y, want, 1e-13, 1e-13)) << g;
    auto got_g = gradients(y, x, seq->parameters());
    auto want_g = gradients(want, x, seq->parameters());
    EXPECT_LT(max_rel_err(got_g, want_g), g == Gradient::Adjoint ? 1e-4 : 1e-12) << g;
  }
}

TEST(ModuleRHS, SequentialInOdeintSingleOutputAndTrajectory) {
  torch::manual_seed(1);
  auto seq = tanh_mlp(2, 6);
  auto x = torch::randn({5, 2}, torch::kDouble).requires_grad_();
  auto t = torch::linspace(0.0, 1.0, 4, torch::kDouble);
  auto ref = anode::odeint(seq, x, rk4(Gradient::Backprop));
  auto ref_traj = anode::odeint(seq, x, t, rk4(Gradient::Backprop));
  const auto want = gradients(ref, x, seq->parameters());
  const auto want_traj = gradients(ref_traj, x, seq->parameters());
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    const double tol = g == Gradient::Adjoint ? 1e-4 : 1e-12;
    auto y = anode::odeint(seq, x, rk4(g));                    // the holder
    auto y_ptr = anode::odeint(seq.ptr(), x, rk4(g));          // its shared_ptr
    auto traj = anode::odeint(seq, x, t, rk4(g));              // a trajectory
    EXPECT_TRUE(torch::equal(y.detach(), ref.detach())) << g;  // the forward is the same solve
    EXPECT_TRUE(torch::equal(y_ptr.detach(), ref.detach())) << g;
    EXPECT_EQ(traj.sizes(), (std::vector<int64_t>{4, 5, 2}));
    EXPECT_LT(max_rel_err(gradients(y, x, seq->parameters()), want), tol) << g;
    EXPECT_LT(max_rel_err(gradients(traj, x, seq->parameters()), want_traj), tol) << g;
  }
}

// The exactness check, the library's own tool, accepts a Sequential too.
TEST(ModuleRHS, SequentialPassesCheckGradients) {
  torch::manual_seed(2);
  auto seq = tanh_mlp(3, 5);
  const auto x = torch::randn({3, 3}, torch::kDouble);
  auto report = anode::check_gradients(seq, x, rk4(), /*finite_differences=*/true);
  EXPECT_LT(report.max_rel_error_backprop, 1e-12) << report;
  EXPECT_LT(report.max_rel_error_fd, 1e-6) << report;
  // The block form checks the block's own options and right-hand side.
  anode::ODEBlock<torch::nn::SequentialImpl> block(seq, rk4().checkpoints(1));
  EXPECT_LT(anode::check_gradients(block, x).max_rel_error_backprop, 1e-12);
  anode::ODEBlock<torch::nn::AnyModule> any_block(torch::nn::AnyModule(TanhMLP(3, 5)), rk4());
  EXPECT_LT(anode::check_gradients(any_block, x).max_rel_error_backprop, 1e-12);
}

// AnyModule, the type-erased module: as an ODEBlock (its module registered, so its parameters
// are the block's) and in odeint.
TEST(ModuleRHS, AnyModuleInODEBlockAndOdeint) {
  torch::manual_seed(3);
  TanhMLP seq(3, 4);
  torch::nn::AnyModule any(seq);
  auto x = torch::randn({2, 3}, torch::kDouble).requires_grad_();
  anode::ODEBlock<torch::nn::AnyModule> block(any, rk4());
  EXPECT_EQ(block->parameters().size(), seq->parameters().size());
  EXPECT_EQ(block->named_parameters().find("func.l1.weight")->data_ptr(),
            seq->l1->weight.data_ptr());
  auto ref = anode::odeint(seq, x, rk4(Gradient::Backprop));
  auto y = block->forward(x);
  auto y2 = anode::odeint(any, x, rk4());
  EXPECT_TRUE(torch::equal(y.detach(), ref.detach()));
  EXPECT_TRUE(torch::equal(y2.detach(), ref.detach()));
  const auto want = gradients(ref, x, seq->parameters());
  EXPECT_LT(max_rel_err(gradients(y, x, seq->parameters()), want), 1e-12);
  EXPECT_LT(max_rel_err(gradients(y2, x, seq->parameters()), want), 1e-12);
  // clone() deep-copies the held module.
  auto copy = std::dynamic_pointer_cast<anode::ODEBlockImpl<torch::nn::AnyModule>>(block->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_NE(copy->parameters()[0].data_ptr(), block->parameters()[0].data_ptr());
  EXPECT_TRUE(torch::equal(copy->forward(x), y));
  // An empty AnyModule is refused with a message, not a crash.
  EXPECT_TRUE(throws_mentioning(
      [] { anode::ODEBlock<torch::nn::AnyModule> b(torch::nn::AnyModule{}, rk4()); }, {"empty"}));
  EXPECT_TRUE(
      throws_mentioning([&] { anode::odeint(torch::nn::AnyModule{}, x, rk4()); }, {"empty"}));
}

// An empty Sequential says so (LibTorch's own message), rather than returning anything.
TEST(ModuleRHS, EmptySequentialIsAnError) {
  torch::nn::Sequential empty;
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::odeint(empty, torch::randn({2, 2}), rk4());
      },
      {"empty Sequential"}));
}

// A module with both overloads is called with the time (the more specific form): dz/dt = t z
// from t0 = 0 to t1 = 1 is z e^{1/2}, not the z e^{-1} of forward(x).
TEST(ModuleRHS, BothOverloadsTheTimeFormWins) {
  BothForms both;
  auto x = torch::ones({1, 2}, torch::kDouble);
  auto o = anode::ODEBlockOptions().method(Method::RK4).steps(50);
  auto y = anode::odeint(both, x, o);
  EXPECT_NEAR(y[0][0].item<double>(), std::exp(0.5), 1e-8);
  anode::ODEBlock<BothFormsImpl> block(both, o);
  EXPECT_TRUE(torch::equal(block->forward(x), y));
}

// A module taking only (t, x), through the holder and the shared_ptr, in every gradient mode.
TEST(ModuleRHS, TimeDependentModuleThroughHolderAndSharedPtr) {
  torch::manual_seed(4);
  TimeOnly f;
  auto x = torch::randn({3, 3}, torch::kDouble).requires_grad_();
  auto ref = anode::odeint(f, x, rk4(Gradient::Backprop));
  const auto want = gradients(ref, x, f->parameters());
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    anode::ODEBlock<TimeOnlyImpl> block(f.ptr(), rk4(g));
    auto y = block->forward(x);
    EXPECT_TRUE(torch::equal(y.detach(), ref.detach())) << g;
    EXPECT_LT(max_rel_err(gradients(y, x, f->parameters()), want),
              g == Gradient::Adjoint ? 1e-4 : 1e-12)
        << g;
  }
}

// Callables of both forms: a lambda of (t, x), a std::function of (x).
TEST(CallableRHS, LambdaAndStdFunction) {
  auto x = torch::ones({1, 1}, torch::kDouble);
  auto o = anode::ODEBlockOptions().method(Method::RK4).steps(40);
  auto y = anode::odeint([](double t, const torch::Tensor& z) { return t * z; }, x, o);
  EXPECT_NEAR(y.item<double>(), std::exp(0.5), 1e-8);
  std::function<torch::Tensor(const torch::Tensor&)> decay = [](const torch::Tensor& z) {
    return -z;
  };
  EXPECT_NEAR(anode::odeint(decay, x, o).item<double>(), std::exp(-1.0), 1e-8);
}

// A model's ODE blocks, of different right-hand-side types, found and configured through their
// common base without naming the types.
TEST(ODEBlockBase, OdeBlocksFindsAndConfiguresEveryBlock) {
  torch::manual_seed(5);
  torch::nn::Sequential model(
      torch::nn::Linear(3, 3), anode::ODEBlock<torch::nn::SequentialImpl>(tanh_mlp(3, 4), rk4()),
      anode::ODEBlock<TimeOnlyImpl>(TimeOnly(), rk4()),
      anode::ODEBlock<torch::nn::LinearImpl>(torch::nn::Linear(3, 3), rk4()));
  model->to(torch::kDouble);
  auto blocks = anode::ode_blocks(model);
  ASSERT_EQ(blocks.size(), 3u);
  for (auto& b : blocks) b->options.steps(5).gradient(Gradient::Backprop);
  auto x = torch::randn({2, 3}, torch::kDouble);
  model->forward(x);
  for (const auto& b : blocks) {
    EXPECT_EQ(b->options.steps(), 5);
    EXPECT_EQ(b->stats().accepted_steps, 5);  // the new options were used
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_EQ(&blocks[i]->module(), model->ptr(i + 1).get());  // in registration order
  }
  EXPECT_TRUE(anode::ode_blocks(torch::nn::Linear(2, 2)).empty());
}

// An RHS that writes into its input is an error in every mode.

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

}  // namespace test_rhs
