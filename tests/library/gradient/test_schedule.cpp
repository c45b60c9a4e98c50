// Tests of the binomial checkpoint schedule (include/anode/gradient/schedule.hpp).
//
// Every schedule is run on an abstract executor that checks the rules of the header comment,
// and its cost is compared with two references that do not use the header's closed forms: a
// dynamic program over split points, and (for small blocks) an exhaustive search over every
// program the executor can run, which shows that the dynamic program is the true optimum.

#include <anode/gradient/schedule.hpp>

#include "support/testing.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <queue>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace test_schedule {

namespace sch = anode::schedule;
using sch::Action;
using sch::ActionKind;
using sch::Schedule;

// ---------------------------------------------------------------------------------------------
// The abstract executor.

struct Simulation {
  std::string error;  // empty when the schedule is valid
  std::int64_t forward_advances = 0;
  std::int64_t backward_advances = 0;
  std::int64_t peak_slots = 0;  // most slots besides slot 0 filled at once
};

Simulation simulate(const Schedule& s, std::int64_t steps, std::int64_t k) {
  Simulation out;
  std::vector<std::int64_t> slot(k + 1, -1);  // position held, -1 when empty
  slot[0] = 0;
  std::int64_t filled = 0;
  std::int64_t pos = 0;
  auto fail = [&](const char* phase, std::size_t i, const std::string& why) {
    out.error = std::string(phase) + " action " + std::to_string(i) + ": " + why;
    return out;
  };
  auto in_slots = [&](std::int64_t x, std::int64_t first) { return x >= first && x <= k; };

  for (std::size_t i = 0; i < s.forward.size(); ++i) {
    const Action& a = s.forward[i];
    switch (a.kind) {
      case ActionKind::Advance:
        if (a.arg < 1) return fail("forward", i, "advance by less than 1");
        if (pos + a.arg > steps) return fail("forward", i, "advance past z_N");
        pos += a.arg;
        out.forward_advances += a.arg;
        break;
      case ActionKind::Store:
        if (!in_slots(a.arg, 1)) return fail("forward", i, "slot out of range 1..k");
        if (slot[a.arg] != -1) return fail("forward", i, "store into a filled slot");
        slot[a.arg] = pos;
        out.peak_slots = std::max(out.peak_slots, ++filled);
        break;
      default:
        return fail("forward", i, "the forward may only advance and store");
    }
  }
  if (pos != steps) return fail("forward", s.forward.size(), "forward does not end at z_N");

  pos = -1;                       // the backward starts from an arbitrary state
  std::int64_t next = steps - 1;  // the step to reverse next
  for (std::size_t i = 0; i < s.backward.size(); ++i) {
    const Action& a = s.backward[i];
    switch (a.kind) {
      case ActionKind::Advance:
        if (pos < 0) return fail("backward", i, "advance from an unknown state");
        if (a.arg < 1) return fail("backward", i, "advance by less than 1");
        if (pos + a.arg > next) return fail("backward", i, "advance past the step to reverse");
        pos += a.arg;
        out.backward_advances += a.arg;
        break;
      case ActionKind::Store:
        if (pos < 0) return fail("backward", i, "store of an unknown state");
        if (!in_slots(a.arg, 1)) return fail("backward", i, "slot out of range 1..k");
        if (slot[a.arg] != -1) return fail("backward", i, "store into a filled slot");
        slot[a.arg] = pos;
        out.peak_slots = std::max(out.peak_slots, ++filled);
        break;
      case ActionKind::Restore:
        if (!in_slots(a.arg, 0)) return fail("backward", i, "slot out of range 0..k");
        if (slot[a.arg] == -1) return fail("backward", i, "restore of an empty slot");
        pos = slot[a.arg];
        break;
      case ActionKind::Reverse:
        if (next < 0) return fail("backward", i, "every step is already reversed");
        if (a.arg != next) return fail("backward", i, "steps not reversed in order N-1..0");
        if (pos != next) return fail("backward", i, "current position is not the step");
        --next;
        break;
      case ActionKind::Free:
        if (!in_slots(a.arg, 1)) return fail("backward", i, "slot out of range 1..k");
        if (slot[a.arg] == -1) return fail("backward", i, "free of an empty slot");
        slot[a.arg] = -1;
        --filled;
        break;
    }
  }
  if (next != -1) return fail("backward", s.backward.size(), "not every step was reversed");
  if (filled != 0) return fail("backward", s.backward.size(), "slots left filled");
  return out;
}

