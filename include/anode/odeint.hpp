#pragma once
// odeint: the functional form, for a right-hand side that is a callable or a module used once.

#include <anode/detail/rhs.hpp>
#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/stats.hpp>
#include <anode/system.hpp>

#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace anode {

namespace detail {
// The counter of one solve. A caller's stats object is reset first, so that one reused across
// training iterations holds the last solve's counts (as ODEBlockImpl::stats() does), not a sum.
inline std::shared_ptr<EvalCounter> counter_for(std::shared_ptr<SolveStats> stats) {
  if (!stats) return nullptr;
  *stats = SolveStats{};
  return std::make_shared<EvalCounter>(std::move(stats));
}
}  // namespace detail

/// Solves dz/dt = f(t, z) (or f(z)) from options.t0() to options.t1() with z(t0) = x, for a
/// callable f. `params` are the tensors f closes over that need gradients: `Gradient::Anode` and
/// `Gradient::Adjoint` differentiate with respect to those (and x) only; a tensor f reads that
/// requires grad but is not listed is an error. `Gradient::Backprop` needs no list. f is called
/// again in backward: capture tensors by value. `stats` (optional) is reset, then receives the
/// solve's counts, the backward's once it has run (reuse it for one solve at a time).
template <typename F, typename = std::enable_if_t<detail::is_rhs_callable<F>::value>>
torch::Tensor odeint(F&& f, const torch::Tensor& x, const ODEBlockOptions& options = {},
                     at::TensorList params = {}, std::shared_ptr<SolveStats> stats = nullptr) {
  System s;
  s.rhs = detail::callable_rhs(std::forward<F>(f));
  s.parameters = params.vec();
  return solve(s, x, options, detail::counter_for(std::move(stats)));
}

/// Solves with a module as the right-hand side: its parameters get gradients, its buffers are
/// kept consistent (as in ODEBlock).
template <typename Func>
torch::Tensor odeint(const std::shared_ptr<Func>& module, const torch::Tensor& x,
                     const ODEBlockOptions& options = {},
                     std::shared_ptr<SolveStats> stats = nullptr) {
  return solve(System::of_module(module), x, options, detail::counter_for(std::move(stats)));
}

template <typename Func>
torch::Tensor odeint(const torch::nn::ModuleHolder<Func>& module, const torch::Tensor& x,
                     const ODEBlockOptions& options = {},
                     std::shared_ptr<SolveStats> stats = nullptr) {
  return solve(System::of_module(module.ptr()), x, options, detail::counter_for(std::move(stats)));
}

/// A type-erased module (`torch::nn::AnyModule`) as the right-hand side, called as `forward(x)`.
inline torch::Tensor odeint(const torch::nn::AnyModule& module, const torch::Tensor& x,
                            const ODEBlockOptions& options = {},
                            std::shared_ptr<SolveStats> stats = nullptr) {
  return solve(System::of_module(std::make_shared<torch::nn::AnyModule>(module)), x, options,
               detail::counter_for(std::move(stats)));
}

/// The trajectory form: the solution at every output time of `t` (1-D, strictly increasing or
/// decreasing, at least 2 finite entries), shape [t.size(0), z0.sizes()...] with out[0] == z0.
/// Fixed-step methods divide each interval into `options.steps()` steps (or by `step_size`);
/// adaptive methods (Bosh3, Dopri5, Tsit5, or an embedded `tableau`) choose their steps and land
/// exactly on every output time. `options.t0()/t1()` are not used: the interval comes from `t`.
template <typename F, typename = std::enable_if_t<detail::is_rhs_callable<F>::value>>
torch::Tensor odeint(F&& f, const torch::Tensor& z0, const torch::Tensor& t,
                     const ODEBlockOptions& options = {}, at::TensorList params = {},
                     std::shared_ptr<SolveStats> stats = nullptr) {
  System s;
  s.rhs = detail::callable_rhs(std::forward<F>(f));
  s.parameters = params.vec();
  return solve_trajectory(s, z0, t, options, detail::counter_for(std::move(stats)));
}

template <typename Func>
torch::Tensor odeint(const std::shared_ptr<Func>& module, const torch::Tensor& z0,
                     const torch::Tensor& t, const ODEBlockOptions& options = {},
                     std::shared_ptr<SolveStats> stats = nullptr) {
  return solve_trajectory(System::of_module(module), z0, t, options,
                          detail::counter_for(std::move(stats)));
}

template <typename Func>
torch::Tensor odeint(const torch::nn::ModuleHolder<Func>& module, const torch::Tensor& z0,
                     const torch::Tensor& t, const ODEBlockOptions& options = {},
                     std::shared_ptr<SolveStats> stats = nullptr) {
  return solve_trajectory(System::of_module(module.ptr()), z0, t, options,
                          detail::counter_for(std::move(stats)));
}

inline torch::Tensor odeint(const torch::nn::AnyModule& module, const torch::Tensor& z0,
                            const torch::Tensor& t, const ODEBlockOptions& options = {},
                            std::shared_ptr<SolveStats> stats = nullptr) {
  return solve_trajectory(System::of_module(std::make_shared<torch::nn::AnyModule>(module)), z0, t,
                          options, detail::counter_for(std::move(stats)));
}

}  // namespace anode
