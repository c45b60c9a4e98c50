#pragma once
// keep_latest_graph: the graph a Gradient::Anode block's forward pass built, kept for its backward
// until the next block's forward pass starts, and the per-thread registry of the latest one.
//
// Only the latest block's graph is kept (memory O(L) block inputs + one block's graph): a block's
// forward pass releases the graph the previous block kept, and a block's backward takes its own
// graph if it is still there (then nothing is recomputed) or recomputes as usual.

#include <torch/types.h>

#include <memory>
#include <mutex>
#include <utility>

namespace anode {
namespace detail {

/// The graph a block's forward pass built, from its (detached) input to its output, until its
/// backward takes it or the next block's forward releases it. Either happens under the mutex, so
/// a backward on another thread and a release never both see it.
struct KeptGraph {
  std::mutex mutex;
  torch::Tensor input;   // the leaf the graph starts from
  torch::Tensor output;  // its end, whose grad_fn chain holds the graph

  std::pair<torch::Tensor, torch::Tensor> take() {
    std::lock_guard<std::mutex> lock(mutex);
    return {std::move(input), std::move(output)};
  }
  void release() {
    (void)take();  // the graph is freed here, outside the lock
  }
};

/// The graph the latest Anode forward pass of this thread kept (keep_latest_graph), if any.
inline std::weak_ptr<KeptGraph>& latest_kept_graph() {
  thread_local std::weak_ptr<KeptGraph> latest;
  return latest;
}

/// Frees the graph the previous block kept: a block's forward pass is starting.
inline void release_latest_kept_graph() {
  if (auto kept = latest_kept_graph().lock()) kept->release();
  latest_kept_graph().reset();
}

/// Keeps the graph from `input` to `output` and registers it as the one the next block's forward
/// pass releases. The caller holds the returned owner for its backward; the registry holds only a
/// weak reference, so a block whose backward never runs frees its graph with its autograd node.
inline std::shared_ptr<KeptGraph> keep_latest_graph(torch::Tensor input, torch::Tensor output) {
  auto kept = std::make_shared<KeptGraph>();
  kept->input = std::move(input);
  kept->output = std::move(output);
  latest_kept_graph() = kept;
  return kept;
}

}  // namespace detail
}  // namespace anode
