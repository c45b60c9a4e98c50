#pragma once
// The memory plan's optimisation: given what one training step was measured to use (the memory
// profile of everything anode does not control, and each Gradient::Anode call's costs), choose per
// call how its gradient is taken so that the whole step's peak stays within a byte budget and the
// time spent recomputing is least.
//
// The model. A step runs the calls' forward passes in order 1..L (with whatever layers lie between
// them), then their backward passes in the reverse order L..1. Each call j chooses one of
//   Keep           its forward pass keeps its graph (Backprop's) until its backward: no recompute;
//   Whole          the paper's scheme: only the input is kept, the backward rebuilds the graph;
//   Binomial(k)    k checkpoints, rebuilt by the backward from the input (one extra sweep);
//   BinomialKept(k) k checkpoints stored by the forward pass (no sweep, but they live until the
//                  backward).
// A choice has a *persistent* cost P (bytes live from the call's forward until its backward: the
// kept graph, or the stored checkpoints) and a *transient* cost T (bytes its backward allocates
// above what is live when it starts, its own persistent bytes included). With S_j the persistent
// bytes of calls 1..j, every point of the step where memory can peak gives one constraint:
//   forward of j:         fwd_j + S_{j-1} + F_j(d_j)       <= B   (F: the kept graph, or the
//                                                                  forward's own transient)
//   after forward of j:   after_fwd_j + S_j               <= B   (the layers up to the next call;
//                                                                  after the last: the loss and
//                                                                  the backward down to call L)
//   backward of j:        bwd_j + S_{j-1} + T_j(d_j)       <= B
//   after backward of j:  after_bwd_j + S_{j-1}            <= B   (the layers down to call j-1)
// where fwd_j, after_fwd_j, bwd_j and after_bwd_j are the measured usage (or segment peak) of the
// step with nothing persistent. The cost is the recompute time: sum_j tau_j * R_j(d_j), R the
// steps a choice re-runs.
//
// Why the search below is optimal. Every constraint of call j involves the choices of calls 1..j
// only through S_{j-1} (or S_j), and grows with it. So a partial plan of calls 1..j is described,
// for everything that follows, by the pair (S_j, cost so far), and a pair with no more bytes and
// no more cost than another dominates it: any completion of the dominated plan also completes the
// dominating one, feasibly, at no more cost. Keeping, call after call, every non-dominated pair
// (a Pareto front sorted by bytes, cost strictly falling) therefore keeps an optimal plan: the
// dynamic programme is exact for the model, not a heuristic. Its size is bounded by the number of
// distinct byte sums reachable; `kMaxFront` caps it (pairs are then merged upwards in bytes,
// which stays feasible and costs at most the time of the merged-away alternatives: the bound is
// reported in `Solution::exact`). The model itself is conservative where it estimates (a kept
// graph never measured is taken as N times one measured step's graph, which counts every step's
// output, and its backward as one measured step's backward on top of it: memory_plan.hpp) and
// uses measurements everywhere else.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace plan {

/// How one Gradient::Anode call takes its gradient under a plan.
enum class Choice { Keep, Whole, Binomial, BinomialKept };

/// A call's decision: the choice and, for the binomial ones, the number of checkpoints.
struct Decision {
  Choice choice = Choice::Whole;
  int64_t checkpoints = 0;
};

inline bool operator==(const Decision& a, const Decision& b) {
  return a.choice == b.choice && a.checkpoints == b.checkpoints;
}

inline std::string to_string(const Decision& d) {
  switch (d.choice) {
    case Choice::Keep:
      return "keep graph";
    case Choice::Whole:
      return "recompute whole";
    case Choice::Binomial:
      return "checkpoints(" + std::to_string(d.checkpoints) + ") rebuilt";
    case Choice::BinomialKept:
      return "checkpoints(" + std::to_string(d.checkpoints) + ") kept";
  }
  return "?";
}

/// One option of a call: its decision, its bytes and the steps it re-runs.
struct Option {
  Decision decision;
  int64_t persistent = 0;  ///< P: live from the call's forward until its backward
  int64_t forward = 0;     ///< F: above fwd_j during its forward pass
  int64_t transient = 0;   ///< T: above bwd_j during its backward, P included
  double recompute = 0;    ///< time its backward spends re-running steps (seconds, estimated)
};

/// What the plan knows of one call: the measured profile around it and its options.
struct CallProfile {
  int64_t fwd = 0;        ///< usage when its forward starts
  int64_t after_fwd = 0;  ///< peak from its forward's end to the next call's forward (or backward)
  int64_t bwd = 0;        ///< usage when its backward starts
  int64_t after_bwd = 0;  ///< peak from its backward's end to the previous call's backward
  std::vector<Option> options;
};

/// The chosen plan and what the model predicts for it.
struct Solution {
  bool feasible = false;
  std::vector<Decision> decisions;
  double recompute = 0;       ///< predicted recompute time
  int64_t peak = 0;           ///< predicted peak of the step
  int64_t cheapest_peak = 0;  ///< the least peak of any plan (what the budget must allow)
  bool exact = true;          ///< false when the front was capped (see kMaxFront)
};

