#pragma once
// ODEBlock: a module that solves dz/dt = f(t, z) with f any torch::nn::Module, returning z(t1).
// A drop-in replacement for a residual block (one Euler step with t1 - t0 = 1 is x + f(x)).

#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/system.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <ostream>
#include <utility>
#include <vector>

namespace anode {

/// The module behind the `ODEBlock<Func>` holder. `Func` is the right-hand side's module class
/// (e.g. `MyRHSImpl` or `torch::nn::LinearImpl`): its `forward` takes `(torch::Tensor x)` or
/// `(double t, torch::Tensor x)` and returns dz/dt with x's shape.
template <typename Func>
class ODEBlockImpl : public torch::nn::Cloneable<ODEBlockImpl<Func>> {
 public:
  using FuncType = Func;

  explicit ODEBlockImpl(std::shared_ptr<Func> func, ODEBlockOptions options_ = {})
      : options(std::move(options_)), func_(std::move(func)) {
    TORCH_CHECK(func_ != nullptr, "anode::ODEBlock: the right-hand-side module is null");
    options.validate();
    func_ = this->register_module("func", func_);
  }
  explicit ODEBlockImpl(const torch::nn::ModuleHolder<Func>& func, ODEBlockOptions options_ = {})
      : ODEBlockImpl(func.ptr(), std::move(options_)) {}

  /// z(t1) for z(t0) = x.
  torch::Tensor forward(const torch::Tensor& x) {
    counter_ = std::make_shared<EvalCounter>();
    return solve(System::of_module(func_), x, options, counter_);
  }

  /// The counts of the last forward call and, once it has run, its backward (zeros before the
  /// first forward).
  SolveStats stats() const { return counter_ ? *counter_->stats : SolveStats{}; }

  /// The wrapped right-hand side.
  std::shared_ptr<Func> func() const { return func_; }

  /// Nothing to (re)initialise here: the wrapped module owns its parameters. `Cloneable` requires
  /// the override; `clone()` below deep-copies the wrapped module instead.
  void reset() override {}

  /// Deep copy, cloning the wrapped module (which must itself be cloneable), as Sequential does.
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto copy = std::dynamic_pointer_cast<Func>(func_->clone(device));
    TORCH_CHECK(copy != nullptr,
                "anode::ODEBlock::clone: cloning the right-hand side did not "
                "return a module of the same type");
    // Module::train() is recursive: set the block's own mode, then put back each submodule's mode
    // (the wrapped module's clone kept them), parents first so children win.
    std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes;
    for (const auto& m : copy->modules(/*include_self=*/true))
      modes.emplace_back(m, m->is_training());
    auto block = std::make_shared<ODEBlockImpl<Func>>(copy, options);
    block->train(this->is_training());
    for (const auto& [m, on] : modes) m->train(on);
    return block;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "anode::ODEBlock(" << options << ")";
  }

  /// The solve's options; may be changed between calls.
  ODEBlockOptions options;

 private:
  std::shared_ptr<Func> func_;
  std::shared_ptr<EvalCounter> counter_;
};

/// Module holder for `ODEBlockImpl<Func>` (a template cannot go through TORCH_MODULE).
///
/// Example:
/// ```
/// struct RHSImpl : torch::nn::Module { ... torch::Tensor forward(torch::Tensor x); };
/// TORCH_MODULE(RHS);
/// anode::ODEBlock<RHSImpl> block(RHS(64), anode::ODEBlockOptions().method(anode::Method::RK2)
///                                                                    .steps(4));
/// torch::Tensor y = block->forward(x);
/// ```
template <typename Func>
class ODEBlock : public torch::nn::ModuleHolder<ODEBlockImpl<Func>> {
 public:
  using torch::nn::ModuleHolder<ODEBlockImpl<Func>>::ModuleHolder;
  using Impl = ODEBlockImpl<Func>;
};

}  // namespace anode
