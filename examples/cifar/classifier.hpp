#pragma once
// The interface the training loop sees: an image classifier. ResNetODE, SqNxtODE and the paper's
// networks implement it, so one binary trains any; their ODE blocks are found and reconfigured
// with anode::ode_blocks(model).

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>

namespace cifar {

/// An image classifier with anode ODE blocks: [B, 3, H, W] -> [B, num_classes] logits.
class ClassifierImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;

 protected:
  using torch::nn::Module::Module;
};

/// Number of scalar parameters (what Python's sum(p.numel() for p in m.parameters()) counts).
inline int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

/// Number of scalar buffer entries (BatchNorm statistics and batch counters).
inline int64_t count_buffers(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& b : m.buffers()) n += b.numel();
  return n;
}

/// `channels * width`, truncated like the official code's int(width_x * channels), at least 1.
inline int64_t scaled(int64_t channels, double width) {
  const auto c = static_cast<int64_t>(static_cast<double>(channels) * width);
  return c < 1 ? 1 : c;
}

}  // namespace cifar
