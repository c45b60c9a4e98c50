#pragma once
// Reading the memory meters: the counters the CPU meter (anode/memory.hpp) writes, the CUDA caching
// allocator's statistics, and the nesting peak scope built on both.
//
// This is the part of the meters that `ODEBlockOptions::memory_budget` needs to measure a step, so
// the library includes it without installing anything; the CPU meter itself (a process-wide
// allocator) and the public names (anode::memory::...) come with anode/memory.hpp, which users who
// measure include explicitly.

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#if defined(ANODE_WITH_CUDA)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include <mutex>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace anode {
namespace memory {
namespace detail {

// Written by the counting CPU allocator (anode/memory.hpp) on every allocation and free.
struct Counters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> allocations{0};
};

inline Counters& counters() {
  static Counters c;
  return c;
}

/// Whether the counting CPU allocator (`anode::memory::install_cpu_meter()`) has been installed.
/// Atomic: the forward pass of a block with a memory_budget may read it on any thread.
inline std::atomic<bool>& installed_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

/// Whether `install_cpu_meter()` has run in this process.
inline bool cpu_meter_installed() {
  return installed_flag().load();
}

/// Bytes of CPU tensor storage currently live (allocated through the meter).
inline int64_t cpu_current_bytes() {
  return counters().current.load();
}

/// Highest `cpu_current_bytes()` since installation or the last `reset_cpu_peak()`.
inline int64_t cpu_peak_bytes() {
  return counters().peak.load();
}

/// Number of CPU allocations made through the meter.
inline int64_t cpu_allocations() {
  return counters().allocations.load();
}

/// Resets the peak to the bytes live now.
inline void reset_cpu_peak() {
  counters().peak.store(counters().current.load());
}

// Low-water marks of the CPU meter: the least bytes live since a slot was last reset. A memory
// plan takes the low point between two training steps as the baseline of the next (it is at most
// what was live when the step started, whatever ran in between: an optimizer step, zero_grad,
// loading the next batch). A few slots, so that several plans do not reset each other's.
constexpr int kTroughSlots = 32;
struct Troughs {
  std::atomic<int64_t> value[kTroughSlots] = {};
  std::atomic<uint32_t> active{0};
};
inline Troughs& troughs() {
  static Troughs t;
  return t;
}

/// Called by the CPU meter after every free, with the bytes live after it.
inline void note_free(int64_t now) {
  auto& t = troughs();
  uint32_t a = t.active.load(std::memory_order_relaxed);
  for (int i = 0; a != 0; ++i, a >>= 1) {
    if ((a & 1u) == 0) continue;
    int64_t low = t.value[i].load(std::memory_order_relaxed);
    while (now < low && !t.value[i].compare_exchange_weak(low, now, std::memory_order_relaxed)) {
    }
  }
}

/// A free slot, its mark set to the bytes live now; -1 when all are taken.
inline int acquire_trough_slot() {
  auto& t = troughs();
  uint32_t a = t.active.load();
  for (;;) {
    int i = 0;
    while (i < kTroughSlots && (a & (1u << i)) != 0) ++i;
    if (i == kTroughSlots) return -1;
    t.value[i].store(cpu_current_bytes());
    if (t.active.compare_exchange_weak(a, a | (1u << i))) return i;
  }
}
inline void release_trough_slot(int i) {
  if (i >= 0) troughs().active.fetch_and(~(1u << i));
}
/// The least bytes live since the slot was acquired or last reset.
inline int64_t trough_bytes(int i) {
  return std::min(troughs().value[i].load(), cpu_current_bytes());
}
inline void reset_trough(int i) {
  troughs().value[i].store(cpu_current_bytes());
}

#if defined(ANODE_WITH_CUDA)
// The caching allocator's statistics exist once it is initialised, which the first CUDA
// allocation does; recent LibTorch throws when they are read before. One small allocation, once.
inline void ensure_cuda_allocator(int device) {
  static std::once_flag once;
  std::call_once(once, [device] {
    (void)at::empty({1}, at::TensorOptions().device(c10::Device(
                             c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device))));
  });
}
#endif

/// Peak bytes allocated by the CUDA caching allocator on `device` (-1: current device) since the
/// last reset; -1 when LibTorch was built without CUDA.
inline int64_t cuda_peak_bytes(int device = -1) {
#if defined(ANODE_WITH_CUDA)
  if (device < 0) device = c10::cuda::current_device();
  ensure_cuda_allocator(device);
  // Index 0 is StatType::AGGREGATE in every LibTorch version (the enum moved namespaces in 2.x).
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  return stats.allocated_bytes[0].peak;
#else
  (void)device;
  return -1;
#endif
}

