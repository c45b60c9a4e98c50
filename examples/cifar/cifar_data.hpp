#pragma once
// Reading the official CIFAR-10 / CIFAR-100 *binary* releases into memory.
//
// Each split is read straight into one uint8 tensor holding the files' records back to back, and
// the images are a strided view into it: no per-sample allocation, no copy of the pixels. A batch
// is later gathered from that view with a single index_select (see dataset.hpp).
//
//   CIFAR-10  (cifar-10-batches-bin/): data_batch_1..5.bin, test_batch.bin,
//             records of 3073 bytes: <label 0..9> <1024 R> <1024 G> <1024 B>
//   CIFAR-100 (cifar-100-binary/):     train.bin, test.bin,
//             records of 3074 bytes: <coarse 0..19> <fine 0..99> <3072 pixels>; we use the fine
//             label

#include <torch/types.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace cifar {

/// Which CIFAR release a directory holds.
enum class Kind { Cifar10, Cifar100 };

inline const char* to_string(Kind k) {
  return k == Kind::Cifar10 ? "cifar10" : "cifar100";
}

/// Parses "cifar10" | "cifar100" (case-sensitive, as typed on the command line).
inline Kind kind_from_string(const std::string& s) {
  if (s == "cifar10") return Kind::Cifar10;
  if (s == "cifar100") return Kind::Cifar100;
  TORCH_CHECK(false, "unknown dataset '", s, "'; expected cifar10 or cifar100");
}

constexpr int64_t kImageSide = 32;
constexpr int64_t kImageBytes = 3 * kImageSide * kImageSide;  // 3072

/// The byte layout of one release.
struct Layout {
  int64_t label_bytes;     ///< label bytes in front of the pixels of every record
  int64_t label_index;     ///< which of them is the class label we train on
  int64_t num_classes;     ///< classes of that label
  int64_t coarse_classes;  ///< CIFAR-100's coarse label range (checked too); 0 for CIFAR-10
  std::vector<std::string> train_files;
  std::vector<std::string> test_files;
  const char* subdir;  ///< the folder name the official archive unpacks to

  int64_t record_bytes() const { return label_bytes + kImageBytes; }
};

inline Layout layout(Kind kind) {
  if (kind == Kind::Cifar10) {
    return {1,
            0,
            10,
            0,
            {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
             "data_batch_5.bin"},
            {"test_batch.bin"},
            "cifar-10-batches-bin"};
  }
  return {2, 1, 100, 20, {"train.bin"}, {"test.bin"}, "cifar-100-binary"};
}

/// One split in memory.
struct Split {
  /// uint8 [N, 3, 32, 32] (channels R, G, B), usually a strided view into `records`.
  torch::Tensor images;
  /// int64 [N], class indices in [0, num_classes).
  torch::Tensor labels;
  /// The raw file contents [N, record_bytes] the images view (kept alive here); may be undefined
  /// for splits built from tensors.
  torch::Tensor records;
  int64_t num_classes = 10;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }

  /// The first `n` samples (all of them if n <= 0 or n >= size()); a view, nothing is copied.
  Split first(int64_t n) const {
    if (n <= 0 || n >= size()) return *this;
    Split s = *this;
    s.images = images.narrow(0, 0, n);
    s.labels = labels.narrow(0, 0, n);
    return s;
  }
};

/// Builds a split from in-memory tensors (tests, other sources): images uint8 [N,3,32,32].
inline Split split_from_tensors(torch::Tensor images, torch::Tensor labels, int64_t num_classes) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.scalar_type() == torch::kUInt8,
              "cifar: images must be uint8 [N, 3, H, W], got ", images.scalar_type(), " ",
              images.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == images.size(0),
              "cifar: labels must be [N] with N = ", images.size(0), ", got ", labels.sizes());
  Split s;
  s.images = std::move(images);
  s.labels = labels.to(torch::kInt64);
  s.num_classes = num_classes;
  if (s.size() > 0) {
    const auto lo = s.labels.min().item<int64_t>(), hi = s.labels.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_classes, "cifar: labels must lie in [0, ", num_classes,
                "), got [", lo, ", ", hi, "]");
  }
  return s;
}

