#pragma once
// Batched data augmentation for CIFAR: random crop after zero padding, horizontal flip and
// per-channel normalisation, applied to a whole uint8 batch with a handful of tensor ops (no
// per-image loop). Training draws each image's crop and flip from (seed, epoch, its index in the
// split), so the randomness depends on the sample alone: not on the loader thread, the batch, the
// rank or the number of ranks of a data-parallel run. (An overload takes an explicit generator.)

#include "examples/cifar/cifar_data.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <vector>

namespace cifar {

/// Per-channel mean and standard deviation of a release's training images (on the [0, 1] scale).
struct ChannelStats {
  std::array<double, 3> mean;
  std::array<double, 3> std;
};

/// The statistics the official ANODE code and most CIFAR code bases normalise with.
inline ChannelStats channel_stats(Kind kind) {
  if (kind == Kind::Cifar10) return {{0.4914, 0.4822, 0.4465}, {0.2023, 0.1994, 0.2010}};
  return {{0.5071, 0.4865, 0.4409}, {0.2673, 0.2564, 0.2762}};
}

/// Options of `augment_batch`.
///
/// Example:
/// ```
/// auto opts = cifar::AugmentOptions(cifar::channel_stats(cifar::Kind::Cifar10)).padding(4);
/// auto x = cifar::augment_batch(images_u8, opts, generator);  // float [B, 3, 32, 32]
/// ```
struct AugmentOptions {
  explicit AugmentOptions(ChannelStats stats) : stats_(stats) {}
  /// Normalisation statistics.
  TORCH_ARG(ChannelStats, stats);
  /// Random crop: zero padding on each side before cropping back to the input size; 0 disables.
  TORCH_ARG(int64_t, padding) = 4;
  /// Random horizontal flip with probability 1/2.
  TORCH_ARG(bool, flip) = true;
  /// false: only convert and normalise (evaluation).
  TORCH_ARG(bool, random) = true;
};

/// uint8 [B, C, H, W] in 0..255 -> float in [0, 1].
inline torch::Tensor to_unit_float(const torch::Tensor& images) {
  TORCH_CHECK(images.scalar_type() == torch::kUInt8, "cifar: expected uint8 images, got ",
              images.scalar_type());
  return images.to(torch::kFloat).div_(255.0);
}

/// (x - mean) / std per channel, in place on `x` (float [B, 3, H, W]).
inline torch::Tensor normalize_(torch::Tensor x, const ChannelStats& s) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "cifar: normalize_ expects [B, 3, H, W], got ",
              x.sizes());
  auto mean = torch::tensor({s.mean[0], s.mean[1], s.mean[2]}, x.options()).view({1, 3, 1, 1});
  auto sd = torch::tensor({s.std[0], s.std[1], s.std[2]}, x.options()).view({1, 3, 1, 1});
  return x.sub_(mean).div_(sd);
}

namespace detail {
/// Crops rows [oy, oy + H) and columns [ox, ox + W) of x padded by `padding` zeros, mirroring the
/// images whose `flipped` is true. oy, ox: int64 [B, 1]; flipped: bool [B, 1] or undefined.
///
/// Done as two gathers: rows of the padded batch, then columns, the column index running
/// backwards for flipped images, so crop and flip cost one pass each.
inline torch::Tensor crop_flip(const torch::Tensor& x, int64_t padding, const torch::Tensor& oy,
                               const torch::Tensor& ox, const torch::Tensor& flipped) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto padded = padding > 0 ? torch::constant_pad_nd(x, {padding, padding, padding, padding})
                                  : x;  // [B, C, H + 2p, W + 2p]
  const auto idx = torch::TensorOptions().dtype(torch::kLong);
  const auto rows = oy + torch::arange(H, idx).view({1, H});  // [B, H]
  auto cols = torch::arange(W, idx).view({1, W}).expand({B, W});
  if (flipped.defined()) cols = torch::where(flipped, (W - 1) - cols, cols);
  cols = ox + cols;  // [B, W]
  const int64_t Wp = padded.size(3);
  auto out = padded.gather(2, rows.view({B, 1, H, 1}).expand({B, C, H, Wp}));
  return out.gather(3, cols.view({B, 1, 1, W}).expand({B, C, H, W}));
}

/// splitmix64's finaliser.
inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
}  // namespace detail

