#pragma once
// Choosing the checkpoints of a Gradient::Anode block from a byte budget for its backward pass.
//
// What one step's graph costs depends on the right-hand side (a conv-BN-ReLU-conv RK2 step saves
// about eight states, an MLP step a few hidden layers), so it is measured, not modelled: the
// forward pass runs one step with autograd on and backpropagates through it under the memory meter
// (see CheckpointFunction), and these pure functions turn the measurement into a plan.

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace anode {
namespace detail {

/// Measured and counted sizes, in bytes, of one block's backward pass.
struct StepCost {
  int64_t state = 0;         ///< one state tensor
  int64_t graph = 0;         ///< live after one step's forward with autograd (its graph + output)
  int64_t peak = 0;          ///< peak of one step's forward and backward (graph, gradients, temps)
  int64_t accumulators = 0;  ///< the running adjoint and the parameter-gradient sums
  int64_t slot = 0;          ///< one checkpoint: a state, its RNG states and buffer copies
};

/// Upper bound on what the backward of an N-step block allocates above what is live when it
/// starts, with k binomial checkpoints (k = 0: the whole block's trajectory at once).
inline int64_t backward_bytes(const StepCost& c, int64_t steps, int64_t k) {
  if (k == 0) return steps * c.graph + (c.peak - c.graph) + c.accumulators + c.slot;
  // k slots, the current state, one step's forward and backward, the accumulators, and the
  // snapshot of the world (RNG, buffers) taken before each reversed step.
  return k * c.slot + c.state + c.peak + c.accumulators + c.slot;
}

/// The checkpoints whose backward fits in `budget` bytes: 0 (the whole block) when its trajectory
/// fits, else the most binomial checkpoints that fit. Raises, naming the budget and the bytes
/// needed, when not even one checkpoint fits.
inline int64_t checkpoints_within(const StepCost& c, int64_t steps, int64_t budget) {
  TORCH_CHECK(steps >= 1, "anode: internal error: checkpoints_within for ", steps, " steps");
  if (backward_bytes(c, steps, 0) <= budget) return 0;
  const int64_t least = steps == 1 ? backward_bytes(c, steps, 0) : backward_bytes(c, steps, 1);
  TORCH_CHECK(steps > 1 && least <= budget, "anode: ODEBlockOptions::memory_budget of ", budget,
              " bytes is too small for this ODE block: measured, one step's forward and backward "
              "take ",
              c.peak, " bytes, a state ", c.state, " bytes and the gradient accumulators ",
              c.accumulators, " bytes, so its backward needs at least ", least,
              " bytes (with one checkpoint). Raise memory_budget to at least ", least,
              " bytes, or set checkpoints explicitly");
  const int64_t fixed = c.state + c.peak + c.accumulators + c.slot;
  const int64_t k = (budget - fixed) / std::max<int64_t>(c.slot, 1);
  return std::clamp<int64_t>(k, 1, steps - 1);
}

}  // namespace detail
}  // namespace anode
