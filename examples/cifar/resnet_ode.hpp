#pragma once
// ResNet18-ODE for CIFAR, as in the official ANODE code (github.com/amirgholami/anode,
// models/resnet.py): a 3x3 stem, four stages of 64, 128, 256 and 512 channels, each one ordinary
// BasicBlock (which changes the resolution or width) followed by ODE blocks whose right-hand side
// is a BasicBlock without its shortcut, then global average pooling and a linear classifier.
// With width 1 its parameter count equals the Python model's (tests/test_cifar_models.cpp).

#include "examples/cifar/classifier.hpp"

#include <anode/ode_block.hpp>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <anode/sync_batchnorm.hpp>

#include <ostream>
#include <string>
#include <vector>

namespace cifar {

namespace detail {
inline torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}
}  // namespace detail

/// The ordinary residual block: conv3x3-BN-ReLU-conv3x3-BN, plus the input (through a strided
/// 1x1 conv + BN when the shape changes), then ReLU.
class ResNetBasicBlockImpl : public torch::nn::Module {
 public:
  ResNetBasicBlockImpl(int64_t in, int64_t planes, int64_t stride)
      : conv1(register_module("conv1", detail::conv3x3(in, planes, stride))),
        bn1(register_module("bn1", anode::SyncBatchNorm(planes))),
        conv2(register_module("conv2", detail::conv3x3(planes, planes))),
        bn2(register_module("bn2", anode::SyncBatchNorm(planes))) {
    if (stride != 1 || in != planes) {
      shortcut = register_module(
          "shortcut",
          torch::nn::Sequential(
              torch::nn::Conv2d(torch::nn::Conv2dOptions(in, planes, 1).stride(stride).bias(false)),
              anode::SyncBatchNorm(planes)));
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    auto out = torch::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    out = out + (shortcut ? shortcut->forward(x) : x);
    return torch::relu(out);
  }

  torch::nn::Conv2d conv1;
  anode::SyncBatchNorm bn1;
  torch::nn::Conv2d conv2;
  anode::SyncBatchNorm bn2;
  torch::nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(ResNetBasicBlock);

/// The ODE right-hand side f(z) = ReLU(BN(conv3x3(ReLU(BN(conv3x3(z)))))): the BasicBlock's
/// residual branch. One Euler step with dt = 1 is z + f(z), the residual block itself (with the
/// final ReLU moved inside the branch, as in the official code).
class ResNetRHSImpl : public torch::nn::Cloneable<ResNetRHSImpl> {
 public:
  explicit ResNetRHSImpl(int64_t dim) : dim_(dim) { reset(); }

  void reset() override {
    conv1 = register_module("conv1", detail::conv3x3(dim_, dim_));
    bn1 = register_module("bn1", anode::SyncBatchNorm(dim_));
    conv2 = register_module("conv2", detail::conv3x3(dim_, dim_));
    bn2 = register_module("bn2", anode::SyncBatchNorm(dim_));
  }

  torch::Tensor forward(torch::Tensor z) {
    return torch::relu(bn2(conv2(torch::relu(bn1(conv1(z))))));
  }

  void pretty_print(std::ostream& os) const override {
    os << "cifar::ResNetRHS(dim=" << dim_ << ")";
  }

  torch::nn::Conv2d conv1{nullptr};
  anode::SyncBatchNorm bn1{nullptr};
  torch::nn::Conv2d conv2{nullptr};
  anode::SyncBatchNorm bn2{nullptr};

 private:
  int64_t dim_;
};
TORCH_MODULE(ResNetRHS);

/// Options of `ResNetODE`.
///
/// Example:
/// ```
/// cifar::ResNetODE net(cifar::ResNetODEOptions().num_classes(10).width(0.25).ode(
///     anode::ODEBlockOptions().method(anode::Method::Euler).steps(2)));
/// ```
struct ResNetODEOptions {
  /// Output classes.
  TORCH_ARG(int64_t, num_classes) = 10;
  /// Channel multiplier (1 = the paper's 64-128-256-512); not in the official code.
  TORCH_ARG(double, width) = 1.0;
  /// Blocks per stage, as ResNet18's [2, 2, 2, 2]: the first of a stage is a BasicBlock, the rest
  /// ODE blocks (at least one, as the official `_make_layer2` builds).
  TORCH_ARG(std::vector<int64_t>, blocks) = std::vector<int64_t>{2, 2, 2, 2};
  /// Solver of every ODE block.
  TORCH_ARG(anode::ODEBlockOptions, ode) = anode::ODEBlockOptions();
};

/// ResNet18-ODE: stem, four (BasicBlock, ODE blocks) stages, global pooling, linear.
class ResNetODEImpl : public ClassifierImpl {
 public:
  using Block = anode::ODEBlock<ResNetRHSImpl>;

  explicit ResNetODEImpl(ResNetODEOptions options) : options_(std::move(options)) {
    TORCH_CHECK(options_.blocks().size() == 4, "cifar::ResNetODE: blocks must have 4 entries, got ",
                options_.blocks().size());
    TORCH_CHECK(options_.width() > 0, "cifar::ResNetODE: width must be > 0, got ",
                options_.width());
    const double w = options_.width();
    int64_t in = scaled(64, w);
    conv1 = register_module("conv1", detail::conv3x3(3, in));
    bn1 = register_module("bn1", anode::SyncBatchNorm(in));
    const int64_t planes[4] = {64, 128, 256, 512};
    for (int s = 0; s < 4; ++s) {
      const int64_t out = scaled(planes[s], w);
      const std::string name = "layer" + std::to_string(s + 1);
      auto stage = torch::nn::Sequential();
      stage->push_back(ResNetBasicBlock(in, out, s == 0 ? 1 : 2));
      blocks_.push_back(register_module(name + "_1", stage));
      auto odes = torch::nn::Sequential();
      const int64_t n_ode = std::max<int64_t>(1, options_.blocks()[s] - 1);
      for (int64_t i = 0; i < n_ode; ++i) {
        Block block(ResNetRHS(out), options_.ode());
        odes->push_back(block);
      }
      blocks_.push_back(register_module(name + "_2", odes));
      in = out;
    }
    linear = register_module("linear", torch::nn::Linear(in, options_.num_classes()));
  }

  torch::Tensor forward(torch::Tensor x) override {
    auto out = torch::relu(bn1(conv1(x)));
    for (auto& stage : blocks_) out = stage->forward(out);
    // Global average pooling: the official avg_pool2d(out, 4) on the 4x4 map of a 32x32 input.
    out = out.mean({2, 3});
    return linear(out);
  }

  const ResNetODEOptions& options() const { return options_; }

  void pretty_print(std::ostream& os) const override {
    os << "cifar::ResNetODE(width=" << options_.width() << ", classes=" << options_.num_classes()
       << ", ode: " << options_.ode() << ")";
  }

  torch::nn::Conv2d conv1{nullptr};
  anode::SyncBatchNorm bn1{nullptr};
  torch::nn::Linear linear{nullptr};

 private:
  ResNetODEOptions options_;
  std::vector<torch::nn::Sequential> blocks_;  // layer1_1, layer1_2, ..., layer4_2
};
TORCH_MODULE(ResNetODE);

}  // namespace cifar
