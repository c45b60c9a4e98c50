#pragma once
// The single entry point behind ODEBlock and odeint: validates the call, then hands the solve to
// the gradient strategy the options name, one output interval at a time.
//
// A trajectory z(t_0), z(t_1), ..., z(t_{T-1}) is a chain of interval solves: interval i maps
// z(t_i) to z(t_{i+1}) and is its own autograd node (a CheckpointFunction for Anode, an
// AdjointFunction for Adjoint). Autograd then does what a trajectory loss needs: the gradient
// arriving at z(t_{i+1}) is the output's own gradient plus what flows back from later intervals
// (torchdiffeq's "jumps" at output times), and each interval recomputes only its own steps.

#include <anode/adaptive.hpp>
#include <anode/detail/graph.hpp>
#include <anode/gradient/adjoint.hpp>
#include <anode/gradient/checkpoint.hpp>
#include <anode/gradient/planned_keep.hpp>
#include <anode/integrate.hpp>
#include <anode/options.hpp>
#include <anode/stats.hpp>
#include <anode/system.hpp>
#include <anode/tableau.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

inline void check_state(const torch::Tensor& z0) {
  TORCH_CHECK(z0.defined(), "anode: the input state is an undefined tensor");
  TORCH_CHECK(at::isFloatingType(z0.scalar_type()),
              "anode: the state must be a floating-point tensor (float, double, half, bfloat16); "
              "got dtype ",
              z0.scalar_type());
}

/// The output times of a trajectory solve, checked: 1-D, floating, at least 2, finite, strictly
/// monotone.
inline std::vector<double> output_times(const torch::Tensor& t) {
  TORCH_CHECK(t.defined(), "anode::odeint: the output times t are an undefined tensor");
  TORCH_CHECK(t.dim() == 1, "anode::odeint: the output times t must be a 1-D tensor, got ", t.dim(),
              "-D with shape ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()),
              "anode::odeint: the output times t must be a floating tensor, got dtype ",
              t.scalar_type());
  TORCH_CHECK(t.size(0) >= 2, "anode::odeint: the output times t need at least 2 entries, got ",
              t.size(0));
  const torch::Tensor host = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = host.data_ptr<double>();
  std::vector<double> ts(p, p + host.numel());
  for (std::size_t i = 0; i < ts.size(); ++i) {
    TORCH_CHECK(std::isfinite(ts[i]), "anode::odeint: t[", i, "] = ", ts[i], " is not finite");
  }
  const double dir = ts[1] > ts[0] ? 1.0 : -1.0;
  for (std::size_t i = 0; i + 1 < ts.size(); ++i) {
    TORCH_CHECK((ts[i + 1] - ts[i]) * dir > 0.0,
                "anode::odeint: the output times t must be strictly ",
                dir > 0 ? "increasing" : "decreasing", ", but t[", i, "] = ", ts[i], " and t[",
                i + 1, "] = ", ts[i + 1]);
  }
  return ts;
}

/// The fixed steps of an interval [ta, tb]: `steps`, or with a step_size the fewest equal steps
/// no longer than it.
inline int64_t interval_steps(const ODEBlockOptions& o, double ta, double tb) {
  if (o.step_size() <= 0.0) return o.steps();
  const double len = std::abs(tb - ta);
  auto n = static_cast<int64_t>(std::ceil(len / o.step_size()));
  n = std::max<int64_t>(n, 1);
  if (n > 1 && len / static_cast<double>(n - 1) <= o.step_size()) --n;  // ceil's round-off
  return n;
}

/// One solve: the system, its options and what its intervals share (the evaluation counter and,
/// for an adaptive method, the step controller's state).
class Solve {
 public:
  Solve(const System& system, const ODEBlockOptions& options, std::shared_ptr<EvalCounter> counter)
      : system_(system),
        options_(options),
        tab_(options.effective_tableau()),
        counter_(counter ? std::move(counter) : std::make_shared<EvalCounter>()),
        params_(system.differentiable_parameters()) {
    if (tab_.adaptive()) {
      session_ = std::make_shared<AdaptiveSession>();
      session_->control = {options.rtol(), options.atol(), options.max_steps(),
                           options.first_step()};
      session_->carry.stats = counter_->stats.get();
    }
  }

