#pragma once
// Dynamic loss scaling for fp16 training (--amp fp16), after torch.cuda.amp.GradScaler, which
// LibTorch's C++ API does not have. fp16's range is narrow: small gradients underflow to zero. The
// loss is multiplied by a scale S (2^16 at first) before backward, the gradients are divided by S
// before the optimizer step, and a step whose gradients hold an inf or a NaN is skipped and halves
// S; after `growth_interval` finite steps in a row, S doubles.
//
// Two implementations of the two kernels, with the same semantics:
// - on CUDA, ATen's `_amp_foreach_non_finite_check_and_unscale_` and `_amp_update_scale_` (the ops
//   torch.cuda.amp.GradScaler calls);
// - on the CPU, plain tensor ops (detail::unscale_plain, detail::update_scale_plain): LibTorch 1.13
//   registers those two ATen ops for CUDA only. They follow the CUDA kernels of
//   aten/src/ATen/native/cuda/AmpKernels.cu line by line.
// The trainer uses the scaler on CUDA only (--amp fp16 needs CUDA), the tests use it on both.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace cifar {

/// The settings of a GradScaler: torch.cuda.amp.GradScaler's defaults.
///
/// Example:
///   cifar::GradScaler scaler(device, cifar::GradScalerOptions().growth_interval(1000));
struct GradScalerOptions {
  /// The first scale.
  TORCH_ARG(double, init_scale) = 65536.0;
  /// The scale is multiplied by this after `growth_interval` finite steps in a row.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// The scale is multiplied by this after a step with an inf or NaN gradient (which is skipped).
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Finite steps in a row before the scale grows.
  TORCH_ARG(int64_t, growth_interval) = 2000;
};

namespace detail {

/// Multiplies every gradient by `inv_scale` (a 1-element float tensor) in place and sets
/// `found_inf` (a 1-element float tensor) to 1 if any of them holds an inf or a NaN, leaving it as
/// it was otherwise: ATen's _amp_foreach_non_finite_check_and_unscale_ in plain tensor ops. As the
/// CUDA kernel, it computes in float for reduced-precision gradients and unscales non-finite
/// gradients too.
inline void unscale_plain(const std::vector<torch::Tensor>& grads, torch::Tensor& found_inf,
                          const torch::Tensor& inv_scale) {
  TORCH_CHECK(found_inf.numel() == 1 && found_inf.scalar_type() == torch::kFloat,
              "found_inf must be a 1-element float tensor");
  TORCH_CHECK(inv_scale.numel() == 1 && inv_scale.scalar_type() == torch::kFloat,
              "inv_scale must be a 1-element float tensor");
  const auto inv = inv_scale.reshape({});  // 0-dim: broadcasts into a gradient of any shape
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    found_inf.masked_fill_(torch::isfinite(g).logical_not().any(), 1.0);
    if (g.scalar_type() == torch::kHalf || g.scalar_type() == torch::kBFloat16)
      g.copy_(g.to(torch::kFloat).mul_(inv));
    else
      g.mul_(inv);
  }
}

/// ATen's _amp_update_scale_ in plain tensor ops: `scale` (1-element float) and `growth_tracker`
/// (1-element int) are updated in place from `found_inf` (1-element float).
inline void update_scale_plain(torch::Tensor& scale, torch::Tensor& growth_tracker,
                               const torch::Tensor& found_inf, double growth_factor,
                               double backoff_factor, int64_t growth_interval) {
  TORCH_CHECK(scale.numel() == 1 && scale.scalar_type() == torch::kFloat,
              "scale must be a 1-element float tensor");
  TORCH_CHECK(growth_tracker.numel() == 1 && growth_tracker.scalar_type() == torch::kInt,
              "growth_tracker must be a 1-element int tensor");
  float s = scale.item<float>();
  int32_t tracker = growth_tracker.item<int32_t>();
  if (found_inf.item<float>() != 0.0f) {
    s = static_cast<float>(s * backoff_factor);
    tracker = 0;
  } else {
    const int32_t successful = tracker + 1;
    if (successful == growth_interval) {
      const auto grown = static_cast<float>(s * growth_factor);
      if (std::isfinite(grown)) s = grown;  // the scale never grows to inf
      tracker = 0;
    } else {
      tracker = successful;
    }
  }
  scale.fill_(s);
  growth_tracker.fill_(tracker);
}

/// The unscale kernel for gradients on `device`: ATen's on CUDA, the plain one elsewhere.
inline void unscale(const std::vector<torch::Tensor>& grads, torch::Tensor& found_inf,
                    const torch::Tensor& inv_scale) {
  if (found_inf.is_cuda())
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
  else
    unscale_plain(grads, found_inf, inv_scale);
}

/// The scale update on the scale's device: ATen's on CUDA, the plain one elsewhere.
inline void update_scale(torch::Tensor& scale, torch::Tensor& growth_tracker,
                         const torch::Tensor& found_inf, double growth_factor,
                         double backoff_factor, int64_t growth_interval) {
  if (scale.is_cuda())
    at::_amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
                           growth_interval);
  else
    update_scale_plain(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
                       growth_interval);
}

}  // namespace detail

