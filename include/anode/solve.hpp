#pragma once
// The single entry point behind ODEBlock and odeint: validates the call, then hands the solve to
// the gradient strategy the options name.

#include <anode/detail/graph.hpp>
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
    torch::Tensor zN = stepper.integrate(z0, 0, options.steps());
    // Nothing anode knows of requires grad, yet the output does: the right-hand side reads a
    // tensor requiring grad that is not a parameter of the solve. Backprop differentiates it
    // through this graph; Anode and Adjoint would drop it as soon as the input requires grad.
    if (options.gradient() != Gradient::Backprop && zN.requires_grad()) {
      detail::check_no_foreign_leaf({zN}, {z0}, to_string(options.gradient()));
    }
    return zN;
  }
  if (options.gradient() == Gradient::Anode) {
    auto call = c10::make_intrusive<detail::CheckpointCall>(system, std::move(stepper), options,
                                                            z0.device());
    return CheckpointFunction::apply(z0, at::TensorList(params), call);
  }
  auto call = c10::make_intrusive<detail::AdjointCall>(system, std::move(stepper));
  return AdjointFunction::apply(z0, at::TensorList(params), call);
}

}  // namespace anode
