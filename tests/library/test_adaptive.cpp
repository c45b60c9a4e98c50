// adaptive.hpp: the embedded-pair solvers (Bosh3, Dopri5, Tsit5) choose their steps so that the
// error follows the tolerance, count accepted and rejected trials exactly, differentiate exactly
// through the accepted steps (Anode against Backprop), and refuse bad tolerances and limits.

#include "support/testing.hpp"
#include "support/trajectories.hpp"

namespace test_adaptive {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

// The error of an adaptive solve follows the tolerance.
TEST(Adaptive, ErrorIsProportionalToTheTolerance) {
  auto A = rotation_matrix();
  auto f = [A](const torch::Tensor& z) { return z.matmul(A.t()); };
  auto z0 = torch::tensor({{1.0, 0.0}}, kD);
  auto t = times({0.0, 5.0});
  for (auto m : {Method::Bosh3, Method::Dopri5, Method::Tsit5}) {
    std::vector<double> errors;
    for (double tol : {1e-4, 1e-6, 1e-8}) {
      auto out = anode::odeint(f, z0, t, solver(m).rtol(tol).atol(tol));
      const double err = (out[1] - rotation_exact(z0, 5.0)).abs().max().item<double>();
      errors.push_back(err);
      EXPECT_LT(err, 100 * tol) << anode::to_string(m) << " tol " << tol;
    }
    // Two orders of magnitude of tolerance buy at least one of error, each time.
    EXPECT_LT(errors[1], errors[0] / 10) << anode::to_string(m);
    EXPECT_LT(errors[2], errors[1] / 10) << anode::to_string(m);
  }
}

// An ODEBlock with an adaptive method: z(t1), exact against Backprop.
TEST(Adaptive, ODEBlockWithDopri5) {
  torch::manual_seed(8);
  auto x = torch::randn({5, 3}, kD);
  torch::manual_seed(9);
  anode::ODEBlock<MLPImpl> a(MLP(3, 8), solver(Method::Dopri5).rtol(1e-6).atol(1e-8));
  torch::manual_seed(9);
  anode::ODEBlock<MLPImpl> b(MLP(3, 8),
                             solver(Method::Dopri5, Gradient::Backprop).rtol(1e-6).atol(1e-8));
  a->to(kD);
  b->to(kD);
  auto ga = grads_of(a->forward(x).pow(2).sum(), a->parameters());
  auto gb = grads_of(b->forward(x).pow(2).sum(), b->parameters());
  EXPECT_LT(max_rel_err(ga, gb), 1e-12);
  const auto s = a->stats();
  EXPECT_GT(s.accepted_steps, 1);
  EXPECT_GT(s.backward_evaluations, 0);
}

TEST(Stats, AdaptiveCounts) {
  auto f1 = field(10);
  auto z0 = torch::randn({2, 2}, kD);
  auto t = times({0.0, 0.5, 3.0});
  for (auto g : {Gradient::Backprop, Gradient::Anode}) {
    auto stats = std::make_shared<anode::SolveStats>();
    auto out = anode::odeint(f1, z0, t, solver(Method::Dopri5, g).rtol(1e-8).atol(1e-10), stats);
    const auto trials = stats->accepted_steps + stats->rejected_steps;
    EXPECT_GE(stats->accepted_steps, 2);
    // FSAL: f(t0, z0), one more for the starting-step heuristic, 6 per trial step.
    EXPECT_EQ(stats->forward_evaluations, 2 + 6 * trials) << anode::to_string(g);
    trajectory_loss(out).backward();
    // Anode recomputes the accepted steps of each interval: 7 for its first step, 6 after.
    if (g == Gradient::Anode) {
      EXPECT_EQ(stats->backward_evaluations, 2 * 1 + 6 * stats->accepted_steps);
    } else {
      EXPECT_EQ(stats->backward_evaluations, 0);
    }
  }
  // A problem that makes the controller reject: a sharp pulse in time.
  auto stats = std::make_shared<anode::SolveStats>();
  auto pulse = [](double t, const torch::Tensor& z) {
    return -z + 50.0 * std::exp(-200.0 * (t - 1.0) * (t - 1.0));
  };
  anode::odeint(pulse, torch::zeros({1}, kD), times({0.0, 2.0}),
                solver(Method::Dopri5, Gradient::Backprop).rtol(1e-6).atol(1e-8).first_step(0.5),
                {}, stats);
  EXPECT_GT(stats->rejected_steps, 0);
  EXPECT_EQ(stats->forward_evaluations, 1 + 6 * (stats->accepted_steps + stats->rejected_steps));
}

TEST(TrajectoryErrors, BadTolerancesAndLimits) {
  auto f = [](const torch::Tensor& z) { return -z; };
  auto z0 = torch::ones({2}, kD);
  auto t = times({0.0, 1.0});
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(f, z0, t, solver(Method::Dopri5).rtol(0)); },
                                {"rtol", "> 0", "got 0"}));
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(f, z0, t, solver(Method::Dopri5).atol(-1)); },
                                {"atol", "got -1"}));
  EXPECT_TRUE(
      throws_mentioning([&] { anode::odeint(f, z0, t, solver(Method::RK4).step_size(-0.1)); },
                        {"step_size", "got -0.1"}));
  EXPECT_TRUE(
      throws_mentioning([&] { anode::odeint(f, z0, t, solver(Method::Dopri5).max_steps(0)); },
                        {"max_steps", "got 0"}));
  // max_steps exceeded: says t reached and the steps taken.
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::odeint(f, z0, times({0.0, 100.0}),
                      solver(Method::Dopri5).rtol(1e-10).atol(1e-12).max_steps(20));
      },
      {"max_steps (20) exceeded at t = ", "accepted", "rejected"}));
  // A solution that blows up at t = 1: the step size underflows near it.
  auto blowup = [](const torch::Tensor& z) { return z * z; };
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::odeint(blowup, torch::ones({1}, kD), times({0.0, 2.0}), solver(Method::Dopri5));
      },
      {"step size underflowed at t = ", "(h = "}));
  // A NaN in the right-hand side: the error estimate is not finite, naming t.
  auto nan_after = [](double t, const torch::Tensor& z) {
    return t > 0.5 ? z * std::numeric_limits<double>::quiet_NaN() : -z;
  };
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::odeint(nan_after, torch::ones({1}, kD), times({0.0, 1.0}), solver(Method::Dopri5));
      },
      {"error estimate is not finite", "at t = "}));
}

}  // namespace test_adaptive