// ---------------------------------------------------------------------------------------------
// References that do not use the header's closed forms.

constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max() / 4;

// Dynamic programs over split points, c = free slots besides the one holding the first state.
//   R[l][c]: Revolve's recursion (advances to reverse l steps, counting the sweep).
//   G[l][c]: backward advances of a block whose forward pass may store for free.
struct BruteForce {
  std::vector<std::vector<std::int64_t>> R, G;

  BruteForce(std::int64_t max_steps, std::int64_t max_free)
      : R(max_steps + 1, std::vector<std::int64_t>(max_free + 1, 0)), G(R) {
    for (std::int64_t l = 2; l <= max_steps; ++l) {
      for (std::int64_t c = 0; c <= max_free; ++c) {
        std::int64_t r = c == 0 ? R[l - 1][0] + (l - 1) : kInf;
        for (std::int64_t m = 1; c > 0 && m < l; ++m) {
          r = std::min(r, m + R[l - m][c - 1] + R[m][c]);
        }
        R[l][c] = r;
        std::int64_t g = R[l][c];  // no store in the forward
        for (std::int64_t m = 1; c > 0 && m < l; ++m) g = std::min(g, G[l - m][c - 1] + R[m][c]);
        G[l][c] = g;
      }
    }
  }
  // Total advances as the header counts them: the forward's N-1 plus the backward's.
  std::int64_t total(std::int64_t n, std::int64_t k) const { return (n - 1) + G[n][k]; }
};

const BruteForce& brute_force() {
  static const BruteForce bf(1000, 10);
  return bf;
}

int popcount(std::uint32_t x) {
  int n = 0;
  for (; x != 0; x &= x - 1) ++n;
  return n;
}

// The minimal total advances over *every* program of the executor, by Dijkstra's algorithm.
// The forward is one sweep that stores any set of at most k states z_1..z_{N-1} (anything more
// can be deferred to the backward at the same cost); the backward may restore, advance, store,
// free and reverse freely. State: (stored positions as a bit mask, pos, steps left to reverse).
std::int64_t exhaustive_optimum(int n, int k) {
  using State = std::tuple<std::int64_t, std::uint32_t, int, int>;  // cost, mask, pos, left
  const int npos = n + 1;  // pos in -1..n-1, stored as pos+1
  std::vector<std::int64_t> dist(static_cast<std::size_t>(1u << n) * npos * (n + 1), kInf);
  auto id = [&](std::uint32_t mask, int pos, int left) {
    return (static_cast<std::size_t>(mask) * npos + (pos + 1)) * (n + 1) + left;
  };
  std::priority_queue<State, std::vector<State>, std::greater<State>> queue;
  auto push = [&](std::int64_t d, std::uint32_t mask, int pos, int left) {
    auto& slot = dist[id(mask, pos, left)];
    if (d < slot) {
      slot = d;
      queue.emplace(d, mask, pos, left);
    }
  };
  for (std::uint32_t mask = 0; mask < (1u << n); mask += 2) {  // bit 0 (z_0) is implicit
    if (popcount(mask) <= k) push(n - 1, mask, -1, n);
  }
  while (!queue.empty()) {
    auto [d, mask, pos, left] = queue.top();
    queue.pop();
    if (d != dist[id(mask, pos, left)]) continue;
    if (left == 0) return d;
    const int target = left - 1;  // the step to reverse next
    for (int q = 0; q <= target; ++q) {
      if (q == 0 || (mask >> q & 1u)) push(d, mask, q, left);  // restore
    }
    for (int q = 1; q < n; ++q) {
      if (mask >> q & 1u) push(d, mask & ~(1u << q), pos, left);  // free
    }
    if (pos >= 0 && pos < target) push(d + 1, mask, pos + 1, left);  // advance
    if (pos > 0 && !(mask >> pos & 1u) && popcount(mask) < k) {
      push(d, mask | (1u << pos), pos, left);  // store
    }
    if (pos == target) {  // reverse; states at or after the reversed step are useless now
      push(d, mask & ((1u << target) - 1u), pos, left - 1);
    }
  }
  return kInf;
}

