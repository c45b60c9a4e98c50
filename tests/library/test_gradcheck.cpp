// check_gradients, the library's exactness check: its Backprop reference runs the same solve
// whatever Anode-only options are set, and it finds a wrong gradient when there is one.

#include <anode/anode.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "support/testing.hpp"
#include "support/trajectories.hpp"

namespace test_gradcheck {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

/// f(z) = W dropout(tanh(z)), the dropout mask drawn from the module's own generator (named in
/// the options, so that Anode replays it).
struct DropoutMLPImpl : torch::nn::Module {
  explicit DropoutMLPImpl(at::Generator g)
      : fc(register_module("fc", torch::nn::Linear(4, 4))), gen(std::move(g)) {
    fc->to(torch::kDouble);
  }
  torch::Tensor forward(torch::Tensor x) {
    auto h = torch::tanh(x);
    return fc(h * torch::empty_like(h).bernoulli_(0.8, gen) / 0.8);
  }
  torch::nn::Linear fc;
  at::Generator gen;
};
TORCH_MODULE(DropoutMLP);

// Every option only Anode accepts, set together (in the two sets that may go together), with an
// RHS that draws random numbers: the check runs and finds Anode exact, also against finite
// differences.
TEST(CheckGradients, EveryAnodeOnlyOptionTogether) {
  torch::manual_seed(0);
  auto gen = at::detail::createCPUGenerator(3);
  DropoutMLP f(gen);
  const auto x = torch::randn({3, 4}, torch::kDouble);
  const auto whole = anode::ODEBlockOptions()
                         .method(Method::RK2)
                         .steps(4)
                         .keep_latest_graph(true)
                         .generators({gen})
                         .verify_recompute(true)
                         .preserve_rng_state(true);
  const auto binomial = anode::ODEBlockOptions()
                            .method(Method::RK4)
                            .steps(6)
                            .checkpoints(2)
                            .keep_forward_checkpoints(true)
                            .generators({gen});
  for (const auto& o : {whole, binomial}) {
    const auto report = anode::check_gradients(f, x, o, /*finite_differences=*/true);
    EXPECT_LT(report.max_rel_error_backprop, 1e-12) << o << ": " << report;
    EXPECT_LT(report.max_rel_error_fd, 1e-6) << o << ": " << report;
  }
}

// The check can fail: the adjoint's gradient of a coarse solve is not the discrete one, and the
// report says how far it is and where.
TEST(CheckGradients, ReportsTheAdjointsGap) {
  torch::manual_seed(1);
  torch::nn::Linear f(4, 4);
  f->to(torch::kDouble);
  const auto report = anode::check_gradients(
      f, torch::randn({3, 4}, torch::kDouble),
      anode::ODEBlockOptions().method(Method::Euler).steps(2).gradient(Gradient::Adjoint));
  EXPECT_GT(report.max_rel_error_backprop, 1e-4) << report;
  EXPECT_FALSE(report.worst_backprop.empty());
  EXPECT_TRUE(std::isnan(report.max_rel_error_fd));  // not asked for
}

TEST(GradientCheck, ReportsExactnessAndFindsProblems) {
  torch::manual_seed(12);
  auto f = field(13);
  auto x = torch::randn({3, 2}, kD);
  const auto before = f->parameters()[0].clone();
  auto ok = anode::check_gradients(f, x, solver(Method::RK4).steps(6).checkpoints(2), true);
  EXPECT_LT(ok.max_rel_error_backprop, 1e-12) << ok;
  EXPECT_LT(ok.max_rel_error_fd, 1e-6) << ok;
  EXPECT_TRUE(torch::equal(f->parameters()[0], before));  // the module is left as it was
  // The Adjoint's gradient is not the discrete one: the check says by how much.
  auto adj = anode::check_gradients(f, x, solver(Method::RK4, Gradient::Adjoint).steps(2));
  EXPECT_GT(adj.max_rel_error_backprop, 1e-8) << adj;
  // A callable whose output changes between the forward pass and the recompute (a counter it
  // reads), with the recompute check off: the self-check shows the gradient is wrong.
  auto W = torch::randn({2, 2}, kD).requires_grad_(true);
  auto calls = std::make_shared<int>(0);
  auto drifting = [W, calls](const torch::Tensor& z) {
    ++*calls;
    return torch::tanh(z.matmul(W)) * (1.0 + 1e-3 * *calls);
  };
  auto bad = anode::check_gradients(drifting, x,
                                    solver(Method::RK2).steps(4).verify_recompute(false), {W});
  EXPECT_GT(bad.max_rel_error_backprop, 1e-6) << bad;
  // Finite differences need float64.
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::check_gradients(drifting, x.to(torch::kFloat), solver(Method::RK2), {W}, true);
      },
      {"float64"}));
}

}  // namespace test_gradcheck