/// For every image independently: pad by `padding` zeros on each side, crop a random window of the
/// original size, and (if `flip`) mirror it horizontally with probability 1/2. x: [B, C, H, W].
inline torch::Tensor random_crop_flip(const torch::Tensor& x, int64_t padding, bool flip,
                                      at::Generator gen) {
  TORCH_CHECK(x.dim() == 4, "cifar: random_crop_flip expects [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(padding >= 0, "cifar: padding must be >= 0, got ", padding);
  const int64_t B = x.size(0);
  if (B == 0 || (padding == 0 && !flip)) return x;
  const auto idx = torch::TensorOptions().dtype(torch::kLong);
  const auto oy = torch::randint(0, 2 * padding + 1, {B, 1}, gen, idx);
  const auto ox = torch::randint(0, 2 * padding + 1, {B, 1}, gen, idx);
  torch::Tensor flipped;
  if (flip) flipped = torch::rand({B, 1}, gen) < 0.5;
  return detail::crop_flip(x, padding, oy, ox, flipped);
}

/// The same transformation, with each image's crop and flip drawn from (seed, epoch, its index in
/// the split) alone: a sample is augmented alike whichever batch, rank or number of ranks it
/// lands in (data-parallel runs shard batches across ranks).
inline torch::Tensor random_crop_flip(const torch::Tensor& x, int64_t padding, bool flip,
                                      const std::vector<int64_t>& samples, uint64_t seed,
                                      uint64_t epoch) {
  TORCH_CHECK(x.dim() == 4, "cifar: random_crop_flip expects [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(padding >= 0, "cifar: padding must be >= 0, got ", padding);
  const int64_t B = x.size(0);
  TORCH_CHECK(static_cast<int64_t>(samples.size()) == B,
              "cifar: random_crop_flip: ", samples.size(), " sample indices for ", B, " images");
  if (B == 0 || (padding == 0 && !flip)) return x;
  auto oy = torch::empty({B, 1}, torch::kLong), ox = torch::empty({B, 1}, torch::kLong);
  auto flipped = torch::empty({B, 1}, torch::kBool);
  const auto range = static_cast<uint64_t>(2 * padding + 1);
  for (int64_t i = 0; i < B; ++i) {
    const uint64_t h = detail::mix64(detail::mix64(detail::mix64(seed ^ 0xA06EULL) ^ epoch) ^
                                     static_cast<uint64_t>(samples[static_cast<std::size_t>(i)]));
    oy.data_ptr<int64_t>()[i] = static_cast<int64_t>((h & 0xFFFFF) % range);
    ox.data_ptr<int64_t>()[i] = static_cast<int64_t>(((h >> 20) & 0xFFFFF) % range);
    flipped.data_ptr<bool>()[i] = ((h >> 63) & 1) != 0;
  }
  return detail::crop_flip(x, padding, oy, ox, flip ? flipped : torch::Tensor());
}

/// The whole pipeline for one batch: uint8 [B, 3, H, W] -> float [B, 3, H, W], augmented (when
/// `opts.random()`) and normalised. Padding is zero in the [0, 1] scale, i.e. black pixels, as in
/// torchvision's RandomCrop(32, padding=4) before ToTensor/Normalize.
inline torch::Tensor augment_batch(const torch::Tensor& images, const AugmentOptions& opts,
                                   at::Generator gen) {
  auto x = to_unit_float(images);
  if (opts.random()) x = random_crop_flip(x, opts.padding(), opts.flip(), std::move(gen));
  return normalize_(x.contiguous(), opts.stats());
}

/// The same, with per-sample randomness from (seed, epoch, sample index): what training uses.
inline torch::Tensor augment_batch(const torch::Tensor& images, const AugmentOptions& opts,
                                   const std::vector<int64_t>& samples, uint64_t seed,
                                   uint64_t epoch) {
  auto x = to_unit_float(images);
  if (opts.random()) x = random_crop_flip(x, opts.padding(), opts.flip(), samples, seed, epoch);
  return normalize_(x.contiguous(), opts.stats());
}

/// A CPU generator seeded from a few integers (splitmix64 mixing), so that streams for different
/// (seed, epoch, batch) triples are unrelated.
inline at::Generator make_generator(uint64_t seed, uint64_t a = 0, uint64_t b = 0) {
  const auto mix = detail::mix64;
  return at::detail::createCPUGenerator(mix(mix(mix(seed) ^ a) ^ b));
}

}  // namespace cifar
