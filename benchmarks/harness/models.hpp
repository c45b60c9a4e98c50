#pragma once
// The right-hand sides the benchmarks integrate, and a deterministic initialisation that the
// Python peers reproduce exactly (benchmarks/python/common.py), so that both languages train the
// very same network on the very same data and their gradients can be compared.

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace anode {
namespace bench {

/// Activation of a right-hand side.
enum class Act { ReLU, LeakyReLU, Tanh, None };

inline Act act_from_string(const std::string& s) {
  if (s == "relu") return Act::ReLU;
  if (s == "leaky" || s == "leaky_relu" || s == "leakyrelu") return Act::LeakyReLU;
  if (s == "tanh") return Act::Tanh;
  if (s == "none" || s == "linear") return Act::None;
  throw std::invalid_argument("unknown activation '" + s + "'; expected relu, leaky, tanh or none");
}

inline const char* to_string(Act a) {
  switch (a) {
    case Act::ReLU:
      return "relu";
    case Act::LeakyReLU:
      return "leaky";
    case Act::Tanh:
      return "tanh";
    case Act::None:
      return "none";
  }
  return "?";
}

/// Negative slope of the leaky ReLU everywhere in the benchmarks.
constexpr double kLeakySlope = 0.1;

inline torch::Tensor activate(const torch::Tensor& x, Act a) {
  switch (a) {
    case Act::ReLU:
      return torch::relu(x);
    case Act::LeakyReLU:
      return torch::leaky_relu(x, kLeakySlope);
    case Act::Tanh:
      return torch::tanh(x);
    case Act::None:
      return x;
  }
  return x;
}

/// Options of the convolutional right-hand side.
struct ConvRHSOptions {
  /// Channels in and out (the state is [batch, channels, H, W]).
  TORCH_ARG(int64_t, channels) = 32;
  /// 1: act(bn(conv(z))); 2: act(bn2(conv2(act(bn1(conv1(z)))))), the official ANODE code's
  /// ResNet ODE function (BasicBlock2).
  TORCH_ARG(int64_t, convs) = 2;
  /// BatchNorm after each convolution.
  TORCH_ARG(bool, batchnorm) = true;
  /// The activation after each (convolution, BatchNorm).
  TORCH_ARG(Act, act) = Act::ReLU;
  /// Bias in the convolutions (off when BatchNorm follows, as in the official code).
  TORCH_ARG(bool, bias) = false;
};

/// 3x3 same-padding convolutional RHS; counts its evaluations.
struct ConvRHSImpl : torch::nn::Module {
  explicit ConvRHSImpl(ConvRHSOptions o = {}) : opts(o) {
    if (o.convs() != 1 && o.convs() != 2)
      throw std::invalid_argument("ConvRHS: convs must be 1 or 2, got " +
                                  std::to_string(o.convs()));
    auto conv = [&] {
      return torch::nn::Conv2d(
          torch::nn::Conv2dOptions(o.channels(), o.channels(), 3).padding(1).bias(o.bias()));
    };
    conv1 = register_module("conv1", conv());
    if (o.batchnorm()) bn1 = register_module("bn1", torch::nn::BatchNorm2d(o.channels()));
    if (o.convs() == 2) {
      conv2 = register_module("conv2", conv());
      if (o.batchnorm()) bn2 = register_module("bn2", torch::nn::BatchNorm2d(o.channels()));
    }
  }
  torch::Tensor forward(torch::Tensor z) {
    ++evals;
    auto h = conv1(z);
    if (!bn1.is_empty()) h = bn1(h);
    h = activate(h, opts.act());
    if (!conv2.is_empty()) {
      h = conv2(h);
      if (!bn2.is_empty()) h = bn2(h);
      h = activate(h, opts.act());
    }
    return h;
  }
  ConvRHSOptions opts;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  int64_t evals = 0;  ///< forward calls so far (set to 0 to restart counting)
};
TORCH_MODULE(ConvRHS);

/// dim -> hidden -> dim MLP RHS (a 2-64-2 tanh MLP by default): tiny FLOPs, so the per-step
/// overhead of the integrator and of autograd dominates. Counts its evaluations.
struct MlpRHSImpl : torch::nn::Module {
  MlpRHSImpl(int64_t dim = 2, int64_t hidden = 64, Act act = Act::Tanh) : act(act) {
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  }
  torch::Tensor forward(torch::Tensor z) {
    ++evals;
    return fc2(activate(fc1(z), act));
  }
  Act act;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  int64_t evals = 0;
};
TORCH_MODULE(MlpRHS);

/// Deterministic pseudo-random values: amp * sin(0.7548776662466927 * j + 1.2345 * (seed + 1)),
/// j = 0, 1, ... in row-major order, computed in float64 and cast to `dtype`. Reproduced
/// bit-for-bit by benchmarks/python/common.py (same LibTorch kernels).
inline torch::Tensor det_values(torch::IntArrayRef shape, int64_t seed, double amp,
                                torch::Dtype dtype = torch::kFloat32) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  auto j = torch::arange(n, torch::kFloat64);
  auto v = torch::sin(j * 0.7548776662466927 + 1.2345 * static_cast<double>(seed + 1)) * amp;
  return v.reshape(shape).to(dtype);
}

/// Fills every parameter of `m` deterministically, in `parameters()` order (parameter i gets seed
/// `seed + i`): weight matrices and kernels with standard deviation weight_scale / sqrt(fan_in),
/// 1-D weights (BatchNorm's gamma) with 1 + 0.1 * values, biases with 0.1 * values. The Python
/// peers apply the same rule to the same parameter order.
inline void det_init(torch::nn::Module& m, int64_t seed, double weight_scale = 1.0) {
  torch::NoGradGuard no_grad;
  int64_t i = 0;
  for (auto& item : m.named_parameters()) {
    auto& p = item.value();
    const std::string& name = item.key();
    const bool is_weight = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0;
    torch::Tensor v;
    if (p.dim() > 1) {
      const double fan_in = static_cast<double>(p.numel() / p.size(0));
      // sin has variance 1/2, so amplitude sqrt(2/fan_in) gives standard deviation 1/sqrt(fan_in).
      v = det_values(p.sizes(), seed + i, weight_scale * std::sqrt(2.0 / fan_in), torch::kFloat64);
    } else if (is_weight) {
      v = 1.0 + det_values(p.sizes(), seed + i, 0.1, torch::kFloat64);
    } else {
      v = det_values(p.sizes(), seed + i, 0.1, torch::kFloat64);
    }
    p.copy_(v.to(p.dtype()));
    ++i;
  }
}

}  // namespace bench
}  // namespace anode
