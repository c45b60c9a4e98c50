#pragma once
// Binomial (Revolve) checkpoint schedules for reversing the N steps of one ODE block with k
// intermediate checkpoints: a pure function from (N, k) to a list of actions, independent of torch.
//
// Reference: A. Griewank and A. Walther, "Algorithm 799: revolve: an implementation of
// checkpointing for the reverse or adjoint mode of computational differentiation", ACM Trans.
// Math. Softw. 26(1):19-45, 2000 (and A. Griewank, "Achieving logarithmic growth of temporal and
// spatial complexity in reverse automatic differentiation", Optim. Methods Softw. 1:35-54, 1992).
//
// ## The executor these schedules drive
//
// A block maps z_0 to z_N by N steps. The executor holds a *current state* (a position `pos` and
// z_pos) and the slots 0..k: slot 0 always holds z_0 (the block input, filled before `forward`
// runs and never stored to, freed or overwritten); slots 1..k hold intermediate states.
//
//   Advance{n}    run n steps without autograd: pos += n.
//   Store{slot}   copy the current state (and pos) into an empty slot 1..k.
//   Restore{slot} current := the slot's state (slot 0..k, must be filled).
//   Reverse{i}    i == pos: re-run step i with autograd from z_i and backpropagate the adjoint of
//                 z_{i+1} into z_i. The current state stays z_i. `i` is carried only for checking.
//   Free{slot}    the slot's state is no longer needed (slot 1..k); release it.
//
// `Schedule::forward` runs in the block's forward pass: it takes pos from 0 to N (its advances
// produce the output z_N) and makes the stores that the backward relies on. `Schedule::backward`
// starts from an arbitrary current state (so it begins with a Restore), reverses the steps N-1,
// N-2, ..., 0 in that order, each exactly once, and ends with every slot but 0 freed. At most k
// slots besides slot 0 are filled at any time.
//
// ## Cost
//
// The cost of a schedule is counted as Revolve counts it: the forward's advances up to N-1 plus
// every advance of the backward (the taped re-runs inside Reverse are not counted; there are
// always N of them). With s snapshots (one of them z_0), Revolve reverses N steps with the
// minimal number of advances
//
//     t(N, s) = r N - beta(s+1, r-1),   beta(s, r) = C(s+r, s),   beta(s, r-1) < N <= beta(s, r)
//
// (r is the "repetition number": no step is advanced more than r times). Revolve reaches t(N, s)
// because its first sweep stops at z_{N-1} and tapes the last step at once, so z_{N-1} never
// needs a slot. Here the forward pass runs to z_N without autograd and the backward runs later,
// so z_{N-1} is gone unless it is stored: with k slots the exact optimum of *this* executor is
//
//     optimal_advances(N, k) = t(N, k+1) + #{ r >= 1 : beta(k+1, r) <= N },
//
// i.e. at most r more than Revolve with s = k+1 (N = 2, k = 0: 2 instead of 1; k = N-2: one
// backward advance instead of none). The tests check it against an exhaustive search over all
// executor programs (N <= 10, k <= 4) and a dynamic program over split points (N <= 1000).
// Memory during the backward: z_0, at most k slots, the current state and one step's graph.
//
// ## The algorithm
//
// With z_a in a slot and c free slots, `revolve` reverses [a, a+l): if l == 1 it reverses the
// step; if c == 0 it restores z_a and advances to a+l-1, then to a+l-2, ... (l(l-1)/2 advances);
// else it advances to a+m, stores z_{a+m}, reverses [a+m, a+l) with c-1 free slots, frees that slot
// and reverses [a, a+m) with c free slots, where m minimises m + t(l-m, c) + t(m, c+1) (Revolve's
// recursion). In the forward pass the advances are free, so the block stores z_m for the m that
// minimises G(N-m, k-1) + t(m, k+1), where G(l, c) = t(l, c+1) - (l-1) + #{r >= 1 : beta(c+1, r)
// <= l} is the backward cost of a block of l steps with c free slots (m = N: no store), and
// recurses on [m, N) with k-1 slots; the backward reverses the segments right to left. Both
// objectives are convex in m (t has nondecreasing increments r), so each split is a binary
// search over closed-form costs: generating a schedule takes O(N log N * r) time and the
// schedule has O(N) actions.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace schedule {

/// What one action of a schedule does (see the header comment for the executor's semantics).
enum class ActionKind : std::uint8_t {
  Advance,  ///< run `arg` >= 1 steps without autograd
  Store,    ///< copy the current state into the empty slot `arg` (1..k)
  Restore,  ///< make the state in the filled slot `arg` (0..k) current
  Reverse,  ///< backpropagate through step `arg` (== the current position)
  Free,     ///< release the filled slot `arg` (1..k)
};

