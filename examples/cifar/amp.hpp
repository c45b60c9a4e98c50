#pragma once
// anode-cifar's mixed precision (--amp) and memory format (--channels-last): the precision names,
// the checks of what this LibTorch can do, and the RAII autocast region that a training step's
// forward pass and loss run in. Backward and the optimizer step run outside it, as in PyTorch's
// recipe; anode replays the forward's autocast state in its recomputations (include/anode/detail/
// autocast.hpp), so an ODE block's gradient under autocast is still Backprop's.

#include <anode/detail/autocast.hpp>

#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <string>

namespace cifar {

/// The precision of a training step's forward pass (--amp).
enum class Amp {
  Off,   ///< fp32 throughout
  BF16,  ///< autocast to bfloat16 (CPU or CUDA); no loss scaling (bf16 has fp32's range)
  FP16,  ///< autocast to float16 (CUDA only), with dynamic loss scaling (grad_scaler.hpp)
};

inline const char* to_string(Amp a) {
  switch (a) {
    case Amp::Off:
      return "off";
    case Amp::BF16:
      return "bf16";
    case Amp::FP16:
      return "fp16";
  }
  return "?";
}

inline Amp amp_from_string(const std::string& s) {
  if (s == "off") return Amp::Off;
  if (s == "bf16") return Amp::BF16;
  if (s == "fp16") return Amp::FP16;
  TORCH_CHECK(false, "needs off, bf16 or fp16, got '", s, "'");
}

/// The autocast dtype of a precision (Off has none; Float is returned).
inline c10::ScalarType autocast_dtype(Amp a) {
  return a == Amp::BF16   ? c10::ScalarType::BFloat16
         : a == Amp::FP16 ? c10::ScalarType::Half
                          : c10::ScalarType::Float;
}

/// Whether this LibTorch can train with channels-last images and weights. LibTorch 1.13's
/// channels-last backward of a strided 1x1 convolution with few channels corrupts the heap (both
/// networks have one in every downsampling shortcut).
constexpr bool channels_last_supported() {
  return TORCH_VERSION_MAJOR >= 2;
}

/// What is wrong with --amp / --channels-last on `device` ("cpu", "cuda", "cuda:I"), or "".
inline std::string precision_options_error(Amp amp, const std::string& device, bool channels_last) {
  if (amp == Amp::FP16 && device.rfind("cuda", 0) != 0)
    return "option --amp fp16 needs --device cuda (got --device " + device +
           "): LibTorch's CPU autocast supports bf16 only; use --amp bf16 on the CPU";
  if (channels_last && !channels_last_supported())
    return "option --channels-last needs LibTorch >= 2.0 (this is LibTorch " TORCH_VERSION
           "): LibTorch 1.13's channels-last backward of a strided 1x1 convolution corrupts the "
           "heap, and both networks have one in every downsampling shortcut";
  return {};
}

/// Puts every 4-D parameter of `module` (the convolution weights) in channels-last order, in place
/// (the optimizer's references stay valid). For --channels-last; untested on LibTorch 2.x.
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
}

/// RAII: the calling thread runs under autocast to `amp`'s dtype on `device`'s type (CPU or CUDA)
/// until the end of the scope, which restores the caller's autocast state. As torch.autocast it
/// nests, and the outermost region clears the weight cache when it closes (the weights change at
/// the optimizer step). Amp::Off does nothing.
class AutocastScope {
 public:
  AutocastScope(Amp amp, const c10::Device& device)
      : saved_(anode::detail::AutocastState::capture()), active_(amp != Amp::Off) {
    if (!active_) return;
    TORCH_CHECK(device.is_cpu() || device.is_cuda(),
                "cifar: --amp needs a CPU or CUDA device, got ", device);
    TORCH_CHECK(
        !(amp == Amp::FP16 && device.is_cpu()),
        "cifar: --amp fp16 needs a CUDA device (LibTorch's CPU autocast supports bf16 only)");
    auto s = saved_;
    (device.is_cuda() ? s.cuda_enabled : s.cpu_enabled) = true;
    (device.is_cuda() ? s.cuda_dtype : s.cpu_dtype) = autocast_dtype(amp);
    s.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!active_) return;
    try {
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      saved_.apply();
    } catch (...) {
      // Never throw from a destructor (we may be unwinding from an error already).
    }
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  anode::detail::AutocastState saved_;
  bool active_ = false;
};

}  // namespace cifar
