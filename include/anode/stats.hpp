#pragma once
// What a solve did: right-hand-side evaluations and steps.

#include <cstdint>
#include <ostream>

namespace anode {

/// Counts of one solve (`ODEBlockImpl::stats()`, or `odeint`'s optional argument).
struct SolveStats {
  int64_t forward_evaluations = 0;   ///< RHS evaluations in the forward pass (trial steps too)
  int64_t backward_evaluations = 0;  ///< RHS evaluations in the backward pass (0 until it ran)
  int64_t accepted_steps = 0;        ///< steps taken (every step of a fixed-step method)
  int64_t rejected_steps = 0;        ///< trial steps an adaptive method rejected
};

inline std::ostream& operator<<(std::ostream& os, const SolveStats& s) {
  return os << "forward_evaluations=" << s.forward_evaluations
            << ", backward_evaluations=" << s.backward_evaluations
            << ", accepted_steps=" << s.accepted_steps << ", rejected_steps=" << s.rejected_steps;
}

}  // namespace anode