// Checks one schedule against the executor and every reference; returns its backward advances.
std::int64_t check_schedule(std::int64_t n, std::int64_t k) {
  SCOPED_TRACE("steps=" + std::to_string(n) + " checkpoints=" + std::to_string(k));
  const Schedule s = sch::binomial_schedule(n, k);
  const Simulation sim = simulate(s, n, k);
  EXPECT_EQ(sim.error, "") << sch::to_string(s);
  EXPECT_EQ(s.steps, n);
  EXPECT_EQ(s.checkpoints, k);
  EXPECT_EQ(sim.forward_advances, n);
  EXPECT_EQ(sch::forward_advances(s), n);
  EXPECT_EQ(sch::backward_advances(s), sim.backward_advances);
  EXPECT_LE(sim.peak_slots, std::min(k, n - 1));
  EXPECT_EQ((n - 1) + sim.backward_advances, sch::optimal_advances(n, k));
  EXPECT_EQ(sch::backward_rhs_steps(n, k), sim.backward_advances + n);
  const auto& bf = brute_force();
  if (n < static_cast<std::int64_t>(bf.G.size()) && k < static_cast<std::int64_t>(bf.G[0].size())) {
    EXPECT_EQ((n - 1) + sim.backward_advances, bf.total(n, k));
  }
  if (k >= n - 1) {
    EXPECT_EQ(sim.backward_advances, 0);
  }
  return sim.backward_advances;
}

// ---------------------------------------------------------------------------------------------
// The executor and the references themselves.

TEST(ScheduleSimulator, RejectsBrokenSchedules) {
  const Schedule good = sch::binomial_schedule(10, 2);
  ASSERT_EQ(simulate(good, 10, 2).error, "");
  auto broken = [&](const std::function<void(Schedule&)>& edit) {
    Schedule s = good;
    edit(s);
    return simulate(s, 10, 2).error;
  };
  EXPECT_NE(broken([](Schedule& s) { s.forward.back().arg -= 1; }).find("does not end at z_N"),
            std::string::npos);
  EXPECT_NE(broken([](Schedule& s) { s.backward.erase(s.backward.begin()); }).find("unknown"),
            std::string::npos);
  EXPECT_NE(broken([](Schedule& s) { s.backward.push_back(Action::restore(3)); }).find("range"),
            std::string::npos);
  EXPECT_NE(broken([](Schedule& s) {  // the forward stores nothing: the backward restores nothing
              std::vector<Action> sweep;
              for (const auto& a : s.forward) {
                if (a.kind == ActionKind::Advance) sweep.push_back(a);
              }
              s.forward = sweep;
            })
                .find("empty slot"),
            std::string::npos);
  EXPECT_NE(broken([](Schedule& s) {
              for (auto& a : s.backward) {
                if (a.kind == ActionKind::Reverse) {
                  a.arg -= 1;
                  break;
                }
              }
            }).find("order"),
            std::string::npos);
  EXPECT_NE(broken([](Schedule& s) {
              s.forward.insert(s.forward.begin(), Action::reverse(0));
            }).find("only advance"),
            std::string::npos);
  // Dropping the final Free leaves a slot filled; dropping a Reverse leaves a step unreversed.
  Schedule s = good;
  ASSERT_EQ(s.backward.back().kind, ActionKind::Reverse);
  s.backward.pop_back();
  EXPECT_NE(simulate(s, 10, 2).error.find("not every step"), std::string::npos);
  // A schedule valid for k = 2 uses slot 2, which k = 1 does not have.
  EXPECT_NE(simulate(good, 10, 1).error.find("range"), std::string::npos);
}

TEST(ScheduleReference, DynamicProgramIsTheExhaustiveOptimum) {
  // The split-point recursion is the true optimum of the executor, and Revolve's t(N, k+1) is
  // not reachable when the forward cannot keep z_{N-1} in hand (N = 2, k = 0: 2, not 1).
  for (int n = 1; n <= 10; ++n) {
    for (int k = 0; k <= 4; ++k) {
      SCOPED_TRACE("steps=" + std::to_string(n) + " checkpoints=" + std::to_string(k));
      EXPECT_EQ(exhaustive_optimum(n, k), brute_force().total(n, k));
    }
  }
  EXPECT_EQ(exhaustive_optimum(2, 0), 2);
  EXPECT_EQ(sch::revolve_advances(2, 1), 1);
  EXPECT_EQ(exhaustive_optimum(6, 5), 5);  // k = N-1: nothing recomputed
  EXPECT_EQ(exhaustive_optimum(6, 4), 6);  // k = N-2: one recomputed step (Revolve: none)
  EXPECT_EQ(sch::revolve_advances(6, 5), 5);
}

