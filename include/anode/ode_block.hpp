#pragma once
// ODEBlock: a module that solves dz/dt = f(t, z) with f any torch::nn::Module, returning z(t1).
// A drop-in replacement for a residual block (one Euler step with t1 - t0 = 1 is x + f(x)).

#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/system.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <ostream>
#include <type_traits>
#include <utility>
#include <vector>

namespace anode {

/// What every ODE block has, whatever its right-hand side: its options and the counts of its last
/// solve. A model's blocks can be found and configured through it without knowing their
/// right-hand sides' types (see `ode_blocks`):
/// ```
/// for (auto& block : anode::ode_blocks(*model)) block->options.steps(4);
/// ```
class ODEBlockBase {
 public:
  explicit ODEBlockBase(ODEBlockOptions options_) : options(std::move(options_)) {}
  virtual ~ODEBlockBase() = default;

  /// The solve's options; may be changed between calls.
  ODEBlockOptions options;

  /// The counts of the last forward call and, once it has run, its backward (zeros before the
  /// first forward).
  SolveStats stats() const { return counter_ ? *counter_->stats : SolveStats{}; }

  /// The block as the module it is (an `ODEBlockImpl<Func>`).
  virtual torch::nn::Module& module() = 0;

 protected:
  ODEBlockBase(const ODEBlockBase&) = default;
  ODEBlockBase& operator=(const ODEBlockBase&) = default;

  /// The counter of a new solve: the next `stats()` report its counts.
  std::shared_ptr<EvalCounter> new_counter() {
    counter_ = std::make_shared<EvalCounter>();
    return counter_;
  }

 private:
  std::shared_ptr<EvalCounter> counter_;
};

/// The module behind the `ODEBlock<Func>` holder. `Func` is the right-hand side's module class
/// (e.g. `MyRHSImpl`, `torch::nn::LinearImpl`, `torch::nn::SequentialImpl`, or
/// `torch::nn::AnyModule`): its `forward` takes `(torch::Tensor x)` or `(double t, torch::Tensor
/// x)` and returns dz/dt with x's shape. A module with both overloads is called with the time; a
/// Sequential or AnyModule is called with the state alone (see `detail::forward_takes_time`).
template <typename Func>
class ODEBlockImpl : public torch::nn::Cloneable<ODEBlockImpl<Func>>, public ODEBlockBase {
 public:
  using FuncType = Func;

  explicit ODEBlockImpl(std::shared_ptr<Func> func, ODEBlockOptions options_ = {})
      : ODEBlockBase(std::move(options_)), func_(std::move(func)) {
    TORCH_CHECK(func_ != nullptr, "anode::ODEBlock: the right-hand-side module is null");
    options.validate();
    if constexpr (std::is_same_v<Func, torch::nn::AnyModule>) {
      TORCH_CHECK(!func_->is_empty(), "anode::ODEBlock: the right-hand-side AnyModule is empty");
      this->register_module("func", func_->ptr());
    } else {
      func_ = this->register_module("func", func_);
    }
  }
  explicit ODEBlockImpl(const torch::nn::ModuleHolder<Func>& func, ODEBlockOptions options_ = {})
      : ODEBlockImpl(func.ptr(), std::move(options_)) {}
  /// A type-erased right-hand side: `ODEBlock<torch::nn::AnyModule>(torch::nn::AnyModule(m))`.
  template <typename F = Func, typename = std::enable_if_t<std::is_same_v<F, torch::nn::AnyModule>>>
  explicit ODEBlockImpl(torch::nn::AnyModule func, ODEBlockOptions options_ = {})
      : ODEBlockImpl(std::make_shared<torch::nn::AnyModule>(std::move(func)), std::move(options_)) {
  }

  /// z(t1) for z(t0) = x.
  torch::Tensor forward(const torch::Tensor& x) {
    return solve(System::of_module(func_), x, options, new_counter());
  }

  /// The wrapped right-hand side.
  std::shared_ptr<Func> func() const { return func_; }

  torch::nn::Module& module() override { return *this; }

  /// Nothing to (re)initialise here: the wrapped module owns its parameters. `Cloneable` requires
  /// the override; `clone()` below deep-copies the wrapped module instead.
  void reset() override {}

  /// Deep copy, cloning the wrapped module (which must itself be cloneable), as Sequential does.
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    std::shared_ptr<Func> copy;
    if constexpr (std::is_same_v<Func, torch::nn::AnyModule>) {
      copy = std::make_shared<torch::nn::AnyModule>(func_->clone(device));
    } else {
      copy = std::dynamic_pointer_cast<Func>(func_->clone(device));
    }
    TORCH_CHECK(copy != nullptr,
                "anode::ODEBlock::clone: cloning the right-hand side did not "
                "return a module of the same type");
    // Module::train() is recursive: set the block's own mode, then put back each submodule's mode
    // (the wrapped module's clone kept them), parents first so children win.
    std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes;
    for (const auto& m : detail::as_module(copy)->modules(/*include_self=*/true))
      modes.emplace_back(m, m->is_training());
    auto block = std::make_shared<ODEBlockImpl<Func>>(copy, options);
    block->train(this->is_training());
    for (const auto& [m, on] : modes) m->train(on);
    return block;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "anode::ODEBlock(" << options << ")";
  }

 private:
  std::shared_ptr<Func> func_;
};

/// The ODE blocks inside `root` (not `root` itself), in `modules()` order, whatever their
/// right-hand sides: to configure all of a model's blocks at once.
inline std::vector<std::shared_ptr<ODEBlockBase>> ode_blocks(const torch::nn::Module& root) {
  std::vector<std::shared_ptr<ODEBlockBase>> out;
  for (const auto& m : root.modules(/*include_self=*/false)) {
    if (auto block = std::dynamic_pointer_cast<ODEBlockBase>(m)) out.push_back(std::move(block));
  }
  return out;
}
template <typename M>
std::vector<std::shared_ptr<ODEBlockBase>> ode_blocks(const torch::nn::ModuleHolder<M>& root) {
  return ode_blocks(*root);
}

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