/// One action: a kind and its argument (steps, slot, or the step reversed).
struct Action {
  ActionKind kind = ActionKind::Advance;
  std::int64_t arg = 0;

  static Action advance(std::int64_t steps) { return {ActionKind::Advance, steps}; }
  static Action store(std::int64_t slot) { return {ActionKind::Store, slot}; }
  static Action restore(std::int64_t slot) { return {ActionKind::Restore, slot}; }
  static Action reverse(std::int64_t step) { return {ActionKind::Reverse, step}; }
  static Action free(std::int64_t slot) { return {ActionKind::Free, slot}; }
};

inline bool operator==(const Action& a, const Action& b) {
  return a.kind == b.kind && a.arg == b.arg;
}
inline bool operator!=(const Action& a, const Action& b) {
  return !(a == b);
}

/// A checkpoint schedule for one block: `forward` runs in the block's forward pass (pos 0 -> N),
/// `backward` in its backward pass (reverses steps N-1, ..., 0).
///
/// Example:
/// ```
///   auto s = anode::schedule::binomial_schedule(/*steps=*/8, /*checkpoints=*/2);
///   for (const auto& a : s.forward) { /* advance / store */ }
///   for (const auto& a : s.backward) { /* restore / advance / store / reverse / free */ }
/// ```
struct Schedule {
  std::vector<Action> forward;
  std::vector<Action> backward;
  std::int64_t steps = 0;        ///< N, the number of steps of the block
  std::int64_t checkpoints = 0;  ///< k, the number of slots besides slot 0 the schedule may use
};

