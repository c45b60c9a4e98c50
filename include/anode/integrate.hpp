#pragma once
// The fixed-step integration loop, independent of the method (a Butcher tableau) and of how the
// loop is differentiated (see gradient/). In the style of boost::odeint: a stepper does one step,
// the integrator loops and calls an observer; time is t0 + n*h, never accumulated.

#include <anode/detail/rhs.hpp>
#include <anode/options.hpp>
#include <anode/stats.hpp>
#include <anode/tableau.hpp>

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace anode {

namespace detail {

// y + alpha * x for the two kinds of state the steppers handle: one tensor (the ODE state) and a
// list of tensors (the adjoint's augmented state).
inline torch::Tensor axpy(const torch::Tensor& y, double alpha, const torch::Tensor& x) {
  return y.add(x, alpha);
}
inline std::vector<torch::Tensor> axpy(const std::vector<torch::Tensor>& y, double alpha,
                                       const std::vector<torch::Tensor>& x) {
  std::vector<torch::Tensor> out;
  out.reserve(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) out.push_back(y[i].add(x[i], alpha));
  return out;
}

}  // namespace detail

/// One explicit Runge-Kutta step of size h from (t, z): the generic tableau loop. `State` is a
/// tensor or a list of tensors; `f(t, state)` returns the derivative in the same form.
///
/// `first` (optional) is f(t, z) when the caller already has it (the last stage of the previous
/// step of a FSAL method); `stages` (optional) receives every stage's derivative, for an error
/// estimate or the next step's first stage.
template <typename State, typename F>
State rk_step(const ButcherTableau& tab, F&& f, double t, double h, const State& z,
              const State* first = nullptr, std::vector<State>* stages = nullptr) {
  const auto s = static_cast<std::size_t>(tab.stages());
  std::vector<State> local;
  std::vector<State>& k = stages != nullptr ? *stages : local;
  k.clear();
  k.reserve(s);
  for (std::size_t i = 0; i < s; ++i) {
    if (i == 0 && first != nullptr) {
      k.push_back(*first);
      continue;
    }
    State zi = z;
    for (std::size_t j = 0; j < i; ++j) {
      if (tab.a[i][j] != 0.0) zi = detail::axpy(zi, h * tab.a[i][j], k[j]);
    }
    k.push_back(f(t + tab.c[i] * h, zi));
  }
  State out = z;
  for (std::size_t i = 0; i < s; ++i) {
    if (tab.b[i] != 0.0) out = detail::axpy(out, h * tab.b[i], k[i]);
  }
  return out;
}

/// The time grid of one solve: uniform, t_n = t0 + n * (t1 - t0) / N, or the explicit list of
/// times an adaptive solve accepted (then t_n = times[n] and h_n = times[n+1] - times[n], exactly
/// the step the adaptive solve took, so a recompute on this grid repeats it bit for bit).
struct TimeGrid {
  TimeGrid(double t0_ = 0.0, double t1_ = 1.0, int64_t steps_ = 1)
      : t0(t0_), t1(t1_), steps(steps_) {}

  double t0;
  double t1;
  int64_t steps;
  std::shared_ptr<const std::vector<double>> times;  // explicit grid; null: uniform

  static TimeGrid from(const ODEBlockOptions& o) { return {o.t0(), o.t1(), o.steps()}; }
  static TimeGrid explicit_times(std::vector<double> ts) {
    TORCH_CHECK(ts.size() >= 2, "anode: internal error: a time grid needs two times");
    TimeGrid g{ts.front(), ts.back(), static_cast<int64_t>(ts.size()) - 1};
    g.times = std::make_shared<const std::vector<double>>(std::move(ts));
    return g;
  }
  /// The uniform step (t1 - t0) / N.
  double h() const { return (t1 - t0) / static_cast<double>(steps); }
  /// The size of step n (from t_n to t_{n+1}).
  double h(int64_t n) const {
    if (times)
      return (*times)[static_cast<std::size_t>(n + 1)] - (*times)[static_cast<std::size_t>(n)];
    return h();
  }
  double time(int64_t n) const {
    if (times) return (*times)[static_cast<std::size_t>(n)];
    return n == steps ? t1 : t0 + static_cast<double>(n) * h();
  }
};

/// Counts right-hand-side evaluations (and steps) of one solve, for `SolveStats`. The gradient
/// strategies switch it to counting backward evaluations while their backward runs.
struct EvalCounter {
  explicit EvalCounter(std::shared_ptr<SolveStats> s = nullptr)
      : stats(s ? std::move(s) : std::make_shared<SolveStats>()) {}
  std::shared_ptr<SolveStats> stats;  // shared with the caller, who may read it after backward
  bool in_backward = false;
  void count() { ++(in_backward ? stats->backward_evaluations : stats->forward_evaluations); }
};

/// RAII: counts evaluations as backward ones while it lives.
class BackwardCounting {
 public:
  explicit BackwardCounting(const std::shared_ptr<EvalCounter>& c) : c_(c) {
    if (c_) c_->in_backward = true;
  }
  ~BackwardCounting() {
    if (c_) c_->in_backward = false;
  }
  BackwardCounting(const BackwardCounting&) = delete;
  BackwardCounting& operator=(const BackwardCounting&) = delete;

 private:
  std::shared_ptr<EvalCounter> c_;
};

/// Steps the ODE z' = f(t, z) on a time grid with one method: the unit every gradient strategy
/// calls, so forward, recompute and adjoint all take bit-identical steps.
class Stepper {
 public:
  Stepper(RHS f, const ButcherTableau& tab, TimeGrid grid, bool check_finite = false,
          std::shared_ptr<EvalCounter> counter = nullptr)
      : f_(std::move(f)),
        tab_(&tab),
        grid_(std::move(grid)),
        check_finite_(check_finite),
        counter_(std::move(counter)) {}

  /// f(t, z), checked (output, input left alone) and counted.
  torch::Tensor eval(double t, const torch::Tensor& z) const {
    if (counter_) counter_->count();
    return detail::call_rhs(f_, t, z);
  }

  /// z_{n+1} from z_n. `first`: f(t_n, z_n) if known (FSAL); `last`: receives the last stage.
  torch::Tensor step(int64_t n, const torch::Tensor& z, const torch::Tensor* first = nullptr,
                     torch::Tensor* last = nullptr) const {
    const auto f = [this](double t, const torch::Tensor& x) { return eval(t, x); };
    std::vector<torch::Tensor> stages;
    torch::Tensor next =
        rk_step(*tab_, f, grid_.time(n), grid_.h(n), z, first, last != nullptr ? &stages : nullptr);
    if (last != nullptr) *last = stages.back();
    if (check_finite_) {
      // One host sync per step: opt-in only.
      TORCH_CHECK(torch::isfinite(next).all().item<bool>(),
                  "anode: non-finite value (NaN or Inf) in the state after step ", n + 1, " of ",
                  grid_.steps, " (t = ", grid_.time(n + 1), ")");
    }
    return next;
  }

  /// z_end from z_begin, stepping n = begin .. end-1. `observer(n + 1, z)` sees every new state.
  /// A FSAL method reuses each step's last stage as the next step's first.
  template <typename Observer>
  torch::Tensor integrate(torch::Tensor z, int64_t begin, int64_t end, Observer&& observer) const {
    const bool fsal = tab_->fsal();
    torch::Tensor carried;
    for (int64_t n = begin; n < end; ++n) {
      torch::Tensor last;
      z = step(n, z, fsal && carried.defined() ? &carried : nullptr, fsal ? &last : nullptr);
      if (fsal) carried = last;
      observer(n + 1, z);
    }
    return z;
  }
  torch::Tensor integrate(torch::Tensor z, int64_t begin, int64_t end) const {
    return integrate(std::move(z), begin, end, [](int64_t, const torch::Tensor&) {});
  }

  const RHS& rhs() const { return f_; }
  const ButcherTableau& tableau() const { return *tab_; }
  const TimeGrid& grid() const { return grid_; }
  void set_grid(TimeGrid g) { grid_ = std::move(g); }
  bool check_finite() const { return check_finite_; }
  const std::shared_ptr<EvalCounter>& counter() const { return counter_; }

 private:
  RHS f_;
  const ButcherTableau* tab_;
  TimeGrid grid_;
  bool check_finite_;
  std::shared_ptr<EvalCounter> counter_;
};

}  // namespace anode
