#pragma once
// SqueezeNext-ODE for CIFAR, as in the official ANODE code (github.com/amirgholami/anode,
// models/sqnxt.py): a 3x3 stem of 64 channels, four stages of 32, 64, 128 and 256 channels, each
// one SqueezeNext block (with a shortcut) followed by ODE blocks whose right-hand side is the same
// five-conv bottleneck without a shortcut, then a 1x1 conv to 128 channels, global pooling and a
// linear classifier. The channel arithmetic, including where the official code truncates with
// int(), is reproduced exactly, so parameter counts match the Python model's at any width.
//
// Blocks per stage default to SqueezeNext-23's [6, 6, 8, 1]. The official `SqNxt_23_1x` passes
// [2, 2, 2, 2] (one ODE block per stage); `blocks({2, 2, 2, 2})` builds that model. As in the
// official `_make_layer2`, a stage gets max(1, blocks - 1) ODE blocks.

#include "examples/cifar/classifier.hpp"

#include <anode/ode_block.hpp>

#include <torch/nn/init.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <anode/sync_batchnorm.hpp>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

namespace cifar {

namespace detail {

/// int(x) of a non-negative double, at least 1 (tiny widths must not make empty convolutions).
inline int64_t trunc_channels(double x) {
  const auto c = static_cast<int64_t>(x);
  return c < 1 ? 1 : c;
}

/// The channels of the five convolutions of a SqueezeNext bottleneck.
struct SqnxtChannels {
  int64_t in, reduce1, reduce2, out;
  /// reduction: 1 for stride 2, 0.25 when the block narrows, else 0.5 (official code).
  static SqnxtChannels of(int64_t in, int64_t out, int64_t stride) {
    double reduction = 0.5;
    if (stride == 2) {
      reduction = 1.0;
    } else if (in > out) {
      reduction = 0.25;
    }
    const double r1 = static_cast<double>(in) * reduction;
    return {in, trunc_channels(r1), trunc_channels(r1 * 0.5), out};
  }
};

inline torch::nn::Conv2d conv(int64_t in, int64_t out, torch::ExpandingArray<2> kernel,
                              int64_t stride, torch::ExpandingArray<2> padding) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(true));
}

