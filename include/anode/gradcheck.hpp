#pragma once
// A gradient self-check users run on their own right-hand side: the chosen gradient mode's input
// and parameter gradients against Backprop's on a given input and, on request, against central
// finite differences in float64. The tool for a user who brings nondeterministic kernels, closures
// or in-place writes and wants to know whether the exactness contract holds for them.
//
// Example:
// ```
// auto report = anode::check_gradients(rhs_module, x, anode::ODEBlockOptions().steps(8));
// std::cout << report << "\n";   // largest relative error vs Backprop, and where
// TORCH_CHECK(report.max_rel_error_backprop < 1e-10);
// ```

#include <anode/detail/buffers.hpp>
#include <anode/detail/rng.hpp>
#include <anode/ode_block.hpp>
#include <anode/odeint.hpp>
#include <anode/options.hpp>

#include <torch/types.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

namespace anode {

/// What `check_gradients` found.
struct GradientCheck {
  /// max over the input and every parameter of ||g_mode - g_backprop|| / ||g_backprop||.
  double max_rel_error_backprop = 0.0;
  /// Which gradient that was ("input" or "parameter i").
  std::string worst_backprop;
  /// max over sampled coordinates of |g_mode - fd| / max(|fd|, 1); NaN if not requested.
  double max_rel_error_fd = std::numeric_limits<double>::quiet_NaN();
  std::string worst_fd;
};

inline std::ostream& operator<<(std::ostream& os, const GradientCheck& c) {
  os << "vs Backprop: " << c.max_rel_error_backprop << " (" << c.worst_backprop << ")";
  if (!std::isnan(c.max_rel_error_fd))
    os << "; vs finite differences: " << c.max_rel_error_fd << " (" << c.worst_fd << ")";
  return os;
}

namespace detail {

inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.defined() && !b.defined()) return 0.0;
  if (!a.defined() || !b.defined()) return std::numeric_limits<double>::infinity();
  torch::NoGradGuard no_grad;
  const auto da = a.to(torch::kDouble), db = b.to(torch::kDouble);
  return (da - db).norm().item<double>() / std::max(db.norm().item<double>(), 1e-300);
}

// `run(options, x)` solves and returns the output; the loss is <output, w> for a fixed random w.
// Random-number generators and buffers are put back before every solve, and at the end, so each
// solve sees the same world and the caller's state is unchanged.
template <typename Run>
GradientCheck check_gradients_impl(Run&& run, const std::vector<torch::Tensor>& params,
                                   const std::vector<torch::Tensor>& buffers,
                                   const torch::Tensor& x, const ODEBlockOptions& options,
                                   bool finite_differences, int64_t fd_samples) {
  options.validate();
  TORCH_CHECK(!finite_differences || x.scalar_type() == torch::kDouble,
              "anode::check_gradients: finite differences need float64 (got an input of dtype ",
              x.scalar_type(), "); convert the module and the input with .to(torch::kDouble)");
  const auto gens = replayed_generators(options.generators(), x.device());
  RngFork keep_rng(gens);
  BufferRestore keep_buffers(buffers);
  const auto rng = RngState::capture(gens);
  const auto buf = snapshot_buffers(buffers);
  const auto world = [&] {
    rng.restore();
    restore_buffers(buffers, buf);
  };
  torch::Tensor w;
  auto gradients = [&](const ODEBlockOptions& o) -> std::vector<torch::Tensor> {
    world();
    auto xi = x.detach().clone().requires_grad_(true);
    const torch::Tensor y = run(o, xi);
    std::vector<torch::Tensor> inputs{xi};
    inputs.insert(inputs.end(), params.begin(), params.end());
    return torch::autograd::grad({(y * w).sum()}, inputs, {}, false, false, true);
  };
  // w is drawn once, after the world is set, from the generator state the solves then restore.
  {
    world();
    torch::NoGradGuard no_grad;
    const torch::Tensor y = run(options, x.detach());
    w = torch::randn(y.sizes(), at::TensorOptions().dtype(y.scalar_type()).device(y.device()));
  }
  const std::vector<torch::Tensor> mine = gradients(options);
  const std::vector<torch::Tensor> reference = gradients(options.with_gradient(Gradient::Backprop));
  GradientCheck out;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const double e = relative_error(mine[i], reference[i]);
    if (e > out.max_rel_error_backprop || out.worst_backprop.empty()) {
      out.max_rel_error_backprop = e;
      out.worst_backprop = i == 0 ? "input" : "parameter " + std::to_string(i - 1);
    }
  }
  if (!finite_differences) return out;
  out.max_rel_error_fd = 0.0;
  const double eps = 1e-6;
  std::vector<torch::Tensor> targets{x.detach().clone()};
  for (const auto& p : params) targets.push_back(p);
  const torch::Tensor& x_fd = targets[0];  // perturbed in place when the input is the target
  auto loss_at = [&]() {
    world();
    torch::NoGradGuard no_grad;
    const torch::Tensor y = run(options, x_fd);
    return (y * w).sum().item<double>();
  };
  auto set = [](torch::Tensor& flat, int64_t j, double v) {
    torch::NoGradGuard no_grad;
    flat[j] = v;
  };
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (!mine[i].defined()) continue;
    auto flat = targets[i].detach().view(-1);
    const int64_t n = flat.numel();
    const int64_t count = std::min<int64_t>(n, fd_samples);
    for (int64_t s = 0; s < count; ++s) {
      const int64_t j = count == n ? s : (s * 7919) % n;  // spread over the tensor
      const double orig = flat[j].item<double>();
      set(flat, j, orig + eps);
      const double up = loss_at();
      set(flat, j, orig - eps);
      const double down = loss_at();
      set(flat, j, orig);
      const double fd = (up - down) / (2 * eps);
      const double g = mine[i].reshape(-1)[j].item<double>();
      const double e = std::abs(g - fd) / std::max(std::abs(fd), 1.0);
      if (e >= out.max_rel_error_fd) {
        out.max_rel_error_fd = e;
        out.worst_fd = (i == 0 ? std::string("input") : "parameter " + std::to_string(i - 1)) +
                       "[" + std::to_string(j) + "]";
      }
    }
  }
  return out;
}

}  // namespace detail

