#pragma once
// Choosing the checkpoints of a Gradient::Anode block from a byte budget for its backward pass
// (ODEBlockOptions::memory_budget): measuring one step, then planning from the measurement.
//
// What one step's graph costs depends on the right-hand side (a conv-BN-ReLU-conv RK2 step saves
// about eight states, an MLP step a few hidden layers), so it is measured, not modelled: the
// forward pass runs one step with autograd on and backpropagates through it under the memory meter
// (measure_step_cost), and pure functions turn the measurement into a plan (checkpoints_within).
// A budget planned across the blocks of a network would take the per-block StepCost the same way.
//
// Why the CPU meter must be installed by the program (check_budget_meter raises otherwise), not by
// anode nor replaced by another measurement:
// - Installing it from inside a forward pass would replace the process-wide CPU allocator behind
//   the program's back (irreversibly, over any allocator the program set, adding a header to every
//   later allocation). Where a process's allocator comes from is the program's decision.
// - Without the meter, nothing in LibTorch's C++ API sees a step's memory exactly: the saved
//   tensors of an autograd graph cannot be enumerated from C++ (saved-tensor hooks are
//   Python-only in LibTorch 1.13), and the profiler's allocation reports need a thread-local
//   reporter in the profiler's own slot (undefined behaviour under an active profiler; frees on
//   other threads are missed), which would make the plan approximate. A plan that underestimates
//   breaks the budget silently; one error at the first forward pass, saying what to call, costs
//   one line in main().
// CUDA needs no installing: the caching allocator's own statistics measure the step.

#include <anode/detail/autocast.hpp>
#include <anode/detail/meter.hpp>
#include <anode/detail/rng.hpp>
#include <anode/integrate.hpp>
#include <anode/system.hpp>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace anode {
namespace detail {

/// Measured and counted sizes, in bytes, of one block's backward pass.
struct StepCost {
  int64_t state = 0;         ///< one state tensor
  int64_t graph = 0;         ///< live after one step's forward with autograd (its graph + output)
  int64_t forward_peak = 0;  ///< peak of that forward (the graph and the temporaries beside it)
  int64_t peak = 0;          ///< peak of one step's forward and backward (graph, gradients, temps)
  int64_t accumulators = 0;  ///< the running adjoint and the parameter-gradient sums
  int64_t slot = 0;          ///< one checkpoint: a state, its RNG states and buffer copies
  int64_t incoming = 0;      ///< the gradient the measurement fed its backward (in `peak`)
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

inline int64_t tensor_bytes(const std::vector<torch::Tensor>& ts) {
  int64_t n = 0;
  for (const auto& t : ts) {
    if (t.defined()) n += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return n;
}

/// Raises unless a step on `device` can be measured for a memory_budget of `budget` bytes: on the
/// CPU, the program must have installed the CPU meter (see the top of this file for why anode does
/// not install it).
inline void check_budget_meter(const c10::Device& device, int64_t budget) {
  TORCH_CHECK(!device.is_cpu() || memory::detail::cpu_meter_installed(),
              "anode: ODEBlockOptions::memory_budget(", budget,
              ") measures one step's memory on the CPU with anode's CPU memory meter, which is "
              "not installed. Call anode::memory::install_cpu_meter() (#include "
              "<anode/memory.hpp>) first thing in main(), before tensors are allocated: it "
              "replaces the process-wide CPU allocator, so anode does not install it for you. Or "
              "set checkpoints(k) instead of a memory_budget");
}

/// Measures one step's forward and backward from the block input `z0` under the forward's autocast
/// state, and counts what a checkpoint and the gradient accumulators take (`rng`: the generator
/// states a checkpoint stores, empty when nothing is replayed). The step draws random numbers and
/// updates buffers like any step: the caller puts the world back before the block's solve.
inline StepCost measure_step_cost(const Stepper& stepper, const System& system,
                                  const AutocastState& autocast, const RngState& rng,
                                  const torch::Tensor& z0) {
  const c10::Device device = z0.device();
  StepCost cost;
  cost.state = z0.numel() * static_cast<int64_t>(z0.element_size());
  const auto need = system.differentiable_parameters();
  cost.accumulators = cost.state + 2 * tensor_bytes(need);
  const int64_t rng_bytes = rng.empty() ? 0 : tensor_bytes([&] {
    std::vector<torch::Tensor> ts;
    for (const auto& [g, s] : rng.states()) ts.push_back(s);
    return ts;
  }());
  cost.slot = cost.state + rng_bytes + (system.training ? tensor_bytes(system.buffers) : 0);
  memory::detail::PeakScope scope(device);
  AutocastGuard recompute(autocast, AutocastGuard::Purpose::Recompute);
  torch::AutoGradMode enable(true);
  torch::Tensor zi = z0.detach().requires_grad_(true);
  torch::Tensor next = stepper.step(0, zi);
  cost.graph = scope.current_bytes();
  cost.forward_peak = scope.peak_bytes();
  if (next.requires_grad()) {
    cost.incoming = next.numel() * static_cast<int64_t>(next.element_size());
    std::vector<torch::Tensor> inputs{zi};
    inputs.insert(inputs.end(), need.begin(), need.end());
    torch::autograd::grad({next}, inputs, {torch::ones_like(next)}, /*retain_graph=*/false,
                          /*create_graph=*/false, /*allow_unused=*/true);
  }
  cost.peak = scope.peak_bytes();
  return cost;
}

/// The checkpoints of a block whose backward must fit in `budget` bytes, from one measured step.
inline int64_t checkpoints_for_budget(const Stepper& stepper, const System& system,
                                      const AutocastState& autocast, const RngState& rng,
                                      const torch::Tensor& z0, int64_t budget) {
  check_budget_meter(z0.device(), budget);
  const StepCost cost = measure_step_cost(stepper, system, autocast, rng, z0);
  return checkpoints_within(cost, stepper.grid().steps, budget);
}

}  // namespace detail
}  // namespace anode