constexpr std::size_t kMaxFront = 1 << 14;

namespace detail {

struct Partial {
  int64_t bytes;  // S_j
  double cost;
  int64_t peak;  // the highest constraint left-hand side so far
  int parent;    // index in the previous front
  int option;    // option of this call
};

/// The peak of each constraint of call `j` for a partial plan with `before` persistent bytes.
inline int64_t call_peak(const CallProfile& c, const Option& o, int64_t before) {
  int64_t p = c.fwd + before + o.forward;
  p = std::max(p, c.after_fwd + before + o.persistent);
  p = std::max(p, c.bwd + before + o.transient);
  p = std::max(p, c.after_bwd + before);
  return p;
}

/// Keeps the non-dominated partials (fewer bytes or less cost), sorted by bytes.
inline std::vector<Partial> pareto(std::vector<Partial> v, bool& exact) {
  std::sort(v.begin(), v.end(), [](const Partial& a, const Partial& b) {
    return a.bytes != b.bytes ? a.bytes < b.bytes : a.cost < b.cost;
  });
  std::vector<Partial> out;
  for (const auto& p : v) {
    if (out.empty() || p.cost < out.back().cost) out.push_back(p);
  }
  if (out.size() > kMaxFront) {
    // Merge neighbours upwards in bytes: keep every stride-th, which is feasible (more bytes
    // assumed than used) and loses at most the cost difference of what it drops.
    exact = false;
    std::vector<Partial> thin;
    const std::size_t stride = (out.size() + kMaxFront - 1) / kMaxFront;
    for (std::size_t i = 0; i < out.size(); i += stride) thin.push_back(out[i]);
    if (thin.back().bytes != out.back().bytes) thin.push_back(out.back());
    out = std::move(thin);
  }
  return out;
}

}  // namespace detail

/// The least-recompute plan of `calls` whose predicted peak is at most `budget` bytes. With
/// `persistent_allowed` false (the backward passes did not run in the reverse order of the
/// forward passes, so which persistent bytes are live when is unknown), only options without
/// persistent bytes are considered. `feasible` is false when no plan fits; `cheapest_peak` then
/// says what the budget would have to be.
inline Solution solve(const std::vector<CallProfile>& calls, int64_t budget,
                      bool persistent_allowed = true) {
  Solution s;
  std::vector<std::vector<detail::Partial>> fronts;
  std::vector<detail::Partial> front{{0, 0.0, 0, -1, -1}};
  // The least peak of any plan, found by the same programme with cost = peak.
  std::vector<detail::Partial> least{{0, 0.0, 0, -1, -1}};
  for (std::size_t j = 0; j < calls.size(); ++j) {
    const auto& c = calls[j];
    TORCH_CHECK(!c.options.empty(), "anode: internal error: a planned call has no option");
    // Every partial of `from` extended by every option of call j: within the budget and costed
    // by recompute time, or (by_peak) unconstrained and costed by the peak it reaches.
    const auto extend = [&](const std::vector<detail::Partial>& from, bool by_peak) {
      std::vector<detail::Partial> next;
      for (int i = 0; i < static_cast<int>(from.size()); ++i) {
        const auto& p = from[static_cast<std::size_t>(i)];
        for (int o = 0; o < static_cast<int>(c.options.size()); ++o) {
          const auto& opt = c.options[static_cast<std::size_t>(o)];
          if (!persistent_allowed && opt.persistent > 0) continue;
          const int64_t peak = std::max(p.peak, detail::call_peak(c, opt, p.bytes));
          if (!by_peak && peak > budget) continue;
          const double cost = by_peak ? static_cast<double>(peak) : p.cost + opt.recompute;
          next.push_back({p.bytes + opt.persistent, cost, peak, i, o});
        }
      }
      return next;
    };
    bool exact = true;
    least = detail::pareto(extend(least, /*by_peak=*/true), exact);
    fronts.push_back(front);
    front = detail::pareto(extend(front, /*by_peak=*/false), s.exact);
  }
  s.cheapest_peak = std::numeric_limits<int64_t>::max();
  for (const auto& p : least) s.cheapest_peak = std::min(s.cheapest_peak, p.peak);
  if (calls.empty()) s.cheapest_peak = 0;
  if (front.empty() || calls.empty()) return s;
  // The cheapest complete plan; walk back through the fronts for its decisions.
  const auto best = std::min_element(
      front.begin(), front.end(),
      [](const detail::Partial& a, const detail::Partial& b) { return a.cost < b.cost; });
  s.feasible = true;
  s.recompute = best->cost;
  s.peak = best->peak;
  s.decisions.resize(calls.size());
  detail::Partial p = *best;
  for (std::size_t j = calls.size(); j-- > 0;) {
    s.decisions[j] = calls[j].options[static_cast<std::size_t>(p.option)].decision;
    if (j > 0) p = fronts[j][static_cast<std::size_t>(p.parent)];
  }
  return s;
}

}  // namespace plan
}  // namespace anode
