#pragma once
// Adapts a user's right-hand side (a module whose forward takes `(x)` or `(t, x)`, or any callable
// of either form) to the single signature the integrator uses, f(t, z), and checks what it returns.

#include <anode/detail/autocast.hpp>

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

/// Whether autocast is on for the device type of `t` in the calling thread.
inline bool autocast_on_for(const torch::Tensor& t) {
  const AutocastState s = AutocastState::capture();
  if (t.is_cpu()) return s.cpu_enabled;
  if (t.is_cuda()) return s.cuda_enabled;
  return false;
}

/// Checks that the right-hand side returned a tensor the state can be updated with. Under
/// autocast, a derivative of lower precision than the state is accepted (a bf16 conv on an fp32
/// state): the stage sums promote, so the state keeps its dtype.
inline void check_rhs_output(const torch::Tensor& out, const torch::Tensor& z, double t) {
  TORCH_CHECK(out.defined(), "anode: the right-hand side returned an undefined tensor at t = ", t);
  TORCH_CHECK(out.sizes() == z.sizes(), "anode: the right-hand side returned shape ", out.sizes(),
              " for a state of shape ", z.sizes(), " at t = ", t,
              "; dz/dt must have the state's shape");
  if (out.scalar_type() != z.scalar_type()) {
    const bool autocast = autocast_on_for(z);
    const bool lower = at::isFloatingType(out.scalar_type()) &&
                       c10::promoteTypes(out.scalar_type(), z.scalar_type()) == z.scalar_type();
    TORCH_CHECK(autocast && lower, "anode: the right-hand side returned dtype ", out.scalar_type(),
                " for a state of dtype ", z.scalar_type(), " at t = ", t,
                autocast ? "; under autocast dz/dt may have a lower precision than the state, "
                           "never a higher one"
                         : "; dz/dt must have the state's dtype (a lower precision is accepted "
                           "only under autocast)");
  }
  TORCH_CHECK(out.device() == z.device(), "anode: the right-hand side returned a tensor on ",
              out.device(), " for a state on ", z.device(), " at t = ", t);
}

/// Calls the right-hand side and checks what it did: the output, and that it left its input
/// alone. An RHS that writes into its input (`x.relu_()`) changes the state the integrator is
/// about to combine its stages with, and a recompute would start from a different state than the
/// forward pass did: the version counter, shared by every view of the tensor, tells.
inline torch::Tensor call_rhs(const RHS& f, double t, const torch::Tensor& z) {
  // Inference tensors (c10::InferenceMode) have no version counter: nothing to compare.
  const bool tracked = !z.is_inference();
  const auto version = tracked ? z._version() : 0;
  torch::Tensor out = f(t, z);
  TORCH_CHECK(!tracked || z._version() == version,
              "anode: the right-hand side modified its input in place at t = ", t,
              " (e.g. x.relu_(), x.add_(1) or an inplace ReLU as its first layer); dz/dt = f(t, z) "
              "must not change z, or the solve and every recomputed gradient are wrong. Use the "
              "out-of-place operation (x.relu(), x + 1)");
  check_rhs_output(out, z, t);
  return out;
}

}  // namespace detail
}  // namespace anode