TEST(ScheduleReference, RevolveClosedFormMatchesItsRecursion) {
  const auto& bf = brute_force();
  for (std::int64_t n = 1; n <= 1000; ++n) {
    for (std::int64_t c = 0; c <= 10; ++c) {
      ASSERT_EQ(sch::revolve_advances(n, c + 1), bf.R[n][c]) << "steps=" << n << " snaps=" << c + 1;
    }
  }
  // Griewank & Walther's examples of the binomial law: t(32, 5) = 3*32 - C(8, 6) = 68.
  EXPECT_EQ(sch::revolve_advances(32, 5), 68);
  EXPECT_EQ(sch::revolve_advances(10, 1), 45);
  EXPECT_EQ(sch::revolve_advances(10, 100), 9);
}

// ---------------------------------------------------------------------------------------------
// Schedules.

TEST(BinomialSchedule, ValidAndOptimalForEverySmallBlock) {
  for (std::int64_t n = 1; n <= 80; ++n) {
    for (std::int64_t k = 0; k <= 10; ++k) check_schedule(n, k);
  }
}

TEST(BinomialSchedule, ValidAndOptimalForLargeBlocks) {
  for (std::int64_t n : {128, 333, 1000}) {
    for (std::int64_t k : {0, 1, 2, 3, 5, 7, 10}) check_schedule(n, k);
  }
  for (std::int64_t k : {0, 1, 2, 4, 8, 16, 64, 9998, 9999, 20000}) check_schedule(10000, k);
}

TEST(BinomialSchedule, NoRecomputationWithEnoughCheckpoints) {
  for (std::int64_t n = 1; n <= 40; ++n) {
    for (std::int64_t k = std::max<std::int64_t>(n - 1, 0); k <= n + 2; ++k) {
      const Schedule s = sch::binomial_schedule(n, k);
      EXPECT_EQ(sch::backward_advances(s), 0) << sch::to_string(s);
      EXPECT_EQ(sch::backward_rhs_steps(n, k), n);
      EXPECT_EQ(sch::optimal_advances(n, k), n - 1);
    }
    // One slot short of z_1..z_{N-1}: exactly one step is recomputed (Revolve would need none,
    // since it keeps z_{N-1} in hand).
    if (n >= 2) {
      EXPECT_EQ(sch::optimal_advances(n, n - 2), n) << n;
    }
  }
}

TEST(BinomialSchedule, WithoutCheckpointsEverythingIsRecomputedFromTheInput) {
  for (std::int64_t n : {1, 2, 5, 17}) {
    const Schedule s = sch::binomial_schedule(n, 0);
    EXPECT_EQ(simulate(s, n, 0).error, "");
    EXPECT_EQ(sch::backward_advances(s), n * (n - 1) / 2);
    ASSERT_EQ(s.forward.size(), 1u);
    EXPECT_EQ(s.forward[0], Action::advance(n));
  }
}

TEST(BinomialSchedule, SmallScheduleIsTheExpectedOne) {
  // 4 steps, 1 checkpoint: the forward stores z_3, from which the backward reverses step 3; the
  // slot is then reused for z_1 on the way from z_0 to z_2 (2 recomputed steps, 3 + 2 = 5).
  const Schedule s = sch::binomial_schedule(4, 1);
  const std::vector<Action> forward{Action::advance(3), Action::store(1), Action::advance(1)};
  const std::vector<Action> backward{Action::restore(1), Action::reverse(3), Action::free(1),
                                     Action::restore(0), Action::advance(1), Action::store(1),
                                     Action::advance(1), Action::reverse(2), Action::restore(1),
                                     Action::reverse(1), Action::free(1),    Action::restore(0),
                                     Action::reverse(0)};
  EXPECT_EQ(s.forward, forward) << sch::to_string(s);
  EXPECT_EQ(s.backward, backward) << sch::to_string(s);
  EXPECT_EQ(sch::optimal_advances(4, 1), 5);
}