/// Bytes currently allocated by the CUDA caching allocator on `device`; -1 without CUDA.
inline int64_t cuda_current_bytes(int device = -1) {
#if defined(ANODE_WITH_CUDA)
  if (device < 0) device = c10::cuda::current_device();
  ensure_cuda_allocator(device);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  return stats.allocated_bytes[0].current;
#else
  (void)device;
  return -1;
#endif
}

/// Resets the CUDA peak statistics of `device` (no-op without CUDA).
inline void reset_cuda_peak(int device = -1) {
#if defined(ANODE_WITH_CUDA)
  if (device < 0) device = c10::cuda::current_device();
  ensure_cuda_allocator(device);
  c10::cuda::CUDACachingAllocator::resetPeakStats(device);
#else
  (void)device;
#endif
}

class PeakScope;

// The scopes open on this thread, innermost last: a scope opened inside another must not lose the
// outer one's peak when it resets the device's peak counter.
inline std::vector<PeakScope*>& open_scopes() {
  thread_local std::vector<PeakScope*> scopes;
  return scopes;
}

/// Measures the peak memory of a region on one device, above what was live when it started (the
/// public name is anode::memory::PeakScope, documented in anode/memory.hpp). Scopes nest: an inner
/// scope (the one `memory_budget` opens) does not lose the outer scope's peak.
class PeakScope {
 public:
  explicit PeakScope(c10::Device device = c10::Device(c10::DeviceType::CPU)) : device_(device) {
    if (device_.is_cpu()) {
      TORCH_CHECK(cpu_meter_installed(),
                  "anode::memory::PeakScope: call anode::memory::install_cpu_meter() first");
    } else {
      TORCH_CHECK(device_.is_cuda(), "anode::memory::PeakScope: unsupported device ", device_,
                  "; the meters measure CPU and CUDA memory");
#if !defined(ANODE_WITH_CUDA)
      TORCH_CHECK(false, "anode::memory::PeakScope: device ", device_,
                  " needs anode built with CUDA (ANODE_WITH_CUDA, set when LibTorch has CUDA); "
                  "this build can only measure CPU memory");
#endif
    }
    // Resetting the device's peak below would lose what enclosing scopes on the same device have
    // seen so far: hand it to them first.
    for (PeakScope* outer : open_scopes()) {
      if (outer->device_ == device_) outer->carried_ = std::max(outer->carried_, raw_peak());
    }
    reset_peak();
    baseline_ = raw_current();
    open_scopes().push_back(this);
  }
  ~PeakScope() {
    auto& scopes = open_scopes();
    for (auto it = scopes.end(); it != scopes.begin();) {
      --it;
      if (*it == this) {
        scopes.erase(it);
        break;
      }
    }
  }
  PeakScope(const PeakScope&) = delete;
  PeakScope& operator=(const PeakScope&) = delete;

  /// Peak bytes above the baseline so far.
  int64_t peak_bytes() const {
    return std::max(carried_, raw_peak()) - baseline_;
  }
  /// Bytes live now above the baseline.
  int64_t current_bytes() const {
    return raw_current() - baseline_;
  }
  /// Bytes live at construction.
  int64_t baseline_bytes() const {
    return baseline_;
  }

 private:
  int index() const {
    return device_.has_index() ? device_.index() : -1;
  }
  int64_t raw_peak() const {
    return device_.is_cpu() ? cpu_peak_bytes() : cuda_peak_bytes(index());
  }
  int64_t raw_current() const {
    return device_.is_cpu() ? cpu_current_bytes() : cuda_current_bytes(index());
  }
  void reset_peak() const {
    if (device_.is_cpu())
      reset_cpu_peak();
    else
      reset_cuda_peak(index());
  }

  c10::Device device_;
  int64_t baseline_ = 0;
  int64_t carried_ = 0;  // the highest peak seen before an inner scope reset the counter

  friend int64_t take_cpu_peak();
};

/// The CPU meter's peak since its last reset, then resets it to the bytes live now, handing the
/// peak to the PeakScopes open on this thread first (as an inner scope does), so that they keep
/// it. A memory plan reads the peak of each segment of a step this way.
inline int64_t take_cpu_peak() {
  const int64_t p = cpu_peak_bytes();
  for (PeakScope* s : open_scopes()) {
    if (s->device_.is_cpu()) s->carried_ = std::max(s->carried_, p);
  }
  reset_cpu_peak();
  return p;
}

}  // namespace detail
}  // namespace memory
}  // namespace anode