namespace detail {

namespace fs = std::filesystem;

/// The directory that holds the files: `dir` itself, or the folder the official archive unpacks
/// to inside it (so both `--data data` and `--data data/cifar-10-batches-bin` work).
inline fs::path resolve_dir(const std::string& dir, Kind kind) {
  const Layout L = layout(kind);
  const fs::path root(dir);
  TORCH_CHECK(fs::is_directory(root), "cifar: data directory '", dir,
              "' does not exist or is not a directory");
  if (fs::exists(root / L.train_files.front()) || fs::exists(root / L.test_files.front()))
    return root;
  if (fs::is_directory(root / L.subdir)) return root / L.subdir;
  // Say what is there when it is the other release: the commonest mistake.
  const Layout other = layout(kind == Kind::Cifar10 ? Kind::Cifar100 : Kind::Cifar10);
  const bool looks_other = fs::exists(root / other.train_files.front()) ||
                           fs::exists(root / other.subdir / other.train_files.front());
  TORCH_CHECK(false, "cifar: '", (root / L.train_files.front()).string(), "' not found: '", dir,
              "' does not hold the ", to_string(kind), " binary layout (",
              kind == Kind::Cifar10 ? "data_batch_1..5.bin, test_batch.bin" : "train.bin, test.bin",
              ")",
              looks_other ? std::string("; it looks like ") +
                                to_string(kind == Kind::Cifar10 ? Kind::Cifar100 : Kind::Cifar10) +
                                ", pass --dataset accordingly"
                          : std::string());
}

/// Checks a file's existence and size, returning its number of records.
inline int64_t count_records(const fs::path& file, const Layout& L) {
  TORCH_CHECK(fs::is_regular_file(file), "cifar: file '", file.string(), "' not found");
  const auto bytes = static_cast<int64_t>(fs::file_size(file));
  const int64_t rec = L.record_bytes();
  TORCH_CHECK(bytes > 0, "cifar: file '", file.string(), "' is empty");
  TORCH_CHECK(bytes % rec == 0, "cifar: file '", file.string(), "' has ", bytes,
              " bytes, not a multiple of the ", rec, "-byte record (truncated or corrupt?",
              (bytes % (rec == 3073 ? 3074 : 3073) == 0)
                  ? std::string(" its size fits the other CIFAR release: check --dataset")
                  : std::string(),
              ")");
  return bytes / rec;
}

/// Reads `files` back to back into one [N, record_bytes] uint8 tensor and checks every label.
inline Split read_files(const fs::path& dir, const std::vector<std::string>& files,
                        const Layout& L) {
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (const auto& f : files) {
    counts.push_back(count_records(dir / f, L));
    total += counts.back();
  }
  const int64_t rec = L.record_bytes();
  auto records = torch::empty({total, rec}, torch::kUInt8);
  int64_t row = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const fs::path file = dir / files[i];
    std::ifstream in(file, std::ios::binary);
    TORCH_CHECK(in, "cifar: cannot open '", file.string(), "'");
    auto* dst = reinterpret_cast<char*>(records.data_ptr<uint8_t>() + row * rec);
    in.read(dst, static_cast<std::streamsize>(counts[i] * rec));
    TORCH_CHECK(in.gcount() == counts[i] * rec, "cifar: short read from '", file.string(),
                "': got ", in.gcount(), " of ", counts[i] * rec, " bytes");
    // Labels are checked per file so that the error can name the file and the record.
    auto block = records.narrow(0, row, counts[i]);
    for (int64_t col = 0; col < L.label_bytes; ++col) {
      const int64_t limit = (col == L.label_index) ? L.num_classes : L.coarse_classes;
      auto bad = (block.select(1, col).to(torch::kInt64) >= limit).nonzero();
      if (bad.size(0) > 0) {
        const int64_t r = bad[0][0].item<int64_t>();
        TORCH_CHECK(false, "cifar: file '", file.string(), "' record ", r, " has ",
                    col == L.label_index ? "label " : "coarse label ",
                    static_cast<int>(block[r][col].item<uint8_t>()), ", outside [0, ", limit,
                    ") (corrupt file, or the wrong --dataset?)");
      }
    }
    row += counts[i];
  }
  Split s;
  s.records = records;
  s.num_classes = L.num_classes;
  // The pixels of record i start at byte i*rec + label_bytes; view them as [N, 3, 32, 32].
  s.images = records.as_strided({total, 3, kImageSide, kImageSide},
                                {rec, kImageSide * kImageSide, kImageSide, 1}, L.label_bytes);
  s.labels = records.select(1, L.label_index).to(torch::kInt64);
  return s;
}

}  // namespace detail

/// Loads the training (`train` = true) or test split of a CIFAR binary release from `dir` (the
/// folder with the .bin files, or its parent). Throws a c10::Error naming the file on a missing,
/// truncated or corrupt file.
inline Split load_split(const std::string& dir, Kind kind, bool train) {
  const Layout L = layout(kind);
  const auto root = detail::resolve_dir(dir, kind);
  return detail::read_files(root, train ? L.train_files : L.test_files, L);
}

}  // namespace cifar
