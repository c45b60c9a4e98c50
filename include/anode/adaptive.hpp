#pragma once
// The adaptive integration loop: an embedded Runge-Kutta pair with PI step-size control, steps
// clipped to land exactly on the end of each output interval. Generic over the state (a tensor,
// or the Adjoint's list of tensors), like rk_step.
//
// Step-size control is not differentiated: the error estimate and the norm are computed without a
// graph, and the accepted times are constants of the discrete solve (as in torchdiffeq). Each
// accepted step is h = t_new - t, the exact difference of two representable times, so replaying
// the recorded grid with the fixed-step Stepper repeats every accepted step bit for bit.

#include <anode/integrate.hpp>
#include <anode/stats.hpp>
#include <anode/tableau.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <vector>

namespace anode {

/// The tolerances and limits of an adaptive solve.
struct AdaptiveControl {
  double rtol = 1e-7;
  double atol = 1e-9;
  int64_t max_steps = 100000;  ///< trial steps (accepted + rejected) over the whole solve
  double first_step = 0.0;     ///< 0: Hairer's starting-step heuristic
};

/// What carries over from one output interval to the next: the proposed step, the controller's
/// memory, the step count, and the start time of the whole solve (for messages).
struct AdaptiveCarry {
  double h_next = 0.0;    ///< proposed |h| for the next step; 0 before the first
  double err_old = 1e-4;  ///< the previous accepted error ratio (PI control)
  int64_t trials = 0;
  double t_start = 0.0;
  SolveStats* stats = nullptr;
};

namespace detail {

/// One solve's adaptive state, shared by the per-interval gradient Functions of a trajectory: the
/// controls, what carries over between intervals, and the FSAL stage carried in forward.
struct AdaptiveSession {
  AdaptiveControl control;
  AdaptiveCarry carry;
  torch::Tensor k;
  bool have_k = false;
};

inline double rms_ratio(const torch::Tensor& err, const torch::Tensor& y0, const torch::Tensor& y1,
                        double rtol, double atol) {
  torch::NoGradGuard no_grad;
  const auto scale = torch::maximum(y0.detach().abs(), y1.detach().abs()).mul(rtol).add(atol);
  return err.detach().div(scale).pow(2).mean().sqrt().item<double>();
}
inline double rms_ratio(const std::vector<torch::Tensor>& err, const std::vector<torch::Tensor>& y0,
                        const std::vector<torch::Tensor>& y1, double rtol, double atol) {
  double worst = 0.0;  // the mixed norm of torchdiffeq: the largest RMS over the components
  for (std::size_t i = 0; i < err.size(); ++i) {
    if (err[i].numel() == 0) continue;
    worst = std::max(worst, rms_ratio(err[i], y0[i], y1[i], rtol, atol));
  }
  return worst;
}

inline torch::Tensor scaled(const torch::Tensor& x, double a) {
  return x.mul(a);
}
inline std::vector<torch::Tensor> scaled(const std::vector<torch::Tensor>& x, double a) {
  std::vector<torch::Tensor> out;
  out.reserve(x.size());
  for (const auto& t : x) out.push_back(t.mul(a));
  return out;
}
inline torch::Tensor difference(const torch::Tensor& a, const torch::Tensor& b) {
  return a - b;
}
inline std::vector<torch::Tensor> difference(const std::vector<torch::Tensor>& a,
                                             const std::vector<torch::Tensor>& b) {
  std::vector<torch::Tensor> out;
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out.push_back(a[i] - b[i]);
  return out;
}
inline bool err_defined(const torch::Tensor& t) {
  return t.defined();
}
inline bool err_defined(const std::vector<torch::Tensor>& t) {
  return !t.empty();
}
inline torch::Tensor detached(const torch::Tensor& x) {
  return x.detach();
}
inline std::vector<torch::Tensor> detached(const std::vector<torch::Tensor>& x) {
  std::vector<torch::Tensor> out;
  out.reserve(x.size());
  for (const auto& t : x) out.push_back(t.detach());
  return out;
}

}  // namespace detail

/// Integrates from (t0, z) to t1 with the embedded pair `tab`, returning z(t1). Appends every
/// accepted time after t0 to `times` (if given). `k_first` carries f(t, z) between calls for FSAL
/// methods (undefined: evaluate it). Raises, naming t and h, on max_steps, step underflow, or a
/// non-finite error estimate.
template <typename State, typename F>
State adaptive_integrate(const ButcherTableau& tab, F&& f, State z, double t0, double t1,
                         const AdaptiveControl& ctl, AdaptiveCarry& carry,
                         std::vector<double>* times, State& k_first, bool& have_k_first) {
  TORCH_CHECK(tab.adaptive(), "anode: internal error: adaptive_integrate with '", tab.name,
              "', which has no embedded weights");
  const double dir = t1 > t0 ? 1.0 : -1.0;
  const int q = std::min(tab.order, tab.embedded_order) + 1;  // order of the error estimate
  const double beta = 0.2 / q;
  const double alpha = 1.0 / q - 0.75 * beta;
  const double safety = 0.9;
  const bool fsal = tab.fsal();
  std::vector<double> e(tab.b.size());
  for (std::size_t i = 0; i < e.size(); ++i) e[i] = tab.b[i] - tab.b_embedded[i];

  if (carry.h_next <= 0.0) {
    // The first step: given, or Hairer's heuristic (Hairer, Norsett & Wanner, Solving ODEs I,
    // II.4), as torchdiffeq's _select_initial_step.
    if (ctl.first_step > 0.0) {
      carry.h_next = ctl.first_step;
    } else {
      if (!have_k_first) {
        k_first = f(t0, z);
        have_k_first = true;
      }
      const State zero = detail::scaled(z, 0.0);
      const double d0 = detail::rms_ratio(z, zero, z, ctl.rtol, ctl.atol);
      const double d1 = detail::rms_ratio(k_first, zero, z, ctl.rtol, ctl.atol);
      const double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
      State z1;
      {
        torch::NoGradGuard no_grad;
        z1 = detail::axpy(detail::detached(z), dir * h0, detail::detached(k_first));
      }
      State f1;
      {
        torch::NoGradGuard no_grad;
        f1 = f(t0 + dir * h0, z1);
      }
      const double d2 = detail::rms_ratio(detail::difference(f1, detail::detached(k_first)), zero,
                                          z, ctl.rtol, ctl.atol) /
                        h0;
      const double h1 = (std::max(d1, d2) <= 1e-15)
                            ? std::max(1e-6, h0 * 1e-3)
                            : std::pow(0.01 / std::max(d1, d2), 1.0 / (tab.embedded_order + 1));
      carry.h_next = std::min(100.0 * h0, h1);
    }
  }

  double t = t0;
  std::vector<State> stages;
  if (fsal && !have_k_first) {
    // Evaluated once here, so a rejected first trial does not evaluate it again.
    k_first = f(t0, z);
    have_k_first = true;
  }
  while (t != t1) {
    const double h = carry.h_next;
    double t_new = t + dir * h;
    const bool clipped = (t_new - t1) * dir >= 0.0;
    if (clipped) t_new = t1;
    const double step = t_new - t;  // exact: the recorded grid repeats this step
    TORCH_CHECK(step != 0.0 && std::abs(step) > 16.0 * std::numeric_limits<double>::epsilon() *
                                                    std::max(std::abs(t), 1e-300),
                "anode: the adaptive step size underflowed at t = ", std::setprecision(17), t,
                " (h = ", std::setprecision(6), dir * h,
                "): the solution is too stiff or singular for rtol = ", ctl.rtol,
                " and atol = ", ctl.atol, "; loosen them or check the right-hand side");
    ++carry.trials;
    TORCH_CHECK(carry.trials <= ctl.max_steps, "anode: ODEBlockOptions::max_steps (", ctl.max_steps,
                ") exceeded at t = ", std::setprecision(17), t, std::setprecision(6),
                " (integrating from ", carry.t_start, ", current interval ending at ", t1,
                "; accepted ", carry.stats ? carry.stats->accepted_steps : -1, " steps, rejected ",
                carry.stats ? carry.stats->rejected_steps : -1, ", step size ", step,
                "); raise max_steps or loosen rtol/atol");
    State y_new = rk_step(tab, f, t, step, z, (fsal && have_k_first) ? &k_first : nullptr, &stages);
    State err;
    double ratio = 0.0;
    {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < e.size(); ++i) {
        if (e[i] == 0.0) continue;
        err = detail::err_defined(err) ? detail::axpy(err, step * e[i], detail::detached(stages[i]))
                                       : detail::scaled(detail::detached(stages[i]), step * e[i]);
      }
      ratio = detail::err_defined(err) ? detail::rms_ratio(err, z, y_new, ctl.rtol, ctl.atol) : 0.0;
    }
    TORCH_CHECK(std::isfinite(ratio),
                "anode: the error estimate is not finite (NaN or Inf) at t = ",
                std::setprecision(17), t, std::setprecision(6), " (step ", step,
                "): the right-hand side returned a non-finite value");
    if (ratio <= 1.0) {
      z = std::move(y_new);
      t = t_new;
      if (times != nullptr) times->push_back(t);
      if (fsal) {
        k_first = stages.back();
        have_k_first = true;
      } else {
        have_k_first = false;
      }
      if (carry.stats) ++carry.stats->accepted_steps;
      const double factor =
          ratio == 0.0
              ? 10.0
              : std::clamp(safety * std::pow(ratio, -alpha) * std::pow(carry.err_old, beta), 0.2,
                           10.0);
      carry.err_old = std::max(ratio, 1e-4);
      carry.h_next = std::abs(step) * factor;
      if (clipped) carry.h_next = std::max(carry.h_next, h);  // clipping is not a reason to shrink
    } else {
      if (carry.stats) ++carry.stats->rejected_steps;
      const double factor = std::max(0.2, safety * std::pow(ratio, -alpha));
      carry.h_next = std::abs(step) * std::min(1.0, factor);
    }
  }
  return z;
}

}  // namespace anode