namespace detail {

/// Largest number of steps the closed forms accept: every intermediate product then fits int64.
constexpr std::int64_t kMaxSteps = std::int64_t{1} << 31;

struct Repetition {
  std::int64_t r;          ///< smallest r with steps <= beta(s, r)
  std::int64_t beta;       ///< beta(s, r)
  std::int64_t beta_prev;  ///< beta(s, r-1), 0 when r == 0
};

/// The repetition number of `steps` (>= 1) with `snaps` (1 <= snaps <= steps) snapshots. Uses
/// beta(s, r) = beta(s, r-1) (s+r) / r (exact); since beta(s, r-1) < steps <= 2^31 and s + r <=
/// 2^32, the product never overflows. O(r) time, O(1) for one snapshot (r = steps - 1).
inline Repetition repetition(std::int64_t steps, std::int64_t snaps) {
  if (snaps == 1) return steps == 1 ? Repetition{0, 1, 0} : Repetition{steps - 1, steps, steps - 1};
  Repetition rep{0, 1, 0};
  while (rep.beta < steps) {
    ++rep.r;
    rep.beta_prev = rep.beta;
    rep.beta = rep.beta * (snaps + rep.r) / rep.r;
  }
  return rep;
}

/// t(l, s) given l's repetition number: r l - beta(s+1, r-1), where beta(s+1, r-1) =
/// C(s+r, s+1) = C(s+r-1, s) (s+r) / (s+1) = beta(s, r-1) (s+r) / (s+1).
inline std::int64_t revolve_cost(std::int64_t l, std::int64_t s, const Repetition& rep) {
  return rep.r * l - rep.beta_prev * (s + rep.r) / (s + 1);
}

/// t(l, s): Revolve's minimal number of advances to reverse l steps with s >= 1 snapshots, the
/// one holding the segment's first state included, counting the sweep to the last step.
inline std::int64_t revolve_cost(std::int64_t l, std::int64_t s) {
  if (l <= 1) return 0;
  s = std::min(s, l);  // more snapshots than steps are never used; keeps the products small
  return revolve_cost(l, s, repetition(l, s));
}

/// G(l, c): the minimal number of *backward* advances to reverse a block of l steps whose first
/// state is in a slot, with c more slots, when the forward pass (which advances through the whole
/// block anyway) may store states for free but cannot leave the last state in hand.
inline std::int64_t block_cost(std::int64_t l, std::int64_t c) {
  if (l <= 1) return 0;
  const std::int64_t s = std::min(c, l - 1) + 1;
  const Repetition rep = repetition(l, s);
  const std::int64_t binomial_points = rep.beta == l ? rep.r : rep.r - 1;  // #{r>=1: beta <= l}
  return revolve_cost(l, s, rep) - (l - 1) + binomial_points;
}

/// The largest minimiser of a convex function f on the integers [lo, hi].
template <class F>
std::int64_t last_argmin_convex(std::int64_t lo, std::int64_t hi, const F& f) {
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (f(mid + 1) > f(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

inline void check_arguments(std::int64_t steps, std::int64_t checkpoints, const char* where) {
  TORCH_CHECK(steps >= 1 && steps <= kMaxSteps, where, ": steps must be in [1, ", kMaxSteps,
              "], got ", steps);
  TORCH_CHECK(checkpoints >= 0, where, ": checkpoints must be >= 0, got ", checkpoints);
}

/// Emits the actions of a schedule; tracks which position each slot holds and where the current
/// state is, so that a Restore of the state already current is left out.
class Builder {
 public:
  Builder(std::int64_t steps, std::int64_t slots) : slot_pos_(slots + 1, -1) {
    out_.steps = steps;
    slot_pos_[0] = 0;
    for (std::int64_t slot = slots; slot >= 1; --slot) free_.push_back(slot);  // pops 1, 2, ...
  }

  Schedule build(std::int64_t checkpoints) {
    const std::int64_t n = out_.steps;
    out_.checkpoints = checkpoints;
    // Forward: the stores of the first sweep. segments[i] = (first position, slot holding it).
    std::vector<std::pair<std::int64_t, std::int64_t>> segments{{0, 0}};
    std::int64_t a = 0;
    while (!free_.empty() && n - a > 1) {
      const std::int64_t l = n - a;
      const std::int64_t c = static_cast<std::int64_t>(free_.size());
      const std::int64_t m = last_argmin_convex(
          1, l, [&](std::int64_t x) { return block_cost(l - x, c - 1) + revolve_cost(x, c + 1); });
      if (m == l) break;  // storing nothing more is optimal
      a += m;
      out_.forward.push_back(Action::advance(m));
      const std::int64_t slot = take_slot();
      out_.forward.push_back(Action::store(slot));
      slot_pos_[slot] = a;
      segments.emplace_back(a, slot);
    }
    out_.forward.push_back(Action::advance(n - a));
    // Backward: the segments right to left, each reversed with all slots that are free then.
    pos_ = -1;  // the current state is unknown to the backward
    std::int64_t end = n;
    for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
      revolve(it->first, end - it->first, it->second);
      if (it->second != 0) release(it->second);
      end = it->first;
    }
    return std::move(out_);
  }

 private:
  /// Reverses the steps [a, a+l) in reverse order; z_a is in `slot`; uses every free slot.
  void revolve(std::int64_t a, std::int64_t l, std::int64_t slot) {
    while (l > 0) {
      restore(slot);
      const std::int64_t c = static_cast<std::int64_t>(free_.size());
      if (l > 1 && c == 0) {
        advance(l - 1);
      } else if (l > 1) {
        const std::int64_t m = last_argmin_convex(1, l - 1, [&](std::int64_t x) {
          return x + revolve_cost(l - x, c) + revolve_cost(x, c + 1);
        });
        advance(m);
        const std::int64_t inner = take_slot();
        out_.backward.push_back(Action::store(inner));
        slot_pos_[inner] = pos_;
        revolve(a + m, l - m, inner);
        release(inner);
        l = m;
        continue;
      }
      // pos_ == a + l - 1: reverse that step.
      out_.backward.push_back(Action::reverse(pos_));
      --l;
    }
  }

  void advance(std::int64_t n) {
    if (n == 0) return;
    out_.backward.push_back(Action::advance(n));
    pos_ += n;
  }

  void restore(std::int64_t slot) {
    if (pos_ == slot_pos_[slot]) return;  // right after its Store: already current
    out_.backward.push_back(Action::restore(slot));
    pos_ = slot_pos_[slot];
  }

  std::int64_t take_slot() {
    const std::int64_t slot = free_.back();
    free_.pop_back();
    return slot;
  }

  void release(std::int64_t slot) {
    out_.backward.push_back(Action::free(slot));
    slot_pos_[slot] = -1;
    free_.push_back(slot);
  }

  Schedule out_;
  std::vector<std::int64_t> slot_pos_;  // position held by each slot, -1 when empty
  std::vector<std::int64_t> free_;      // free slots (a stack)
  std::int64_t pos_ = 0;                // current position in the backward, -1 unknown
};

}  // namespace detail

/// Griewank & Walther's t(N, s): the minimal number of advances with which Revolve reverses
/// `steps` steps using `snapshots` >= 1 snapshots (z_0's included), counting its first sweep up
/// to step N-1. Reported for comparison; this executor's optimum is `optimal_advances`.
inline std::int64_t revolve_advances(std::int64_t steps, std::int64_t snapshots) {
  detail::check_arguments(steps, snapshots, "revolve_advances");
  TORCH_CHECK(snapshots >= 1, "revolve_advances: snapshots must be >= 1, got ", snapshots);
  return detail::revolve_cost(steps, snapshots);
}

/// The minimal total number of advances of any schedule for this executor with `checkpoints`
/// slots besides z_0: the forward's advances up to step N-1 (N-1 of them) plus the backward's.
/// Equals t(N, k+1) + #{r >= 1 : C(k+1+r, r) <= N}; N-1 exactly when k >= N-1. Closed form,
/// O(r) time, exact for steps <= 2^31.
inline std::int64_t optimal_advances(std::int64_t steps, std::int64_t checkpoints) {
  detail::check_arguments(steps, checkpoints, "optimal_advances");
  return (steps - 1) + detail::block_cost(steps, checkpoints);
}

/// Steps the backward pass of an optimal schedule runs: its advances plus the N taped re-runs
/// (one per Reverse). Multiply by the method's stages for right-hand-side evaluations. Equals
/// `optimal_advances(steps, checkpoints) + 1`, and N when checkpoints >= N-1.
inline std::int64_t backward_rhs_steps(std::int64_t steps, std::int64_t checkpoints) {
  detail::check_arguments(steps, checkpoints, "backward_rhs_steps");
  return detail::block_cost(steps, checkpoints) + steps;
}

/// The binomial schedule for a block of `steps` steps with at most `checkpoints` intermediate
/// states (slots 1..k) kept. Its advances total `optimal_advances(steps, checkpoints)` (counting
/// the forward's up to N-1); it uses at most min(k, N-1) slots besides slot 0. With k = 0 every
/// state is recomputed from z_0 (N(N-1)/2 backward advances); with k >= N-1 the forward stores
/// z_1..z_{N-1} and the backward advances nothing.
inline Schedule binomial_schedule(std::int64_t steps, std::int64_t checkpoints) {
  detail::check_arguments(steps, checkpoints, "binomial_schedule");
  const std::int64_t slots = std::min(checkpoints, steps - 1);
  return detail::Builder(steps, slots).build(checkpoints);
}

/// Advances in a list of actions.
inline std::int64_t count_advances(const std::vector<Action>& actions) {
  std::int64_t n = 0;
  for (const auto& a : actions) {
    if (a.kind == ActionKind::Advance) n += a.arg;
  }
  return n;
}

/// Advances of the forward pass (N for every schedule built here).
inline std::int64_t forward_advances(const Schedule& s) {
  return count_advances(s.forward);
}

/// Advances of the backward pass (recomputed steps; the taped re-runs are not included).
inline std::int64_t backward_advances(const Schedule& s) {
  return count_advances(s.backward);
}

inline std::ostream& operator<<(std::ostream& os, const Action& a) {
  switch (a.kind) {
    case ActionKind::Advance:
      return os << "advance(" << a.arg << ")";
    case ActionKind::Store:
      return os << "store(" << a.arg << ")";
    case ActionKind::Restore:
      return os << "restore(" << a.arg << ")";
    case ActionKind::Reverse:
      return os << "reverse(" << a.arg << ")";
    case ActionKind::Free:
      return os << "free(" << a.arg << ")";
  }
  return os << "?";
}

inline std::string to_string(const Action& a) {
  std::ostringstream os;
  os << a;
  return os.str();
}

/// A readable listing, e.g. for steps = 4, checkpoints = 1:
/// "binomial schedule: 4 steps, 1 checkpoints, 5 advances (optimum 5)
///    forward:  advance(3) store(1) advance(1)
///    backward: restore(1) reverse(3) free(1) restore(0) advance(1) store(1) ..."
inline std::string to_string(const Schedule& s) {
  std::ostringstream os;
  os << "binomial schedule: " << s.steps << " steps, " << s.checkpoints << " checkpoints, "
     << std::max<std::int64_t>(0, forward_advances(s) - 1) + backward_advances(s) << " advances";
  if (s.steps >= 1 && s.steps <= detail::kMaxSteps && s.checkpoints >= 0) {
    os << " (optimum " << optimal_advances(s.steps, s.checkpoints) << ")";
  }
  os << "\n  forward: ";
  for (const auto& a : s.forward) os << " " << a;
  os << "\n  backward:";
  for (const auto& a : s.backward) os << " " << a;
  return os.str();
}

inline std::ostream& operator<<(std::ostream& os, const Schedule& s) {
  return os << to_string(s);
}

}  // namespace schedule
}  // namespace anode
