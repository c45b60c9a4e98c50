#pragma once
// The fixed-step integration loop, independent of the method (a Butcher tableau) and of how the
// loop is differentiated (see gradient/). In the style of boost::odeint: a stepper does one step,
// the integrator loops and calls an observer; time is t0 + n*h, never accumulated.

#include <anode/detail/rhs.hpp>
#include <anode/options.hpp>
#include <anode/tableau.hpp>

#include <torch/types.h>

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
template <typename State, typename F>
State rk_step(const ButcherTableau& tab, F&& f, double t, double h, const State& z) {
  const auto s = static_cast<std::size_t>(tab.stages());
  std::vector<State> k;
  k.reserve(s);
  for (std::size_t i = 0; i < s; ++i) {
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

/// The uniform time grid t_n = t0 + n * (t1 - t0) / N.
struct TimeGrid {
  double t0 = 0.0;
  double t1 = 1.0;
  int64_t steps = 1;

  static TimeGrid from(const ODEBlockOptions& o) { return {o.t0(), o.t1(), o.steps()}; }
  double h() const { return (t1 - t0) / static_cast<double>(steps); }
  double time(int64_t n) const { return n == steps ? t1 : t0 + static_cast<double>(n) * h(); }
};

/// Steps the ODE z' = f(t, z) on a time grid with one method: the unit every gradient strategy
/// calls, so forward, recompute and adjoint all take bit-identical steps.
class Stepper {
 public:
  Stepper(RHS f, const ButcherTableau& tab, TimeGrid grid, bool check_finite = false)
      : f_(std::move(f)), tab_(&tab), grid_(grid), check_finite_(check_finite) {}

  /// z_{n+1} from z_n.
  torch::Tensor step(int64_t n, const torch::Tensor& z) const {
    const auto f = [this](double t, const torch::Tensor& x) { return detail::call_rhs(f_, t, x); };
    torch::Tensor next = rk_step(*tab_, f, grid_.time(n), grid_.h(), z);
    if (check_finite_) {
      // One host sync per step: opt-in only.
      TORCH_CHECK(torch::isfinite(next).all().item<bool>(),
                  "anode: non-finite value (NaN or Inf) in the state after step ", n + 1, " of ",
                  grid_.steps, " (t = ", grid_.time(n + 1), ")");
    }
    return next;
  }

  /// z_end from z_begin, stepping n = begin .. end-1. `observer(n + 1, z)` sees every new state.
  template <typename Observer>
  torch::Tensor integrate(torch::Tensor z, int64_t begin, int64_t end, Observer&& observer) const {
    for (int64_t n = begin; n < end; ++n) {
      z = step(n, z);
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
  bool check_finite() const { return check_finite_; }

 private:
  RHS f_;
  const ButcherTableau* tab_;
  TimeGrid grid_;
  bool check_finite_;
};

}  // namespace anode
