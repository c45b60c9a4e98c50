#pragma once
// The torch::data side: a batch dataset over an in-memory CIFAR split and the sampler that feeds
// it. A batch request carries (epoch, batch number, indices); the dataset gathers the images with
// one index_select and augments them with a generator seeded from (seed, epoch, batch). The
// epoch's order comes from (seed, epoch) as well. So a run is reproducible whatever the number of
// loader threads, and a resumed run (even from the middle of an epoch) sees exactly the batches
// the interrupted one would have seen.

#include "examples/cifar/augment.hpp"
#include "examples/cifar/cifar_data.hpp"

#include <torch/data.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <vector>

namespace cifar {

/// What the sampler hands the dataset: which images, and which batch of which epoch they make.
struct BatchRequest {
  int64_t epoch = 0;
  int64_t batch = 0;
  std::vector<int64_t> indices;
  /// The data loader compares this against the batch size (drop_last).
  std::size_t size() const { return indices.size(); }
};

/// A `torch::data` batch dataset over a CIFAR split. Copies are cheap (tensors are shared), which
/// the data loader relies on: every worker thread gets its own copy.
class CifarDataset
    : public torch::data::datasets::BatchDataset<CifarDataset, torch::data::Example<>,
                                                 BatchRequest> {
 public:
  CifarDataset(Split split, AugmentOptions augment, uint64_t seed = 0)
      : split_(std::move(split)), augment_(std::move(augment)), seed_(seed) {}

  /// float [B, 3, 32, 32] normalised images and int64 [B] labels.
  torch::data::Example<> get_batch(BatchRequest request) override {
    auto index = torch::from_blob(request.indices.data(),
                                  {static_cast<int64_t>(request.indices.size())}, torch::kLong);
    auto images = split_.images.index_select(0, index);
    auto labels = split_.labels.index_select(0, index);
    return {augment_batch(images, augment_, request.indices, seed_,
                          static_cast<uint64_t>(request.epoch)),
            labels};
  }

  torch::optional<std::size_t> size() const override {
    return static_cast<std::size_t>(split_.size());
  }

  const Split& split() const { return split_; }

 private:
  Split split_;
  AugmentOptions augment_;
  uint64_t seed_;
};

/// Yields one epoch's batches: a permutation drawn from (seed, epoch) when `shuffle`, else the
/// natural order, starting at batch `start_batch` (resuming mid-epoch). Every batch but the last
/// has the loader's batch size. With `world` > 1 ranks, global batch k is positions
/// [k W b, (k + 1) W b) of the order (b: the loader's batch size) and rank `rank` takes every W-th
/// of them from its own position on: W ranks see, step for step, the batches of one process
/// with batch W b (torch's DistributedSampler takes every W-th of the whole order, the same
/// images for every full batch). A rank whose share of the last batch is empty gets no batch.
class EpochSampler : public torch::data::samplers::Sampler<BatchRequest> {
 public:
  EpochSampler(int64_t size, bool shuffle, uint64_t seed, int64_t epoch, int64_t start_batch = 0,
               int64_t rank = 0, int64_t world = 1)
      : size_(size),
        shuffle_(shuffle),
        seed_(seed),
        epoch_(epoch),
        start_batch_(start_batch),
        rank_(rank),
        world_(world) {
    TORCH_CHECK(size >= 0 && start_batch >= 0, "cifar: EpochSampler: bad size ", size,
                " or start batch ", start_batch);
    TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "cifar: EpochSampler: bad rank ", rank,
                " of ", world);
    if (shuffle_) {
      // A distinct stream from the augmentation's (which mixes in the batch number too).
      auto gen = make_generator(seed_ ^ 0x5EEDULL, static_cast<uint64_t>(epoch_), ~0ULL);
      auto perm = torch::randperm(size_, gen, torch::kLong);
      order_.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + size_);
    } else {
      order_.resize(static_cast<std::size_t>(size_));
      for (int64_t i = 0; i < size_; ++i) order_[static_cast<std::size_t>(i)] = i;
    }
    reset();
  }

  void reset(torch::optional<std::size_t> new_size = torch::nullopt) override {
    TORCH_CHECK(!new_size || static_cast<int64_t>(*new_size) == size_,
                "cifar: EpochSampler cannot be resized");
    batch_ = start_batch_;
    position_ = -1;  // set on the first next(), once the batch size is known
  }

  torch::optional<BatchRequest> next(std::size_t batch_size) override {
    const auto bs = static_cast<int64_t>(batch_size) * world_;  // the global batch
    if (position_ < 0) position_ = std::min(size_, start_batch_ * bs);
    if (position_ >= size_) return torch::nullopt;
    const int64_t n = std::min(bs, size_ - position_);
    BatchRequest r;
    r.epoch = epoch_;
    r.batch = batch_++;
    for (int64_t i = rank_; i < n; i += world_)
      r.indices.push_back(order_[static_cast<std::size_t>(position_ + i)]);
    position_ += n;
    if (r.indices.empty()) return torch::nullopt;
    return r;
  }

  // The sampler is rebuilt from (seed, epoch, start batch) on resume, so it keeps no archive state.
  void save(torch::serialize::OutputArchive&) const override {}
  void load(torch::serialize::InputArchive&) override {}

 private:
  int64_t size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t epoch_;
  int64_t start_batch_;
  int64_t rank_, world_;
  std::vector<int64_t> order_;
  int64_t batch_ = 0;
  int64_t position_ = -1;
};

/// Number of batches of an epoch over `size` samples.
inline int64_t batches_per_epoch(int64_t size, int64_t batch_size) {
  return (size + batch_size - 1) / batch_size;
}

}  // namespace cifar
