#pragma once
// The three networks of the ANODE paper's CIFAR-10 table (Gholami, Keutzer, Biros, IJCAI 2019,
// Table 1; the official repository's misc/comparison.png): AlexNet, ResNet-4 and ResNet-10, each
// with its residual blocks as ODE blocks. The paper gives no layer tables and the official code
// ships neither network, so docs/paper_networks.md sets out how each is defined here and why.
//
// Every ODE block's right-hand side is the official code's BasicBlock2 (conv3x3-BN-ReLU-conv3x3-
// BN-ReLU, `ResNetRHS`), so one Euler step of size 1 is exactly a residual block and the three
// training variants of the table differ only in the solver and the gradient.

#include "examples/cifar/classifier.hpp"
#include "examples/cifar/resnet_ode.hpp"

#include <anode/ode_block.hpp>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <anode/sync_batchnorm.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace cifar {

/// Options shared by the paper's networks.
struct PaperNetOptions {
  /// Output classes.
  TORCH_ARG(int64_t, num_classes) = 10;
  /// Channel multiplier (1 = the widths in docs/paper_networks.md).
  TORCH_ARG(double, width) = 1.0;
  /// Solver of every ODE block.
  TORCH_ARG(anode::ODEBlockOptions, ode) = anode::ODEBlockOptions();
};

namespace detail {

/// ReLU as a Sequential element (torch::relu is overloaded, so it cannot be passed by name).
inline std::function<torch::Tensor(torch::Tensor)> relu_fn() {
  return [](torch::Tensor x) { return torch::relu(x); };
}

/// Appends conv(k x k, padding k/2) - BN - ReLU, optionally strided, to `seq`: the plain layers
/// between ODE blocks, which change the width or the resolution (an ODE block keeps both).
/// (A Sequential cannot hold a Sequential, so the three are appended one by one.)
inline void append_conv_bn_relu(torch::nn::Sequential& seq, int64_t in, int64_t out, int64_t kernel,
                                int64_t stride = 1) {
  seq->push_back(torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false)));
  seq->push_back(anode::SyncBatchNorm(out));
  seq->push_back(torch::nn::Functional(relu_fn()));
}

inline void check_paper_options(const char* who, const PaperNetOptions& o) {
  TORCH_CHECK(o.width() > 0, "cifar::", who, ": width must be > 0, got ", o.width());
  TORCH_CHECK(o.num_classes() >= 1, "cifar::", who, ": num_classes must be >= 1, got ",
              o.num_classes());
}

}  // namespace detail

/// The ODE blocks of a network, registered in forward order; the paper networks share it.
class PaperNetImpl : public ClassifierImpl {
 public:
  using Block = anode::ODEBlock<ResNetRHSImpl>;

  /// Number of ODE blocks (the residual blocks of the discrete network).
  int64_t ode_block_count() const { return static_cast<int64_t>(ode_blocks_.size()); }

 protected:
  explicit PaperNetImpl(PaperNetOptions options) : options_(std::move(options)) {}

  /// An ODE block on `channels` channels, appended to `seq`.
  void add_ode_block(torch::nn::Sequential& seq, int64_t channels) {
    Block block(ResNetRHS(channels), options_.ode());
    ode_blocks_.push_back(block.ptr());
    seq->push_back(block);
  }

  PaperNetOptions options_;

 private:
  std::vector<std::shared_ptr<Block::Impl>> ode_blocks_;
};

