// check_gradients, the library's exactness check: its Backprop reference runs the same solve
// whatever Anode-only options are set, and it finds a wrong gradient when there is one.

#include <anode/anode.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "support/testing.hpp"

using anode::Gradient;
using anode::Method;

namespace {

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

}  // namespace

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
