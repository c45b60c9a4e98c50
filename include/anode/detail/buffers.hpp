#pragma once
// Snapshots of a module's buffers (BatchNorm running statistics, num_batches_tracked, ...), so a
// recomputation in backward leaves them exactly as the forward pass left them. Without this every
// recomputed BatchNorm call updates the running statistics a second time (a known fault of the
// official Python ANODE code).

#include <torch/types.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

/// Deep copies of the buffers' current values.
inline std::vector<torch::Tensor> snapshot_buffers(const std::vector<torch::Tensor>& buffers) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  out.reserve(buffers.size());
  for (const auto& b : buffers) out.push_back(b.defined() ? b.clone() : b);
  return out;
}

/// Writes a snapshot back in place. Call it only when no live autograd graph still has to read
/// the buffers: BatchNorm saves them for its backward, and an in-place write bumps their version.
inline void restore_buffers(const std::vector<torch::Tensor>& buffers,
                            const std::vector<torch::Tensor>& snapshot) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < buffers.size() && i < snapshot.size(); ++i) {
    if (buffers[i].defined() && snapshot[i].defined()) buffers[i].copy_(snapshot[i]);
  }
}

/// RAII: snapshots the buffers now and writes the snapshot back on destruction. Declare it before
/// the recomputation's graph so that it is restored after the gradient has been taken.
class BufferRestore {
 public:
  explicit BufferRestore(std::vector<torch::Tensor> buffers)
      : buffers_(std::move(buffers)), saved_(snapshot_buffers(buffers_)) {}
  ~BufferRestore() {
    try {
      restore_buffers(buffers_, saved_);
    } catch (...) {
    }
  }
  BufferRestore(const BufferRestore&) = delete;
  BufferRestore& operator=(const BufferRestore&) = delete;

 private:
  std::vector<torch::Tensor> buffers_;
  std::vector<torch::Tensor> saved_;
};

}  // namespace detail
}  // namespace anode
