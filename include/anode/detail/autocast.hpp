#pragma once
// Saving and re-entering the autocast (mixed-precision) state of a forward pass, so that a
// recomputation in backward runs exactly the kernels, in exactly the dtypes, that the forward pass
// ran. Autograd runs `backward` outside the caller's autocast scope; without this the recompute of
// a bf16/fp16 forward would run in fp32 and its gradient would not be the forward's (as
// torch.utils.checkpoint, anode saves the enabled flags and dtypes of CPU and CUDA autocast).
//
// The autocast weight cache needs care. Autocast caches the low-precision cast of every fp32 leaf
// that requires grad until the outermost autocast region ends, and it caches casts made under
// NoGradGuard too: such a cast has no grad_fn, and an autograd pass that reuses it gives the weight
// no gradient at all. anode's graph-free passes (the forward of Anode and Adjoint, the checkpoint
// rebuild) therefore run with the cache disabled, and every recompute starts from an empty cache,
// so it casts each weight once with a graph, as a Backprop forward pass does.

#include <ATen/autocast_mode.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <ostream>

// LibTorch 2.4 replaced the per-device autocast functions with ones taking a device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define ANODE_AUTOCAST_DEVICE_API 1
#else
#define ANODE_AUTOCAST_DEVICE_API 0
#endif

namespace anode {
namespace detail {

/// The autocast flags and dtypes of CPU and CUDA, and whether the weight cache is on.
struct AutocastState {
  bool cpu_enabled = false;
  bool cuda_enabled = false;
  c10::ScalarType cpu_dtype = c10::ScalarType::BFloat16;
  c10::ScalarType cuda_dtype = c10::ScalarType::Half;
  bool cache_enabled = true;

  /// The calling thread's autocast state now.
  static AutocastState capture() {
    AutocastState s;
#if ANODE_AUTOCAST_DEVICE_API
    s.cpu_enabled = at::autocast::is_autocast_enabled(c10::DeviceType::CPU);
    s.cuda_enabled = at::autocast::is_autocast_enabled(c10::DeviceType::CUDA);
    s.cpu_dtype = at::autocast::get_autocast_dtype(c10::DeviceType::CPU);
    s.cuda_dtype = at::autocast::get_autocast_dtype(c10::DeviceType::CUDA);
#else
    s.cpu_enabled = at::autocast::is_cpu_enabled();
    s.cuda_enabled = at::autocast::is_enabled();
    s.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
    s.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
#endif
    s.cache_enabled = at::autocast::is_autocast_cache_enabled();
    return s;
  }

  /// Whether autocast is on for any device.
  bool enabled() const {
    return cpu_enabled || cuda_enabled;
  }

  /// Makes this the calling thread's autocast state.
  void apply() const {
#if ANODE_AUTOCAST_DEVICE_API
    at::autocast::set_autocast_enabled(c10::DeviceType::CPU, cpu_enabled);
    at::autocast::set_autocast_enabled(c10::DeviceType::CUDA, cuda_enabled);
    at::autocast::set_autocast_dtype(c10::DeviceType::CPU, cpu_dtype);
    at::autocast::set_autocast_dtype(c10::DeviceType::CUDA, cuda_dtype);
#else
    at::autocast::set_cpu_enabled(cpu_enabled);
    at::autocast::set_enabled(cuda_enabled);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype);
    at::autocast::set_autocast_gpu_dtype(cuda_dtype);
#endif
    at::autocast::set_autocast_cache_enabled(cache_enabled);
  }

  bool operator==(const AutocastState& o) const {
    return cpu_enabled == o.cpu_enabled && cuda_enabled == o.cuda_enabled &&
           cpu_dtype == o.cpu_dtype && cuda_dtype == o.cuda_dtype &&
           cache_enabled == o.cache_enabled;
  }
  bool operator!=(const AutocastState& o) const {
    return !(*this == o);
  }
};

inline std::ostream& operator<<(std::ostream& os, const AutocastState& s) {
  os << "autocast(cpu=" << (s.cpu_enabled ? "on" : "off");
  if (s.cpu_enabled) os << " " << s.cpu_dtype;
  os << ", cuda=" << (s.cuda_enabled ? "on" : "off");
  if (s.cuda_enabled) os << " " << s.cuda_dtype;
  return os << ")";
}

/// RAII: runs a region under a given autocast state and puts the caller's back afterwards.
///
/// `Purpose::Recompute` re-enters a forward pass's state for an autograd pass: it opens an autocast
/// region (nesting, as torch.autocast does) with an empty weight cache, so each weight is cast
/// once, with a graph, and closes it clearing the cache if it was the outermost region.
/// `Purpose::GraphFree` runs a pass without a graph with the cache disabled, so none of its casts
/// (which have no grad_fn) is left in the cache for a later autograd pass to reuse.
/// `Purpose::Forward` re-applies the state exactly as captured (the caller's cache included), for a
/// pass with a graph inside the forward pass, which must build the graph Backprop would.
class AutocastGuard {
 public:
  enum class Purpose { Recompute, GraphFree, Forward };

  AutocastGuard(const AutocastState& state, Purpose purpose)
      : saved_(AutocastState::capture()), active_(state.enabled() || saved_.enabled()) {
    if (!active_) return;  // autocast off before and inside: nothing to do, nothing to undo
    AutocastState inside = state;
    if (purpose == Purpose::GraphFree) inside.cache_enabled = false;
    inside.apply();
    if (purpose == Purpose::Recompute && state.enabled()) {
      nested_ = true;
      at::autocast::increment_nesting();
      at::autocast::clear_cache();
    }
  }
  ~AutocastGuard() {
    if (!active_) return;
    try {
      if (nested_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      saved_.apply();
    } catch (...) {
      // Never throw from a destructor (we may be unwinding from an error already).
    }
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  AutocastState saved_;
  bool active_ = false;
  bool nested_ = false;
};

}  // namespace detail
}  // namespace anode