  /// z(tb) from z(ta) = z, differentiated as the options say.
  torch::Tensor interval(const torch::Tensor& z, double ta, double tb) {
    if (session_ && first_) session_->carry.t_start = ta;
    first_ = false;
    const int64_t n = tab_.adaptive() ? 1 : interval_steps(options_, ta, tb);
    Stepper stepper(system_.rhs, tab_, TimeGrid{ta, tb, n}, options_.check_finite(), counter_);
    const bool graph_needed =
        torch::GradMode::is_enabled() && (z.requires_grad() || !params_.empty());
    // Without a graph to build (inference, NoGradGuard) every strategy is the plain solve, which
    // keeps nothing beyond the current step.
    if (!graph_needed || options_.gradient() == Gradient::Backprop) {
      torch::Tensor out = plain(stepper, z, ta, tb);
      // Nothing anode knows of requires grad, yet the output does: the right-hand side reads a
      // tensor requiring grad that is not a parameter of the solve. Backprop differentiates it
      // through this graph; Anode and Adjoint would drop it as soon as the input requires grad.
      if (options_.gradient() != Gradient::Backprop && out.requires_grad()) {
        check_no_foreign_leaf({out}, {z}, to_string(options_.gradient()));
      }
      return out;
    }
    if (!tab_.adaptive()) counter_->stats->accepted_steps += n;
    if (options_.gradient() == Gradient::Anode) {
      std::shared_ptr<PlanTicket> ticket;
      if (const auto& memory_plan = options_.memory_plan()) {
        // The plan decides this call; a graph it keeps is Backprop's, run by the engine itself
        // (gradient/planned_keep.hpp), so that a step keeping every graph is Backprop's step.
        ticket = memory_plan->begin_forward(
            plan_call_key(z, system_.training, tab_.adaptive(), n, tab_.name, params_.size()));
        if (!ticket->calibrating && ticket->decision.choice == plan::Choice::Keep) {
          return run_kept_in_engine(stepper, z, params_, n, memory_plan, std::move(ticket));
        }
      }
      auto call = c10::make_intrusive<CheckpointCall>(system_, std::move(stepper), options_,
                                                      z.device(), session_);
      call->record.ticket = std::move(ticket);
      return CheckpointFunction::apply(z, at::TensorList(params_), call);
    }
    auto call = c10::make_intrusive<AdjointCall>(system_, std::move(stepper));
    call->adaptive = session_;
    return AdjointFunction::apply(z, at::TensorList(params_), call);
  }

  const std::shared_ptr<EvalCounter>& counter() const { return counter_; }

 private:
  torch::Tensor plain(const Stepper& stepper, const torch::Tensor& z, double ta, double tb) {
    if (!tab_.adaptive()) {
      counter_->stats->accepted_steps += stepper.grid().steps;
      return stepper.integrate(z, 0, stepper.grid().steps);
    }
    const auto f = [&stepper](double t, const torch::Tensor& x) { return stepper.eval(t, x); };
    return adaptive_integrate(tab_, f, z, ta, tb, session_->control, session_->carry, nullptr,
                              session_->k, session_->have_k);
  }

  const System& system_;
  const ODEBlockOptions& options_;
  const ButcherTableau& tab_;
  std::shared_ptr<EvalCounter> counter_;
  std::vector<torch::Tensor> params_;
  std::shared_ptr<AdaptiveSession> session_;
  bool first_ = true;
};

}  // namespace detail

/// Solves dz/dt = f(t, z) from t0 to t1 and returns z(t1), differentiated as `options.gradient()`
/// says. `system` names the parameters that need gradients and the buffers to keep consistent.
/// `counter` (optional) receives the solve's statistics, backward ones once backward has run.
inline torch::Tensor solve(const System& system, const torch::Tensor& z0,
                           const ODEBlockOptions& options,
                           std::shared_ptr<EvalCounter> counter = nullptr) {
  options.validate();
  detail::check_state(z0);
  detail::Solve s(system, options, std::move(counter));
  return s.interval(z0, options.t0(), options.t1());
}

/// Solves dz/dt = f(t, z) with z(t[0]) = z0 and returns the solution at every output time:
/// shape [t.size(0), z0.sizes()...], out[0] == z0 (torchdiffeq's convention). Every output time is
/// hit exactly (no interpolation); each interval is differentiated as `options.gradient()` says.
inline torch::Tensor solve_trajectory(const System& system, const torch::Tensor& z0,
                                      const torch::Tensor& t, const ODEBlockOptions& options,
                                      std::shared_ptr<EvalCounter> counter = nullptr) {
  options.validate();
  detail::check_state(z0);
  const auto ts = detail::output_times(t);
  detail::Solve s(system, options, std::move(counter));
  std::vector<torch::Tensor> out{z0};
  out.reserve(ts.size());
  for (std::size_t i = 0; i + 1 < ts.size(); ++i)
    out.push_back(s.interval(out.back(), ts[i], ts[i + 1]));
  return torch::stack(out);
}

}  // namespace anode
