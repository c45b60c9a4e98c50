#pragma once
// Adapts a user's right-hand side (a module whose forward takes `(x)` or `(t, x)`, or any callable
// of either form) to the single signature the integrator uses, f(t, z), and checks what it returns.

#include <anode/detail/autocast.hpp>

#include <torch/nn/modules/container/any.h>
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

/// A tag no real `forward` accepts: a module whose `forward` is callable with it takes any
/// arguments, i.e. its `forward` is a variadic template (`torch::nn::Sequential`, `AnyModule`).
struct AnyArgumentProbe {};

/// Whether `F::forward` is a variadic template that accepts any arguments. For such a module a
/// `decltype` test of `forward(t, x)` is well-formed although the call fails at run time
/// (Sequential passes both arguments to its first module), so it must be recognised first.
template <typename F, typename = void>
struct forward_takes_anything : std::false_type {};
template <typename F>
struct forward_takes_anything<
    F, std::void_t<decltype(std::declval<F&>().forward(std::declval<AnyArgumentProbe>()))>>
    : std::true_type {};

template <typename F, typename = void>
struct forward_takes_time_overload : std::false_type {};
template <typename F>
struct forward_takes_time_overload<F, std::void_t<decltype(std::declval<F&>().forward(
                                          std::declval<double>(), std::declval<torch::Tensor>()))>>
    : std::true_type {};

template <typename F, typename = void>
struct forward_takes_state_overload : std::false_type {};
template <typename F>
struct forward_takes_state_overload<
    F, std::void_t<decltype(std::declval<F&>().forward(std::declval<torch::Tensor>()))>>
    : std::true_type {};

/// How a module right-hand side is called. A module with a time-taking `forward(double t, x)`
/// is called with the time, also when it has a `forward(x)` overload as well (the time-dependent
/// form is the more specific one); a module with only `forward(x)`, and a module whose `forward`
/// is a variadic template (Sequential, AnyModule: one input, passed to their first module), is
/// called with the state alone.
template <typename F>
struct forward_takes_time
    : std::conjunction<std::negation<forward_takes_anything<F>>, forward_takes_time_overload<F>> {};
template <typename F>
struct forward_takes_state
    : std::disjunction<forward_takes_anything<F>, forward_takes_state_overload<F>> {};

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
/// and must not even be inspected, nor an `AnyModule`, whose `forward` takes anything: it is a
/// module. std::conjunction stops at the first false).
template <typename F>
struct is_rhs_callable
    : std::conjunction<
          std::negation<is_module_holder<F>>,
          std::negation<std::is_same<std::decay_t<F>, torch::nn::AnyModule>>,
          std::disjunction<is_time_callable<std::decay_t<F>>, is_state_callable<std::decay_t<F>>>> {
};

/// Wraps a module: calls `forward(t, x)` if it has one, else `forward(x)` (see
/// `forward_takes_time`). The shared_ptr keeps the module alive as long as any graph node that
/// may call it in backward.
template <typename Func>
RHS module_rhs(std::shared_ptr<Func> f) {
  static_assert(
      forward_takes_time<Func>::value || forward_takes_state<Func>::value,
      "anode: the right-hand-side module must have `torch::Tensor forward(torch::Tensor x)` "
      "or `torch::Tensor forward(double t, torch::Tensor x)`, or be a torch::nn::Sequential "
      "or torch::nn::AnyModule of modules taking and returning one tensor");
  if constexpr (forward_takes_time<Func>::value) {
    return [f = std::move(f)](double t, const torch::Tensor& z) { return f->forward(t, z); };
  } else if constexpr (forward_takes_anything<Func>::value) {
    // Sequential's and AnyModule's forward return what they are asked for.
    return [f = std::move(f)](double, const torch::Tensor& z) {
      return f->template forward<torch::Tensor>(z);
    };
  } else {
    return [f = std::move(f)](double, const torch::Tensor& z) { return f->forward(z); };
  }
}

/// The module behind a right-hand side: the module itself, or the one an `AnyModule` holds (null
/// when it is empty). Its parameters, buffers and training mode are the system's.
template <typename Func>
std::shared_ptr<torch::nn::Module> as_module(const std::shared_ptr<Func>& f) {
  if constexpr (std::is_same_v<Func, torch::nn::AnyModule>) {
    return f->is_empty() ? nullptr : f->ptr();
  } else {
    static_assert(std::is_base_of_v<torch::nn::Module, Func>,
                  "anode: the right-hand side must be a torch::nn::Module (or an AnyModule)");
    return f;
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
