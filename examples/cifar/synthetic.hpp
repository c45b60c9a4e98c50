#pragma once
// Tiny CIFAR-format files for tests and smoke runs: records in the exact binary layout of either
// release, with images a network can learn quickly (each class has its own colour and stripe
// direction, plus noise), written with the official file names.

#include "examples/cifar/cifar_data.hpp"

#include <torch/types.h>

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace cifar {

/// `n` records [n, record_bytes] of `kind`'s layout; labels cycle through the classes (CIFAR-100's
/// coarse label is fine / 5, as in the real release).
inline torch::Tensor synthetic_records(Kind kind, int64_t n, uint64_t seed = 0) {
  const Layout L = layout(kind);
  auto gen = at::detail::createCPUGenerator(seed);
  auto labels = torch::arange(n, torch::kLong).remainder(L.num_classes);
  auto lf = labels.to(torch::kFloat).view({n, 1, 1, 1});
  // Colour per class, stripes along x or y depending on the class's parity, then noise.
  auto ch = torch::arange(3, torch::kFloat).view({1, 3, 1, 1});
  auto colour = torch::sin(lf * 1.7 + ch * 2.1) * 0.35 + 0.5;
  auto pos = torch::arange(kImageSide, torch::kFloat);
  auto along_x = pos.view({1, 1, 1, kImageSide}), along_y = pos.view({1, 1, kImageSide, 1});
  auto parity = labels.remainder(2).to(torch::kFloat).view({n, 1, 1, 1});
  auto stripes = parity * torch::sin(along_x * 0.8) + (1 - parity) * torch::sin(along_y * 0.8);
  auto noise = torch::randn({n, 3, kImageSide, kImageSide}, gen) * 0.08;
  auto pixels = ((colour + 0.15 * stripes + noise).clamp(0, 1) * 255).round().to(torch::kUInt8);

  auto records = torch::empty({n, L.record_bytes()}, torch::kUInt8);
  records.narrow(1, L.label_bytes, kImageBytes).copy_(pixels.view({n, kImageBytes}));
  records.select(1, L.label_index).copy_(labels.to(torch::kUInt8));
  if (L.label_bytes == 2) records.select(1, 0).copy_(labels.div(5, "floor").to(torch::kUInt8));
  return records;
}

/// Writes `records` [N, record_bytes] to `path` as raw bytes.
inline void write_records(const std::filesystem::path& path, const torch::Tensor& records) {
  auto r = records.contiguous();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TORCH_CHECK(out, "cifar: cannot write '", path.string(), "'");
  out.write(reinterpret_cast<const char*>(r.data_ptr<uint8_t>()),
            static_cast<std::streamsize>(r.numel()));
}

/// Writes a complete release of `kind` into `dir` (created if needed): `n_train` training records
/// spread over the release's training files and `n_test` test records.
inline void write_synthetic(const std::filesystem::path& dir, Kind kind, int64_t n_train,
                            int64_t n_test, uint64_t seed = 0) {
  std::filesystem::create_directories(dir);
  const Layout L = layout(kind);
  auto train = synthetic_records(kind, n_train, seed);
  const auto files = static_cast<int64_t>(L.train_files.size());
  for (int64_t f = 0, start = 0; f < files; ++f) {
    const int64_t count = (n_train - start) / (files - f);
    write_records(dir / L.train_files[static_cast<std::size_t>(f)], train.narrow(0, start, count));
    start += count;
  }
  write_records(dir / L.test_files.front(), synthetic_records(kind, n_test, seed + 1));
}

}  // namespace cifar
