#pragma once
// Adapts a user's right-hand side (a module whose forward takes `(x)` or `(t, x)`, or any callable
// of either form) to the single signature the integrator uses, f(t, z), and checks what it returns.

#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace anode {

/// The right-hand side as the integrator sees it: dz/dt = f(t, z).
using RHS = std::function<torch::Tensor(double, const torch::Tensor&)>;

namespace detail {

template <typename F, typename = void>
struct forward_takes_time : std::false_type {};
template <typename F>
struct forward_takes_time<F, std::void_t<decltype(std::declval<F&>().forward(
                                 std::declval<double>(), std::declval<torch::Tensor>()))>>
    : std::true_type {};

template <typename F, typename = void>
struct forward_takes_state : std::false_type {};
template <typename F>
struct forward_takes_state<
    F, std::void_t<decltype(std::declval<F&>().forward(std::declval<torch::Tensor>()))>>
    : std::true_type {};

template <typename F>
struct is_module_holder : std::is_base_of<torch::detail::ModuleHolderIndicator, std::decay_t<F>> {};

template <typename F>
struct is_time_callable : std::is_invocable_r<torch::Tensor, F&, double, const torch::Tensor&> {};
template <typename F>
struct is_state_callable : std::is_invocable_r<torch::Tensor, F&, const torch::Tensor&> {};
template <typename F>
constexpr bool is_time_callable_v = is_time_callable<F>::value;
template <typename F>
constexpr bool is_state_callable_v = is_state_callable<F>::value;

/// A plain callable right-hand side (not a module holder, whose operator() is not SFINAE-friendly
/// and must not even be inspected: std::conjunction stops at the first false).
template <typename F>
struct is_rhs_callable
    : std::conjunction<
          std::negation<is_module_holder<F>>,
          std::disjunction<is_time_callable<std::decay_t<F>>, is_state_callable<std::decay_t<F>>>> {
};

/// Wraps a module: calls `forward(t, x)` if it has one, else `forward(x)`. The shared_ptr keeps
/// the module alive as long as any graph node that may call it in backward.
template <typename Func>
RHS module_rhs(std::shared_ptr<Func> f) {
  static_assert(
      forward_takes_time<Func>::value || forward_takes_state<Func>::value,
      "anode: the right-hand-side module must have `torch::Tensor forward(torch::Tensor x)` "
      "or `torch::Tensor forward(double t, torch::Tensor x)`");
  if constexpr (forward_takes_time<Func>::value) {
    return [f = std::move(f)](double t, const torch::Tensor& z) { return f->forward(t, z); };
  } else {
    return [f = std::move(f)](double, const torch::Tensor& z) { return f->forward(z); };
  }
}

/// Wraps a callable of the form `f(t, x)` or `f(x)`.
template <typename F>
RHS callable_rhs(F&& f) {
  using D = std::decay_t<F>;
  static_assert(is_time_callable_v<D> || is_state_callable_v<D>,
                "anode::odeint: the right-hand side must be callable as f(double t, Tensor x) or "
                "f(Tensor x) and return a Tensor");
  if constexpr (is_time_callable_v<D>) {
    return RHS(std::forward<F>(f));
  } else {
    return [g = D(std::forward<F>(f))](double, const torch::Tensor& z) mutable { return g(z); };
  }
}

/// Checks that the right-hand side returned a tensor the state can be updated with.
inline void check_rhs_output(const torch::Tensor& out, const torch::Tensor& z, double t) {
  TORCH_CHECK(out.defined(), "anode: the right-hand side returned an undefined tensor at t = ", t);
  TORCH_CHECK(out.sizes() == z.sizes(), "anode: the right-hand side returned shape ", out.sizes(),
              " for a state of shape ", z.sizes(), " at t = ", t,
              "; dz/dt must have the state's shape");
  TORCH_CHECK(out.scalar_type() == z.scalar_type(), "anode: the right-hand side returned dtype ",
              out.scalar_type(), " for a state of dtype ", z.scalar_type(), " at t = ", t,
              "; dz/dt must have the state's dtype");
  TORCH_CHECK(out.device() == z.device(), "anode: the right-hand side returned a tensor on ",
              out.device(), " for a state on ", z.device(), " at t = ", t);
}

}  // namespace detail
}  // namespace anode
