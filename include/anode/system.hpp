#pragma once
// What a gradient strategy needs to know about the ODE besides the method: the right-hand side,
// the parameters it differentiates with respect to, and the state it mutates.

#include <anode/detail/rhs.hpp>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <vector>

namespace anode {

/// The right-hand side with its parameters and buffers.
struct System {
  /// f(t, z).
  RHS rhs;
  /// Tensors the RHS reads that may need gradients (a module's parameters, or the tensors a
  /// callable closes over). Those not requiring grad are skipped and get no gradient.
  std::vector<torch::Tensor> parameters;
  /// Tensors the RHS mutates in training (BatchNorm statistics): replayed, never double-updated.
  std::vector<torch::Tensor> buffers;
  /// Whether the RHS or any of its submodules is in training mode (its buffers may change); in
  /// eval nothing is saved.
  bool training = false;

  /// The system of a module: its forward, all its parameters and buffers, its train/eval mode.
  template <typename Func>
  static System of_module(const std::shared_ptr<Func>& func) {
    TORCH_CHECK(func != nullptr, "anode: the right-hand-side module is null");
    const std::shared_ptr<torch::nn::Module> module = detail::as_module(func);
    TORCH_CHECK(module != nullptr, "anode: the right-hand-side AnyModule is empty");
    System s;
    s.rhs = detail::module_rhs(func);
    s.parameters = module->parameters(/*recurse=*/true);
    s.buffers = module->buffers(/*recurse=*/true);
    // Any submodule in train() may update its buffers (e.g. BatchNorm under an eval() root).
    for (const auto& m : module->modules(/*include_self=*/true)) {
      s.training = s.training || m->is_training();
    }
    return s;
  }

  /// Parameters that require grad, in order.
  std::vector<torch::Tensor> differentiable_parameters() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : parameters) {
      if (p.defined() && p.requires_grad()) out.push_back(p);
    }
    return out;
  }
};

}  // namespace anode