/// Checks a module right-hand side: the gradients of <odeint(module, x, options), w> (w a fixed
/// random tensor) with respect to x and the module's parameters, in `options.gradient()`'s mode,
/// against Backprop's, and with `finite_differences` against central differences at up to
/// `fd_samples` coordinates per tensor (float64 only). The module's buffers and the random
/// generators are left as they were.
template <typename Func>
GradientCheck check_gradients(const std::shared_ptr<Func>& module, const torch::Tensor& x,
                              const ODEBlockOptions& options, bool finite_differences = false,
                              int64_t fd_samples = 4) {
  static_assert(!std::is_base_of_v<ODEBlockBase, Func>,
                "anode::check_gradients: this overload takes a right-hand side and options; to "
                "check an ODE block with its own options, call check_gradients(block, x)");
  auto run = [&module](const ODEBlockOptions& o, const torch::Tensor& z) {
    return odeint(module, z, o);
  };
  TORCH_CHECK(module != nullptr && detail::as_module(module) != nullptr,
              "anode::check_gradients: the right-hand-side module is null or empty");
  std::vector<torch::Tensor> params;
  for (const auto& p : detail::as_module(module)->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  return detail::check_gradients_impl(run, params, detail::as_module(module)->buffers(), x, options,
                                      finite_differences, fd_samples);
}

template <typename Func>
GradientCheck check_gradients(const torch::nn::ModuleHolder<Func>& module, const torch::Tensor& x,
                              const ODEBlockOptions& options, bool finite_differences = false,
                              int64_t fd_samples = 4) {
  return check_gradients(module.ptr(), x, options, finite_differences, fd_samples);
}

/// Checks an ODE block with its own options and right-hand side.
template <typename Func>
GradientCheck check_gradients(const ODEBlock<Func>& block, const torch::Tensor& x,
                              bool finite_differences = false, int64_t fd_samples = 4) {
  return check_gradients(block->func(), x, block->options, finite_differences, fd_samples);
}

/// Checks a callable right-hand side with the tensors it reads that need gradients (`params`, as
/// for odeint).
template <typename F, typename = std::enable_if_t<detail::is_rhs_callable<F>::value>>
GradientCheck check_gradients(F&& f, const torch::Tensor& x, const ODEBlockOptions& options,
                              const std::vector<torch::Tensor>& params,
                              bool finite_differences = false, int64_t fd_samples = 4) {
  auto run = [&f, &params](const ODEBlockOptions& o, const torch::Tensor& z) {
    return odeint(f, z, o, params);
  };
  return detail::check_gradients_impl(run, params, {}, x, options, finite_differences, fd_samples);
}

}  // namespace anode
