// integrate.hpp on its own: one Runge-Kutta step of a tableau, the time grid, the stepper's loop
// and its evaluation counts. Each fixed-step method converges at its order; a solve split into
// pieces is the same solve, bit for bit; every stage is one counted evaluation.

#include "support/testing.hpp"

#include <cmath>
#include <vector>

namespace test_integrate {

using namespace anode_test;
using anode::Method;

/// z(1) of dz/dt = -z + sin(t) from z(0) = 1 with `n` steps of `m`, and its exact value.
double solve_scalar(Method m, int64_t n) {
  const anode::RHS f = [](double t, const torch::Tensor& z) { return -z + std::sin(t); };
  anode::Stepper s(f, anode::tableau(m), anode::TimeGrid{0.0, 1.0, n});
  return s.integrate(torch::ones({1}, torch::kDouble), 0, n).item<double>();
}
double exact_scalar() {
  // z = (sin t - cos t)/2 + (3/2) e^{-t}
  return (std::sin(1.0) - std::cos(1.0)) / 2 + 1.5 * std::exp(-1.0);
}

// Halving the step divides the error by 2^order: Euler 1, RK2 2, RK4 4.
TEST(Integrate, FixedStepMethodsConvergeAtTheirOrder) {
  for (const auto& [m, order] :
       {std::pair<Method, double>{Method::Euler, 1}, {Method::RK2, 2}, {Method::RK4, 4}}) {
    const double e1 = std::abs(solve_scalar(m, 16) - exact_scalar());
    const double e2 = std::abs(solve_scalar(m, 32) - exact_scalar());
    EXPECT_NEAR(std::log2(e1 / e2), order, 0.15) << anode::to_string(m);
  }
}

// A solve run in pieces (0..3, then 3..8) is the solve run at once, bit for bit, and the
// observer sees every step's state.
TEST(Integrate, PiecesAreTheWholeSolveAndTheObserverSeesEveryStep) {
  torch::manual_seed(0);
  auto W = torch::randn({4, 4}, torch::kDouble) * 0.3;
  const anode::RHS f = [W](double t, const torch::Tensor& z) { return torch::tanh(z.mm(W)) * t; };
  for (Method m : {Method::Euler, Method::RK2, Method::RK4}) {
    anode::Stepper s(f, anode::tableau(m), anode::TimeGrid{0.5, 2.0, 8});
    const auto z0 = torch::randn({3, 4}, torch::kDouble);
    std::vector<int64_t> seen;
    const auto whole =
        s.integrate(z0, 0, 8, [&](int64_t n, const torch::Tensor&) { seen.push_back(n); });
    EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
    EXPECT_TRUE(torch::equal(s.integrate(s.integrate(z0, 0, 3), 3, 8), whole));
  }
}

// The uniform grid ends exactly at t1; an explicit grid takes its own steps.
TEST(Integrate, TimeGrids) {
  const anode::TimeGrid g{0.0, 0.3, 3};
  EXPECT_EQ(g.time(3), 0.3);  // not 3 * 0.1, which rounds differently
  EXPECT_DOUBLE_EQ(g.h(1), 0.1);
  const auto e = anode::TimeGrid::explicit_times({0.0, 0.25, 1.0});
  EXPECT_EQ(e.steps, 2);
  EXPECT_EQ(e.h(1), 0.75);
  EXPECT_EQ(e.time(2), 1.0);
}

// Every stage of every step is one counted evaluation: Euler 1, RK2 2, RK4 4 a step.
TEST(Integrate, EveryStageIsOneCountedEvaluation) {
  for (const auto& [m, stages] :
       {std::pair<Method, int64_t>{Method::Euler, 1}, {Method::RK2, 2}, {Method::RK4, 4}}) {
    auto counter = std::make_shared<anode::EvalCounter>();
    const anode::RHS f = [](double, const torch::Tensor& z) { return -z; };
    anode::Stepper s(f, anode::tableau(m), anode::TimeGrid{0.0, 1.0, 5}, false, counter);
    s.integrate(torch::ones({2}), 0, 5);
    EXPECT_EQ(counter->stats->forward_evaluations, 5 * stages) << anode::to_string(m);
    EXPECT_EQ(counter->stats->backward_evaluations, 0);
  }
}

// check_finite names the step where the state stopped being finite.
TEST(Integrate, CheckFiniteNamesTheStep) {
  const anode::RHS f = [](double t, const torch::Tensor& z) {
    return t > 0.45 ? z * std::numeric_limits<double>::infinity() : z;
  };
  anode::Stepper s(f, anode::tableau(Method::Euler), anode::TimeGrid{0.0, 1.0, 10}, true);
  EXPECT_TRUE(throws_mentioning([&] { s.integrate(torch::ones({1}, torch::kDouble), 0, 10); },
                                {"non-finite", "after step 6 of 10"}));
}

}  // namespace test_integrate