TEST(BinomialSchedule, KnownCosts) {
  // (N, k): total advances as Revolve counts them, and steps run by the backward pass.
  EXPECT_EQ(sch::optimal_advances(32, 4), 70);  // Revolve t(32, 5) = 68
  EXPECT_EQ(sch::backward_rhs_steps(32, 4), 71);
  const std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>> n64{
      {1, 429, 430}, {2, 263, 264}, {4, 175, 176}, {8, 128, 129}, {16, 110, 111}, {63, 63, 64}};
  for (const auto& [k, total, rhs] : n64) {
    EXPECT_EQ(sch::optimal_advances(64, k), total) << k;
    EXPECT_EQ(sch::backward_rhs_steps(64, k), rhs) << k;
  }
}

// #{r >= 1 : C(s+r, s) <= n}, counted directly (no closed form). beta <= n <= 2^31 and s + r <
// 2^20 in these tests, so beta * (s+r) fits in 64 bits.
std::int64_t binomial_points(std::int64_t n, std::int64_t s) {
  std::int64_t count = 0;
  std::uint64_t beta = 1;
  for (std::uint64_t r = 1;; ++r) {
    beta = beta * (static_cast<std::uint64_t>(s) + r) / r;
    if (beta > static_cast<std::uint64_t>(n)) return count;
    ++count;
  }
}

TEST(BinomialSchedule, ClosedFormsAreOverflowSafeAndMonotone) {
  const std::int64_t big = 1000000;
  const std::int64_t max = std::int64_t{1} << 31;
  for (std::int64_t n : {big, max}) {
    // No checkpoint: N-1 forward advances, then N-1, N-2, ..., 1 from z_0.
    EXPECT_EQ(sch::optimal_advances(n, 0), n * (n - 1) / 2 + (n - 1));
    EXPECT_EQ(sch::revolve_advances(n, 1), n * (n - 1) / 2);
    EXPECT_EQ(sch::optimal_advances(n, n - 1), n - 1);
    EXPECT_EQ(sch::optimal_advances(n, n - 2), n);
    EXPECT_EQ(sch::optimal_advances(n, std::numeric_limits<std::int64_t>::max()), n - 1);
    std::int64_t previous = sch::optimal_advances(n, 0);
    for (std::int64_t k = 1; k <= 64; ++k) {
      const std::int64_t cost = sch::optimal_advances(n, k);
      EXPECT_LT(cost, previous) << n << " " << k;  // every checkpoint helps
      EXPECT_EQ(cost, sch::revolve_advances(n, k + 1) + binomial_points(n, k + 1)) << n << " " << k;
      EXPECT_EQ(sch::backward_rhs_steps(n, k), cost + 1);
      previous = cost;
    }
  }
  // Against the 128-bit count where the dynamic program reaches too.
  for (std::int64_t n = 1; n <= 1000; ++n) {
    for (std::int64_t k = 0; k <= 10; ++k) {
      ASSERT_EQ(brute_force().total(n, k),
                sch::revolve_advances(n, k + 1) + binomial_points(n, k + 1))
          << n << " " << k;
    }
  }
}

TEST(BinomialSchedule, RejectsBadArguments) {
  EXPECT_TRUE(anode_test::throws_mentioning([] { sch::binomial_schedule(0, 2); },
                                            {"steps must be in [1, "}));
  EXPECT_TRUE(anode_test::throws_mentioning([] { sch::binomial_schedule(4, -1); },
                                            {"checkpoints must be >= 0, got -1"}));
  EXPECT_TRUE(anode_test::throws_mentioning(
      [] { sch::optimal_advances((std::int64_t{1} << 31) + 1, 1); }, {"steps must be in"}));
  EXPECT_TRUE(anode_test::throws_mentioning([] { sch::revolve_advances(4, 0); },
                                            {"snapshots must be >= 1"}));
}

TEST(BinomialSchedule, ToStringListsTheActions) {
  const std::string text = sch::to_string(sch::binomial_schedule(4, 1));
  EXPECT_NE(text.find("4 steps, 1 checkpoints, 5 advances (optimum 5)"), std::string::npos) << text;
  EXPECT_NE(text.find("forward:  advance(3) store(1) advance(1)"), std::string::npos) << text;
  EXPECT_NE(text.find("backward: restore(1) reverse(3) free(1) restore(0)"), std::string::npos)
      << text;
}

// How long schedule generation takes is measured in benchmarks/bench_schedule.cpp, not here: unit
// tests assert no timings (CONTRIBUTING.md).

// The memory-budget planner (measured step cost) is tested in test_binomial and test_memory.

}  // namespace test_schedule