/// Dynamic loss scaling around an optimizer. One training step:
///
///   scaler.scale(loss).backward();
///   scaler.step(optimizer);  // unscales the gradients; skips the step if one is inf or NaN
///   scaler.update();         // halves the scale after a skipped step, grows it after many good
///
/// The scale and the growth tracker live on the parameters' device, as in PyTorch; `step` reads
/// one float back to decide whether to skip (PyTorch's GradScaler does the same).
class GradScaler {
 public:
  explicit GradScaler(const c10::Device& device, GradScalerOptions options = {})
      : options_(options),
        scale_(torch::full({1}, options.init_scale(), torch::dtype(torch::kFloat).device(device))),
        growth_tracker_(torch::zeros({1}, torch::dtype(torch::kInt).device(device))),
        found_inf_(torch::zeros({1}, torch::dtype(torch::kFloat).device(device))) {
    TORCH_CHECK(options.init_scale() > 0, "GradScaler: init_scale must be > 0, got ",
                options.init_scale());
    TORCH_CHECK(options.growth_factor() > 1, "GradScaler: growth_factor must be > 1, got ",
                options.growth_factor());
    TORCH_CHECK(options.backoff_factor() > 0 && options.backoff_factor() < 1,
                "GradScaler: backoff_factor must be in (0, 1), got ", options.backoff_factor());
    TORCH_CHECK(options.growth_interval() >= 1, "GradScaler: growth_interval must be >= 1, got ",
                options.growth_interval());
  }

  /// `loss` times the scale (in fp32).
  torch::Tensor scale(const torch::Tensor& loss) const {
    return loss.to(torch::kFloat) * scale_.to(loss.device()).reshape({});
  }

  /// Divides the gradients of `optimizer`'s parameters by the scale in place and records whether
  /// any is inf or NaN. Called by `step` unless already called since the last `update` (to clip
  /// the unscaled gradients, say).
  void unscale(torch::optim::Optimizer& optimizer) {
    TORCH_CHECK(!unscaled_, "GradScaler: unscale was already called since the last update");
    std::vector<torch::Tensor> grads;
    for (auto& group : optimizer.param_groups())
      for (auto& p : group.params())
        if (p.grad().defined()) grads.push_back(p.grad());
    // As PyTorch: the reciprocal in double, then float.
    const auto inv_scale = scale_.to(torch::kDouble).reciprocal().to(torch::kFloat);
    found_inf_.zero_();
    detail::unscale(grads, found_inf_, inv_scale);
    unscaled_ = true;
  }

  /// Unscales (if not done yet) and runs `optimizer.step()` unless a gradient is inf or NaN.
  /// Returns whether the step was taken; a skipped one is counted.
  bool step(torch::optim::Optimizer& optimizer) {
    if (!unscaled_) unscale(optimizer);
    TORCH_CHECK(!stepped_, "GradScaler: step was already called since the last update");
    stepped_ = true;
    if (found_inf_.item<float>() != 0.0f) {
      ++skipped_steps_;
      return false;
    }
    optimizer.step();
    return true;
  }

  /// Updates the scale from the last step's gradients (after `step`).
  void update() {
    TORCH_CHECK(stepped_, "GradScaler: update needs a step first");
    detail::update_scale(scale_, growth_tracker_, found_inf_, options_.growth_factor(),
                         options_.backoff_factor(), options_.growth_interval());
    unscaled_ = stepped_ = false;
  }

  /// The scale now.
  double scale_value() const { return scale_.item<float>(); }
  /// Finite steps in a row since the scale last changed.
  int64_t growth_tracker() const { return growth_tracker_.item<int32_t>(); }
  /// Steps skipped for an inf or NaN gradient since the run began.
  int64_t skipped_steps() const { return skipped_steps_; }
  const GradScalerOptions& options() const { return options_; }

  /// "fp16 loss scale 32768, 3 steps skipped so far" (the trainer's per-epoch line).
  std::string summary() const {
    std::ostringstream os;
    os << "fp16 loss scale " << std::setprecision(17) << scale_value() << ", " << skipped_steps_
       << (skipped_steps_ == 1 ? " step" : " steps") << " skipped so far";
    return os.str();
  }

  /// Writes the scale, the growth tracker and the skipped-step count (keys "amp/...").
  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("amp/scale", c10::IValue(scale_value()));
    archive.write("amp/growth_tracker", c10::IValue(growth_tracker()));
    archive.write("amp/skipped_steps", c10::IValue(skipped_steps_));
  }

  /// Reads what `save` wrote; `path` names the checkpoint in the error when it has none.
  void load(torch::serialize::InputArchive& archive, const std::string& path = "") {
    c10::IValue scale, tracker, skipped;
    TORCH_CHECK(archive.try_read("amp/scale", scale) &&
                    archive.try_read("amp/growth_tracker", tracker) &&
                    archive.try_read("amp/skipped_steps", skipped),
                "cifar: checkpoint '", path,
                "' has no fp16 loss-scaler state (it was not written by an --amp fp16 run)");
    scale_.fill_(scale.toDouble());
    growth_tracker_.fill_(tracker.toInt());
    skipped_steps_ = skipped.toInt();
    unscaled_ = stepped_ = false;
  }

 private:
  GradScalerOptions options_;
  torch::Tensor scale_;           // float [1]
  torch::Tensor growth_tracker_;  // int [1]
  torch::Tensor found_inf_;       // float [1]: 1 if the last unscale saw an inf or NaN
  int64_t skipped_steps_ = 0;
  bool unscaled_ = false, stepped_ = false;
};

}  // namespace cifar