/// The five conv-BN-ReLU layers shared by both SqueezeNext blocks: 1x1 reduce (strided), 1x1
/// reduce, 1x3, 3x1, 1x1 expand. Registers them on `owner`.
struct SqnxtBottleneck {
  void build(torch::nn::Module& owner, const SqnxtChannels& c, int64_t stride) {
    const int64_t chans[6] = {c.in, c.reduce1, c.reduce2, c.reduce1, c.reduce1, c.out};
    const torch::ExpandingArray<2> kernels[5] = {{1, 1}, {1, 1}, {1, 3}, {3, 1}, {1, 1}};
    const torch::ExpandingArray<2> pads[5] = {{0, 0}, {0, 0}, {0, 1}, {1, 0}, {0, 0}};
    for (int i = 0; i < 5; ++i) {
      const std::string k = std::to_string(i + 1);
      convs[i] = owner.register_module(
          "conv" + k, conv(chans[i], chans[i + 1], kernels[i], i == 0 ? stride : 1, pads[i]));
      bns[i] = owner.register_module("bn" + k, anode::SyncBatchNorm(chans[i + 1]));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (int i = 0; i < 5; ++i) x = torch::relu(bns[i](convs[i](x)));
    return x;
  }
  torch::nn::Conv2d convs[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  anode::SyncBatchNorm bns[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
};

}  // namespace detail

/// SqueezeNext block: relu(bottleneck(x) + relu(shortcut(x))), the shortcut a strided 1x1 conv +
/// BN when the stride is 2 or the width changes (the official code's ReLU on the shortcut kept).
class SqnxtBlockImpl : public torch::nn::Module {
 public:
  SqnxtBlockImpl(int64_t in, int64_t out, int64_t stride) {
    body_.build(*this, detail::SqnxtChannels::of(in, out, stride), stride);
    if (stride == 2 || in != out) {
      shortcut = register_module(
          "shortcut",
          torch::nn::Sequential(detail::conv(in, out, 1, stride, 0), anode::SyncBatchNorm(out)));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    auto out = body_.forward(x);
    out = out + torch::relu(shortcut ? shortcut->forward(x) : x);
    return torch::relu(out);
  }
  torch::nn::Sequential shortcut{nullptr};

 private:
  detail::SqnxtBottleneck body_;
};
TORCH_MODULE(SqnxtBlock);

/// The ODE right-hand side: the SqueezeNext bottleneck at constant width `dim`, no shortcut.
class SqnxtRHSImpl : public torch::nn::Cloneable<SqnxtRHSImpl> {
 public:
  explicit SqnxtRHSImpl(int64_t dim) : dim_(dim) { reset(); }
  void reset() override { body_.build(*this, detail::SqnxtChannels::of(dim_, dim_, 1), 1); }
  torch::Tensor forward(torch::Tensor z) { return body_.forward(z); }
  void pretty_print(std::ostream& os) const override {
    os << "cifar::SqnxtRHS(dim=" << dim_ << ")";
  }

 private:
  int64_t dim_;
  detail::SqnxtBottleneck body_;
};
TORCH_MODULE(SqnxtRHS);

/// Options of `SqNxtODE`.
///
/// Example:
/// ```
/// cifar::SqNxtODE net(cifar::SqNxtODEOptions().num_classes(100).width(0.5));
/// ```
struct SqNxtODEOptions {
  /// Output classes.
  TORCH_ARG(int64_t, num_classes) = 10;
  /// The official `width_x`: multiplies every channel count (1 = SqNxt-23-1x).
  TORCH_ARG(double, width) = 1.0;
  /// Blocks per stage: [6, 6, 8, 1] is SqueezeNext-23; the official SqNxt_23_1x uses [2, 2, 2, 2].
  TORCH_ARG(std::vector<int64_t>, blocks) = std::vector<int64_t>{6, 6, 8, 1};
  /// Solver of every ODE block.
  TORCH_ARG(anode::ODEBlockOptions, ode) = anode::ODEBlockOptions();
};

/// SqueezeNext-23-ODE.
class SqNxtODEImpl : public ClassifierImpl {
 public:
  using Block = anode::ODEBlock<SqnxtRHSImpl>;

  explicit SqNxtODEImpl(SqNxtODEOptions options) : options_(std::move(options)) {
    TORCH_CHECK(options_.blocks().size() == 4, "cifar::SqNxtODE: blocks must have 4 entries, got ",
                options_.blocks().size());
    TORCH_CHECK(options_.width() > 0, "cifar::SqNxtODE: width must be > 0, got ", options_.width());
    const double w = options_.width();
    auto ch = [w](int64_t c) { return detail::trunc_channels(w * static_cast<double>(c)); };
    // `in` is the official code's unscaled self.in_channels; every width is ch(.) of it.
    int64_t in = 64;
    conv1 = register_module("conv1", detail::conv(3, ch(in), 3, 1, 1));
    bn1 = register_module("bn1", anode::SyncBatchNorm(ch(in)));
    const int64_t widths[4] = {32, 64, 128, 256};
    for (int s = 0; s < 4; ++s) {
      const std::string name = "stage" + std::to_string(s + 1);
      auto first = torch::nn::Sequential();
      first->push_back(SqnxtBlock(ch(in), ch(widths[s]), s == 0 ? 1 : 2));
      in = widths[s];
      stages_.push_back(register_module(name + "_1", first));
      auto odes = torch::nn::Sequential();
      const int64_t n_ode = std::max<int64_t>(1, options_.blocks()[s] - 1);
      for (int64_t i = 0; i < n_ode; ++i) {
        Block block(SqnxtRHS(ch(in)), options_.ode());
        odes->push_back(block);
      }
      stages_.push_back(register_module(name + "_2", odes));
    }
    conv2 = register_module("conv2", detail::conv(ch(in), ch(128), 1, 1, 0));
    bn2 = register_module("bn2", anode::SyncBatchNorm(ch(128)));
    linear = register_module("linear", torch::nn::Linear(ch(128), options_.num_classes()));
    init_like_official();
  }

  torch::Tensor forward(torch::Tensor x) override {
    auto out = torch::relu(bn1(conv1(x)));
    for (auto& stage : stages_) out = stage->forward(out);
    out = torch::relu(bn2(conv2(out)));
    out = out.mean({2, 3});  // the official avg_pool2d(out, 4) on a 32x32 input's 4x4 map
    return linear(out);
  }

  const SqNxtODEOptions& options() const { return options_; }

  void pretty_print(std::ostream& os) const override {
    os << "cifar::SqNxtODE(width=" << options_.width() << ", classes=" << options_.num_classes()
       << ", blocks=" << c10::IntArrayRef(options_.blocks()) << ", ode: " << options_.ode() << ")";
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  anode::SyncBatchNorm bn1{nullptr}, bn2{nullptr};
  torch::nn::Linear linear{nullptr};

 private:
  // train.py's conv_init: convolutions with a bias (all of SqueezeNext's) get Xavier-uniform
  // weights with gain sqrt(2) and zero bias; BatchNorm starts at weight 1, bias 0 (the default).
  void init_like_official() {
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* c = m->as<torch::nn::Conv2d>(); c != nullptr && c->bias.defined()) {
        torch::nn::init::xavier_uniform_(c->weight, std::sqrt(2.0));
        torch::nn::init::zeros_(c->bias);
      }
    }
  }

  SqNxtODEOptions options_;
  std::vector<torch::nn::Sequential> stages_;
};
TORCH_MODULE(SqNxtODE);

}  // namespace cifar