/// AlexNet-ODE: AlexNet's five convolutions (64-192-384-256-256 channels, 5x5 5x5 3x3 3x3 3x3)
/// with BatchNorm, an ODE block between each two of them (four in all), max pooling after conv
/// 1, 2 and 5 (32 -> 16 -> 8 -> 4), and the CIFAR AlexNet classifier of cuda-convnet (fully
/// connected 384-192 with ReLU, then the class layer).
class AlexNetODEImpl : public PaperNetImpl {
 public:
  explicit AlexNetODEImpl(PaperNetOptions options) : PaperNetImpl(std::move(options)) {
    detail::check_paper_options("AlexNetODE", options_);
    const double w = options_.width();
    const int64_t c[5] = {scaled(64, w), scaled(192, w), scaled(384, w), scaled(256, w),
                          scaled(256, w)};
    const int64_t kernel[5] = {5, 5, 3, 3, 3};
    const bool pool_after[5] = {true, true, false, false, true};
    features = torch::nn::Sequential();
    int64_t in = 3;
    for (int i = 0; i < 5; ++i) {
      detail::append_conv_bn_relu(features, in, c[i], kernel[i]);
      if (pool_after[i])
        features->push_back(
            torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
      if (i < 4) add_ode_block(features, c[i]);
      in = c[i];
    }
    register_module("features", features);
    const int64_t fc1 = scaled(384, w), fc2 = scaled(192, w);
    classifier = register_module(
        "classifier",
        torch::nn::Sequential(torch::nn::Linear(in * 4 * 4, fc1),
                              torch::nn::Functional(detail::relu_fn()), torch::nn::Linear(fc1, fc2),
                              torch::nn::Functional(detail::relu_fn()),
                              torch::nn::Linear(fc2, options_.num_classes())));
  }

  torch::Tensor forward(torch::Tensor x) override {
    TORCH_CHECK(x.dim() == 4 && x.size(2) == 32 && x.size(3) == 32,
                "cifar::AlexNetODE expects [B, 3, 32, 32] images, got ", x.sizes());
    return classifier->forward(features->forward(x).flatten(1));
  }

  void pretty_print(std::ostream& os) const override {
    os << "cifar::AlexNetODE(width=" << options_.width() << ", classes=" << options_.num_classes()
       << ", ode: " << options_.ode() << ")";
  }

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
};
TORCH_MODULE(AlexNetODE);

/// ResNet-N-ODE for the paper's ResNet-4 and ResNet-10: He et al.'s CIFAR ResNet layout (a 3x3
/// stem of 16 channels, three stages of 16, 32 and 64 channels at 32x32, 16x16 and 8x8, global
/// average pooling, a linear classifier) with N residual blocks in all, each an ODE block. The
/// stages are joined by a strided conv3x3-BN-ReLU (an ODE block cannot change the shape).
class SmallResNetODEImpl : public PaperNetImpl {
 public:
  /// `blocks`: ODE blocks per stage, e.g. {2, 1, 1} for ResNet-4 and {4, 3, 3} for ResNet-10.
  SmallResNetODEImpl(PaperNetOptions options, std::vector<int64_t> blocks)
      : PaperNetImpl(std::move(options)), blocks_(std::move(blocks)) {
    detail::check_paper_options("SmallResNetODE", options_);
    TORCH_CHECK(blocks_.size() == 3, "cifar::SmallResNetODE: blocks must have 3 entries, got ",
                blocks_.size());
    const double w = options_.width();
    body = torch::nn::Sequential();
    int64_t in = scaled(16, w);
    detail::append_conv_bn_relu(body, 3, in, 3);
    const int64_t planes[3] = {16, 32, 64};
    for (int s = 0; s < 3; ++s) {
      TORCH_CHECK(blocks_[s] >= 1, "cifar::SmallResNetODE: every stage needs >= 1 block, got ",
                  blocks_[s], " in stage ", s + 1);
      const int64_t out = scaled(planes[s], w);
      if (s > 0) detail::append_conv_bn_relu(body, in, out, 3, /*stride=*/2);
      for (int64_t i = 0; i < blocks_[s]; ++i) add_ode_block(body, out);
      in = out;
    }
    register_module("body", body);
    linear = register_module("linear", torch::nn::Linear(in, options_.num_classes()));
  }

  torch::Tensor forward(torch::Tensor x) override { return linear(body->forward(x).mean({2, 3})); }

  void pretty_print(std::ostream& os) const override {
    int64_t n = 0;
    for (auto b : blocks_) n += b;
    os << "cifar::ResNet" << n << "ODE(width=" << options_.width()
       << ", classes=" << options_.num_classes() << ", ode: " << options_.ode() << ")";
  }

  torch::nn::Sequential body{nullptr};
  torch::nn::Linear linear{nullptr};

 private:
  std::vector<int64_t> blocks_;
};
TORCH_MODULE(SmallResNetODE);

/// The paper's ResNet-4: four residual (ODE) blocks, two at 16 channels and one at 32 and 64.
inline SmallResNetODE ResNet4ODE(PaperNetOptions options) {
  return SmallResNetODE(std::move(options), std::vector<int64_t>{2, 1, 1});
}

/// The paper's ResNet-10: ten residual (ODE) blocks, four at 16 channels, three at 32 and 64.
inline SmallResNetODE ResNet10ODE(PaperNetOptions options) {
  return SmallResNetODE(std::move(options), std::vector<int64_t>{4, 3, 3});
}

}  // namespace cifar
