#pragma once
// The single entry point behind ODEBlock and odeint: validates the call, then hands the solve to
// the gradient strategy the options name.

#include <anode/gradient/adjoint.hpp>
#include <anode/gradient/checkpoint.hpp>
#include <anode/gradient/schedule.hpp>
#include <anode/integrate.hpp>
#include <anode/options.hpp>
#include <anode/system.hpp>
#include <anode/tableau.hpp>

#include <torch/types.h>

namespace anode {
namespace detail {

inline void check_state(const torch::Tensor& z0) {
  TORCH_CHECK(z0.defined(), "anode: the input state is an undefined tensor");
  TORCH_CHECK(at::isFloatingType(z0.scalar_type()),
              "anode: the state must be a floating-point tensor (float, double, half, bfloat16); "
              "got dtype ",
              z0.scalar_type());
}

/// The number of intermediate checkpoints a Gradient::Anode block keeps: 0 means the whole block
/// trajectory during its backward (the paper's scheme), 1..N-1 the binomial schedule.
inline int64_t resolve_checkpoints(const ODEBlockOptions& o, const torch::Tensor& z0) {
  const int64_t n = o.steps();
  int64_t k = o.checkpoints();
  if (o.memory_budget() > 0) {
    const int64_t state_bytes = z0.numel() * static_cast<int64_t>(z0.element_size());
    // One step's graph holds at least its stage derivatives and stage inputs.
    const int64_t step_bytes = 2 * tableau(o.method()).stages() * state_bytes;
    // The whole block's trajectory fits: recompute it once, with no binomial sweeps at all.
    if (o.memory_budget() / n >= step_bytes + state_bytes) return 0;
    k = schedule::checkpoints_for_budget(n, state_bytes, step_bytes, o.memory_budget());
  }
  return (k <= 0 || k >= n) ? 0 : k;
}

}  // namespace detail

/// Solves dz/dt = f(t, z) from t0 to t1 and returns z(t1), differentiated as `options.gradient()`
/// says. `system` names the parameters that need gradients and the buffers to keep consistent.
inline torch::Tensor solve(const System& system, const torch::Tensor& z0,
                           const ODEBlockOptions& options) {
  options.validate();
  detail::check_state(z0);
  Stepper stepper(system.rhs, tableau(options.method()), TimeGrid::from(options),
                  options.check_finite());
  const auto params = system.differentiable_parameters();
  const bool graph_needed =
      torch::GradMode::is_enabled() && (z0.requires_grad() || !params.empty());
  // Without a graph to build (inference, NoGradGuard) every strategy is the plain solve, which
  // keeps nothing beyond the current step.
  if (!graph_needed || options.gradient() == Gradient::Backprop) {
    return stepper.integrate(z0, 0, options.steps());
  }
  if (options.gradient() == Gradient::Anode) {
    auto call = c10::make_intrusive<detail::CheckpointCall>(
        system, std::move(stepper), detail::resolve_checkpoints(options, z0),
        options.keep_forward_checkpoints());
    return CheckpointFunction::apply(z0, at::TensorList(params), call);
  }
  auto call = c10::make_intrusive<detail::AdjointCall>(system, std::move(stepper));
  return AdjointFunction::apply(z0, at::TensorList(params), call);
}

}  // namespace anode
