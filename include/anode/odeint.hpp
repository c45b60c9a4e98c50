#pragma once
// odeint: the functional form, for a right-hand side that is a callable or a module used once.

#include <anode/detail/rhs.hpp>
#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/system.hpp>

#include <torch/nn/pimpl.h>

#include <memory>
#include <type_traits>

namespace anode {

/// Solves dz/dt = f(t, z) (or f(z)) from options.t0() to options.t1() with z(t0) = x, for a
/// callable f. `params` are the tensors f closes over that need gradients: `Gradient::Anode` and
/// `Gradient::Adjoint` differentiate with respect to those (and x) only, so list every tensor f
/// reads that requires grad. `Gradient::Backprop` needs no list.
template <typename F, typename = std::enable_if_t<detail::is_rhs_callable<F>::value>>
torch::Tensor odeint(F&& f, const torch::Tensor& x, const ODEBlockOptions& options = {},
                     at::TensorList params = {}) {
  System s;
  s.rhs = detail::callable_rhs(std::forward<F>(f));
  s.parameters = params.vec();
  return solve(s, x, options);
}

/// Solves with a module as the right-hand side: its parameters get gradients, its buffers are
/// kept consistent (as in ODEBlock).
template <typename Func>
torch::Tensor odeint(const std::shared_ptr<Func>& module, const torch::Tensor& x,
                     const ODEBlockOptions& options = {}) {
  return solve(System::of_module(module), x, options);
}

template <typename Func>
torch::Tensor odeint(const torch::nn::ModuleHolder<Func>& module, const torch::Tensor& x,
                     const ODEBlockOptions& options = {}) {
  return solve(System::of_module(module.ptr()), x, options);
}

}  // namespace anode
