// The memory plan's search (gradient/plan_solver.hpp) on its own: on random problems small enough
// to enumerate, its plan is feasible, as cheap as the best of all plans, and its least peak is the
// least of all plans; it keeps persistent bytes out when told to, and says when nothing fits.

#include <anode/gradient/plan_solver.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace test_plan_solver {

using anode::plan::CallProfile;
using anode::plan::Choice;
using anode::plan::Option;

/// The peak of a complete plan, by the model's definition (every constraint of every call).
int64_t peak_of(const std::vector<CallProfile>& calls, const std::vector<int>& pick) {
  int64_t before = 0, peak = 0;
  for (std::size_t j = 0; j < calls.size(); ++j) {
    const auto& c = calls[j];
    const auto& o = c.options[static_cast<std::size_t>(pick[j])];
    peak = std::max({peak, c.fwd + before + o.forward, c.after_fwd + before + o.persistent,
                     c.bwd + before + o.transient, c.after_bwd + before});
    before += o.persistent;
  }
  return peak;
}

std::vector<CallProfile> random_problem(std::mt19937& rng, int calls, int options) {
  std::uniform_int_distribution<int64_t> bytes(0, 100);
  std::uniform_real_distribution<double> time(0.0, 10.0);
  std::vector<CallProfile> out(static_cast<std::size_t>(calls));
  for (auto& c : out) {
    c.fwd = bytes(rng);
    c.after_fwd = c.fwd + bytes(rng) / 4;
    c.bwd = c.after_fwd + bytes(rng) / 4;
    c.after_bwd = bytes(rng);
    for (int o = 0; o < options; ++o) {
      Option op;
      op.decision = {o == 0 ? Choice::Keep : Choice::Binomial, o};
      op.persistent = o == 0 ? bytes(rng) : (o % 2 ? 0 : bytes(rng) / 3);
      op.forward = op.persistent + bytes(rng) / 5;
      op.transient = op.persistent + bytes(rng);
      op.recompute = o == 0 ? 0.0 : time(rng);
      c.options.push_back(op);
    }
  }
  return out;
}

TEST(PlanSolver, MatchesExhaustiveSearch) {
  std::mt19937 rng(12345);
  int feasible_cases = 0, infeasible_cases = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int n_calls = 1 + trial % 5, n_options = 2 + trial % 3;
    const auto calls = random_problem(rng, n_calls, n_options);
    const int64_t budget = 80 + (trial * 37) % 300;
    const bool persistent_allowed = trial % 7 != 0;
    // Every plan, enumerated.
    double best = std::numeric_limits<double>::infinity();
    int64_t least_peak = std::numeric_limits<int64_t>::max();
    std::vector<int> pick(static_cast<std::size_t>(n_calls), 0);
    for (;;) {
      bool allowed = true;
      double cost = 0;
      for (int j = 0; j < n_calls; ++j) {
        const auto& o =
            calls[static_cast<std::size_t>(j)].options[static_cast<std::size_t>(pick[j])];
        allowed = allowed && (persistent_allowed || o.persistent == 0);
        cost += o.recompute;
      }
      if (allowed) {
        const int64_t p = peak_of(calls, pick);
        least_peak = std::min(least_peak, p);
        if (p <= budget) best = std::min(best, cost);
      }
      int j = 0;
      while (j < n_calls && ++pick[static_cast<std::size_t>(j)] == n_options)
        pick[static_cast<std::size_t>(j++)] = 0;
      if (j == n_calls) break;
    }
    const auto s = anode::plan::solve(calls, budget, persistent_allowed);
    EXPECT_EQ(s.cheapest_peak, least_peak) << "trial " << trial;
    EXPECT_TRUE(s.exact);
    if (best == std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(s.feasible) << "trial " << trial;
      ++infeasible_cases;
      continue;
    }
    ++feasible_cases;
    ASSERT_TRUE(s.feasible) << "trial " << trial;
    EXPECT_NEAR(s.recompute, best, 1e-9) << "trial " << trial;
    // The decisions it returns are a plan with that cost and within the budget.
    std::vector<int> chosen;
    double cost = 0;
    for (int j = 0; j < n_calls; ++j) {
      const auto& opts = calls[static_cast<std::size_t>(j)].options;
      const auto it = std::find_if(opts.begin(), opts.end(), [&](const Option& o) {
        return o.decision == s.decisions[static_cast<std::size_t>(j)];
      });
      ASSERT_NE(it, opts.end());
      EXPECT_TRUE(persistent_allowed || it->persistent == 0);
      chosen.push_back(static_cast<int>(it - opts.begin()));
      cost += it->recompute;
    }
    EXPECT_NEAR(cost, s.recompute, 1e-9);
    EXPECT_LE(peak_of(calls, chosen), budget) << "trial " << trial;
    EXPECT_EQ(peak_of(calls, chosen), s.peak) << "trial " << trial;
  }
  // The random problems exercised both outcomes.
  EXPECT_GT(feasible_cases, 50);
  EXPECT_GT(infeasible_cases, 20);
}

// Kept graphs of the calls differentiated first cost least: with room for one, the last call's
// (whose graph is freed first) is the one kept.
TEST(PlanSolver, KeepsTheGraphOfTheCallDifferentiatedFirst) {
  std::vector<CallProfile> calls(3);
  for (std::size_t j = 0; j < calls.size(); ++j) {
    auto& c = calls[j];
    c.fwd = 10 * static_cast<int64_t>(j);
    c.after_fwd = c.fwd + 10;
    c.bwd = 40 - 10 * static_cast<int64_t>(j);  // the layers' saved tensors, freed in backward
    c.after_bwd = c.bwd;
    c.options = {Option{{Choice::Keep, 0}, 30, 30, 35, 0.0},
                 Option{{Choice::Whole, 0}, 0, 0, 35, 1.0}};
  }
  const auto s = anode::plan::solve(calls, 80);
  ASSERT_TRUE(s.feasible);
  EXPECT_EQ(s.decisions[0].choice, Choice::Whole);
  EXPECT_EQ(s.decisions[2].choice, Choice::Keep);
  const auto whole = std::count_if(s.decisions.begin(), s.decisions.end(),
                                   [](const auto& d) { return d.choice == Choice::Whole; });
  EXPECT_DOUBLE_EQ(s.recompute, static_cast<double>(whole));
}

}  // namespace test_plan_solver
