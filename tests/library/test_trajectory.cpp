// Trajectories (solve.hpp's solve_trajectory): odeint(f, z0, t) at many output times, fixed and
// adaptive methods, every gradient mode against Backprop through the same grid and against finite
// differences, statistics counted exactly, and bad output times. The adaptive solver itself is
// test_adaptive's.

#include "support/testing.hpp"
#include "support/trajectories.hpp"

#include <cmath>
#include <limits>
#include <utility>

namespace test_trajectory {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

// ---------------------------------------------------------------------------------------------
// The output: shape, out[0] == z0, the solution at every output time, both directions.

TEST(Trajectory, ShapeFirstEntryAndAccuracyFixedAndAdaptive) {
  auto A = rotation_matrix();
  auto f = [A](const torch::Tensor& z) { return z.matmul(A.t()); };
  auto z0 = torch::tensor({{1.0, 0.0}, {0.3, -0.5}}, kD);
  for (auto t : {times({0.0, 0.5, 1.7, 3.0}), times({3.0, 2.2, 0.1})}) {
    for (auto [m, tol] : {std::pair<Method, double>{Method::RK4, 1e-6},
                          {Method::Dopri5, 1e-7},
                          {Method::Tsit5, 1e-7},
                          {Method::Bosh3, 1e-6}}) {
      auto o = anode_test::with_accuracy(solver(m), 40, 1e-9, 1e-11);
      auto out = anode::odeint(f, z0, t, o);
      ASSERT_EQ(out.sizes(), (std::vector<int64_t>{t.size(0), 2, 2}));
      EXPECT_TRUE(torch::equal(out[0], z0));
      for (int64_t i = 1; i < t.size(0); ++i) {
        auto want = rotation_exact(z0, t[i].item<double>() - t[0].item<double>());
        EXPECT_LT((out[i] - want).abs().max().item<double>(), tol)
            << anode::to_string(m) << " t[" << i << "] = " << t[i].item<double>();
      }
    }
  }
}

// Every output time is a step boundary: a non-FSAL method evaluates f exactly at each of them
// (the first stage of the step that starts there), and fixed steps divide each interval.
TEST(Trajectory, OutputTimesAreHitExactly) {
  const std::vector<double> ts{0.0, 0.3, 0.7, 1.1, 2.0};
  for (bool adaptive : {false, true}) {
    std::vector<double> seen;
    auto f = [&seen](double t, const torch::Tensor& z) {
      seen.push_back(t);
      return -z * (1.0 + t);
    };
    auto o = adaptive ? anode::ODEBlockOptions().tableau(heun_euler()).rtol(1e-6).atol(1e-8)
                      : anode::ODEBlockOptions().method(Method::RK4).steps(3);
    anode::odeint(f, torch::ones({2}, kD), torch::tensor(ts, kD), o);
    for (std::size_t i = 0; i + 1 < ts.size(); ++i) {
      EXPECT_NE(std::find(seen.begin(), seen.end(), ts[i]), seen.end())
          << (adaptive ? "adaptive" : "fixed") << ": no evaluation at t = " << ts[i];
    }
  }
}

TEST(Trajectory, StepSizeGivesTheFewestEqualStepsNoLongerThanIt) {
  auto stats = std::make_shared<anode::SolveStats>();
  auto f = [](const torch::Tensor& z) { return -z; };
  // Intervals of 0.3 and 1.0 with h <= 0.25: 2 and 4 steps.
  anode::odeint(f, torch::ones({1}, kD), times({0.0, 0.3, 1.3}),
                solver(Method::Euler, Gradient::Backprop).step_size(0.25), {}, stats);
  EXPECT_EQ(stats->accepted_steps, 6);
  EXPECT_EQ(stats->forward_evaluations, 6);
  // A step size that divides an interval exactly is not rounded up to one more step.
  auto s2 = std::make_shared<anode::SolveStats>();
  anode::odeint(f, torch::ones({1}, kD), times({0.0, 0.3}),
                solver(Method::Euler, Gradient::Backprop).step_size(0.1), {}, s2);
  EXPECT_EQ(s2->accepted_steps, 3);
}

// A stats object reused across iterations (as a training loop does) holds the last solve's counts
// and, once it ran, that solve's backward: it is reset at the start of every solve.
TEST(Trajectory, ReusedStatsHoldTheLastSolveOnly) {
  auto stats = std::make_shared<anode::SolveStats>();
  auto w = torch::ones({1}, torch::TensorOptions(kD).requires_grad(true));
  auto f = [w](const torch::Tensor& z) { return -w * z; };
  for (int iteration = 0; iteration < 3; ++iteration) {
    auto out = anode::odeint(f, torch::ones({1}, kD), times({0.0, 0.5, 1.0}),
                             solver(Method::RK2, Gradient::Anode).steps(3), {w}, stats);
    EXPECT_EQ(stats->forward_evaluations, 2 * 2 * 3) << iteration;
    EXPECT_EQ(stats->backward_evaluations, 0) << iteration;
    out.sum().backward();
    EXPECT_EQ(stats->accepted_steps, 2 * 3) << iteration;
    EXPECT_EQ(stats->backward_evaluations, 2 * 2 * 3) << iteration;
  }
}

// ---------------------------------------------------------------------------------------------
// Gradients.

struct GradCase {
  Method method;
  int64_t checkpoints;
};
class TrajectoryGradients : public ::testing::TestWithParam<GradCase> {};

// Anode equals Backprop through the same grid (fixed: the same steps; adaptive: the same accepted
// steps, as step-size control is not differentiated), for a trajectory loss at many times.
TEST_P(TrajectoryGradients, AnodeEqualsBackprop) {
  const auto c = GetParam();
  torch::manual_seed(3);
  auto z0 = torch::randn({4, 2}, kD);
  auto t = times({0.0, 0.2, 0.5, 0.55, 1.0, 1.6});
  auto o = anode_test::with_accuracy(solver(c.method), 5, 1e-6, 1e-8);
  auto f1 = field(1), f2 = field(1);
  auto want = all_grads(f1, z0, t, anode::ODEBlockOptions(o).gradient(Gradient::Backprop));
  auto got = all_grads(f2, z0, t, anode::ODEBlockOptions(o).checkpoints(c.checkpoints));
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  // Backward direction too.
  auto tb = times({1.6, 1.0, 0.3});
  auto w2 = all_grads(f1, z0, tb, anode::ODEBlockOptions(o).gradient(Gradient::Backprop));
  auto g2 = all_grads(f2, z0, tb, anode::ODEBlockOptions(o).checkpoints(c.checkpoints));
  EXPECT_LT(max_rel_err(g2, w2), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(FixedAndAdaptive, TrajectoryGradients,
                         ::testing::Values(GradCase{Method::RK2, 0}, GradCase{Method::RK4, 2},
                                           GradCase{Method::Dopri5, 0}, GradCase{Method::Dopri5, 3},
                                           GradCase{Method::Tsit5, 0}, GradCase{Method::Bosh3, 2}),
                         [](const ::testing::TestParamInfo<GradCase>& i) {
                           return std::string(anode::to_string(i.param.method)) + "_k" +
                                  std::to_string(i.param.checkpoints);
                         });

// Against central finite differences in float64: exact for fixed steps (the gradient of the
// discrete solve), and within the tolerance for adaptive solves (whose grid moves with the
// perturbation) and for the Adjoint.
TEST(TrajectoryGradients, MatchFiniteDifferences) {
  torch::manual_seed(4);
  auto z0 = torch::randn({3, 2}, kD);
  auto t = times({0.0, 0.4, 1.0});
  struct Case {
    Method m;
    Gradient g;
    double tol;
  };
  for (const auto& c :
       {Case{Method::RK4, Gradient::Anode, 1e-7}, Case{Method::RK4, Gradient::Backprop, 1e-7},
        Case{Method::Dopri5, Gradient::Anode, 1e-5}, Case{Method::Dopri5, Gradient::Adjoint, 1e-5},
        Case{Method::RK4, Gradient::Adjoint, 1e-3}}) {
    auto f = field(5);
    auto o = anode_test::with_accuracy(solver(c.m, c.g), 8, 1e-11, 1e-13);
    auto g = all_grads(f, z0, t, o);
    // d loss / d fc2.bias[0] and d loss / d z0[1][0], by central differences.
    torch::NoGradGuard no_grad;
    auto fd = [&](torch::Tensor target, int64_t idx) {
      const double eps = 1e-6;
      auto flat = target.view(-1);
      const double orig = flat[idx].item<double>();
      flat[idx] = orig + eps;
      const double up = trajectory_loss(anode::odeint(f, z0, t, o)).item<double>();
      flat[idx] = orig - eps;
      const double down = trajectory_loss(anode::odeint(f, z0, t, o)).item<double>();
      flat[idx] = orig;
      return (up - down) / (2 * eps);
    };
    const auto params = f->parameters();  // fc1.weight, fc1.bias, fc2.weight, fc2.bias
    const double fd_bias = fd(params[3], 0);
    EXPECT_NEAR(g[3].view(-1)[0].item<double>(), fd_bias, c.tol * std::max(1.0, std::abs(fd_bias)))
        << anode::to_string(c.m) << " " << anode::to_string(c.g);
    const double fd_z = fd(z0, 2);
    EXPECT_NEAR(g[4].view(-1)[2].item<double>(), fd_z, c.tol * std::max(1.0, std::abs(fd_z)))
        << anode::to_string(c.m) << " " << anode::to_string(c.g);
  }
}

// The Adjoint on a trajectory applies the jumps at output times: it approaches Backprop's
// gradient as the steps shrink (it is the discretised continuous gradient, not the discrete one).
TEST(TrajectoryGradients, AdjointApproachesBackprop) {
  torch::manual_seed(6);
  auto z0 = torch::randn({3, 2}, kD);
  auto t = times({0.0, 0.3, 0.8, 1.2});
  auto f1 = field(7), f2 = field(7);
  double previous = 1.0;
  for (int64_t steps : {4, 16, 64}) {
    auto want = all_grads(f1, z0, t, solver(Method::RK4, Gradient::Backprop).steps(steps));
    auto got = all_grads(f2, z0, t, solver(Method::RK4, Gradient::Adjoint).steps(steps));
    const double err = max_rel_err(got, want);
    EXPECT_LT(err, previous);
    previous = err;
  }
  EXPECT_LT(previous, 1e-6);
  // Adaptive adjoint at tight tolerances: close to the adaptive Backprop gradient.
  auto want =
      all_grads(f1, z0, t, solver(Method::Dopri5, Gradient::Backprop).rtol(1e-10).atol(1e-12));
  auto got =
      all_grads(f2, z0, t, solver(Method::Dopri5, Gradient::Adjoint).rtol(1e-10).atol(1e-12));
  EXPECT_LT(max_rel_err(got, want), 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Statistics, counted exactly.

TEST(Stats, FixedStepCounts) {
  auto f1 = field(9);
  auto z0 = torch::randn({2, 2}, kD);
  auto t = times({0.0, 0.5, 1.0, 2.0});  // 3 intervals
  for (auto g : {Gradient::Backprop, Gradient::Anode}) {
    auto stats = std::make_shared<anode::SolveStats>();
    auto out = anode::odeint(f1, z0, t, solver(Method::RK4, g).steps(5), stats);
    EXPECT_EQ(stats->accepted_steps, 15);
    EXPECT_EQ(stats->rejected_steps, 0);
    EXPECT_EQ(stats->forward_evaluations, 15 * 4);
    EXPECT_EQ(stats->backward_evaluations, 0);  // nothing until backward runs
    trajectory_loss(out).backward();
    // Anode recomputes each interval once; Backprop evaluates nothing in backward.
    EXPECT_EQ(stats->backward_evaluations, g == Gradient::Anode ? 15 * 4 : 0)
        << anode::to_string(g);
  }
}

// checkpoints(k) on a trajectory runs the binomial schedule within each output interval, the
// outputs (stored anyway) serving as free checkpoints. The backward pass of an interval first
// rebuilds its checkpoints (the forward plan up to its last store: the forward pass keeps none by
// default), then runs the schedule's backward (its advances plus one taped re-run per step). The
// evaluations are exactly that, summed over the intervals, and fewer than one binomial schedule
// across all the solve's steps with the same k would take (the other reading of checkpoints(k)),
// for the same k states of memory.
TEST(Stats, CheckpointedTrajectoryRecomputesWithinEachInterval) {
  namespace sch = anode::schedule;
  const auto backward_steps = [](int64_t n, int64_t k) {
    const sch::Schedule s = sch::binomial_schedule(n, k);
    int64_t rebuild = 0, pending = 0;
    for (const auto& a : s.forward) {
      if (a.kind == sch::ActionKind::Advance) pending += a.arg;
      if (a.kind == sch::ActionKind::Store) rebuild += std::exchange(pending, 0);
    }
    return rebuild + sch::backward_advances(s) + n;
  };
  auto f = field(11);
  auto z0 = torch::randn({2, 2}, kD);
  auto t = times({0.0, 0.5, 1.0, 2.0, 4.0});  // step_size 0.125: 4, 4, 8 and 16 steps
  const std::vector<int64_t> steps{4, 4, 8, 16};
  const int64_t total = 32;
  for (int64_t k : {1, 2, 3}) {
    auto stats = std::make_shared<anode::SolveStats>();
    auto o = solver(Method::RK4).step_size(0.125).checkpoints(k);
    trajectory_loss(anode::odeint(f, z0, t, o, stats)).backward();
    ASSERT_EQ(stats->accepted_steps, total);
    int64_t per_interval = 0;
    for (int64_t n : steps) per_interval += backward_steps(n, k);
    EXPECT_EQ(stats->backward_evaluations, 4 * per_interval) << "k = " << k;
    EXPECT_LT(per_interval, backward_steps(total, k)) << "k = " << k;
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear error naming the value.

TEST(TrajectoryErrors, BadOutputTimes) {
  auto f = [](const torch::Tensor& z) { return -z; };
  auto z0 = torch::ones({2}, kD);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Bad {
    torch::Tensor t;
    std::vector<std::string> parts;
  };
  for (const auto& b :
       {Bad{times({0.0, 1.0, 0.5}), {"strictly increasing", "t[1] = 1", "t[2] = 0.5"}},
        Bad{times({1.0, 0.0, 0.5}), {"strictly decreasing", "t[2] = 0.5"}},
        Bad{times({0.0, 1.0, 1.0}), {"strictly increasing", "t[2] = 1"}},
        Bad{times({0.0, inf}), {"t[1] = inf", "not finite"}},
        Bad{times({nan, 1.0}), {"t[0] = nan", "not finite"}},
        Bad{times({0.0}), {"at least 2 entries", "got 1"}},
        Bad{torch::tensor(1.0, kD), {"1-D", "0-D"}}, Bad{torch::zeros({2, 2}, kD), {"1-D", "2-D"}},
        Bad{torch::tensor({0, 1}), {"floating", "Long"}}}) {
    EXPECT_TRUE(
        throws_mentioning([&] { anode::odeint(f, z0, b.t, solver(Method::RK4)); }, b.parts));
  }
}

// ---------------------------------------------------------------------------------------------
// The gradient self-check users run on their own right-hand side.

}  // namespace test_trajectory
