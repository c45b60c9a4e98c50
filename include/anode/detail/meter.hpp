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

#include <torch/version.h>

#if defined(ANODE_WITH_CUDA)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

// The counting CUDA meter listens to the caching allocator's trace (attachAllocatorTraceTracker),
// which LibTorch has from 2.1 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define ANODE_CUDA_METER 1
#endif
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
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
// A slot's marks cover every meter (the CPU meter, kCpuMeter, and the CUDA meter of each device,
// by index), all set when the slot is acquired: a plan learns its device only at its first call,
// and that call's step must have a baseline from before the step began.
constexpr int kTroughSlots = 32;
constexpr int kCpuMeter = -1;
constexpr int kMaxCudaDevices = 64;
constexpr int kMeters = kMaxCudaDevices + 1;  // the CPU meter first, then the CUDA devices
struct Troughs {
  std::atomic<int64_t> value[kTroughSlots][kMeters] = {};
  std::atomic<uint32_t> active{0};
};
inline Troughs& troughs() {
  static Troughs t;
  return t;
}
/// A meter's column in Troughs::value; -1 for no meter.
inline int meter_column(int meter) {
  return meter >= kCpuMeter && meter < kMaxCudaDevices ? meter + 1 : -1;
}

/// Called by a meter after every free, with the bytes live on it after the free.
inline void note_free(int meter, int64_t now) {
  const int m = meter_column(meter);
  if (m < 0) return;
  auto& t = troughs();
  uint32_t a = t.active.load(std::memory_order_relaxed);
  for (int i = 0; a != 0; ++i, a >>= 1) {
    if ((a & 1u) == 0) continue;
    auto& v = t.value[i][m];
    int64_t low = v.load(std::memory_order_relaxed);
    while (now < low && !v.compare_exchange_weak(low, now, std::memory_order_relaxed)) {
    }
  }
}
/// Called by the CPU meter after every free.
inline void note_free(int64_t now) {
  note_free(kCpuMeter, now);
}

inline int64_t cuda_meter_current_bytes(int device);

/// Bytes live now on a meter (kCpuMeter, or a CUDA device's index).
inline int64_t meter_current_bytes(int meter) {
  return meter == kCpuMeter ? cpu_current_bytes() : cuda_meter_current_bytes(meter);
}

/// Sets slot `i`'s mark on every meter to the bytes live there now.
inline void reset_trough_marks(int i) {
  for (int meter = kCpuMeter; meter < kMaxCudaDevices; ++meter)
    troughs().value[i][meter_column(meter)].store(meter_current_bytes(meter));
}

/// A free slot, its marks set to the bytes live now; -1 when all are taken.
inline int acquire_trough_slot() {
  auto& t = troughs();
  uint32_t a = t.active.load();
  for (;;) {
    int i = 0;
    while (i < kTroughSlots && (a & (1u << i)) != 0) ++i;
    if (i == kTroughSlots) return -1;
    reset_trough_marks(i);
    if (t.active.compare_exchange_weak(a, a | (1u << i))) return i;
  }
}
inline void release_trough_slot(int i) {
  if (i >= 0) troughs().active.fetch_and(~(1u << i));
}
/// The least bytes live on `meter` (default: the CPU meter) since slot `i` was acquired or last
/// reset.
inline int64_t trough_bytes(int i, int meter = kCpuMeter) {
  return std::min(troughs().value[i][meter_column(meter)].load(), meter_current_bytes(meter));
}
/// Sets slot `i`'s mark on `meter` (default: the CPU meter) to the bytes live there now.
inline void reset_trough(int i, int meter = kCpuMeter) {
  troughs().value[i][meter_column(meter)].store(meter_current_bytes(meter));
}

// The counting CUDA meter (anode::memory::install_cuda_meter): the bytes of device memory that
// tensors requested from the caching allocator, per device, counted from its trace of every
// allocation and free. The allocator's own statistics round each block up (to 512 bytes, and a
// reused cached block by up to 1 MiB), and they keep no low-water mark, which a memory plan needs
// for a step's baseline; this meter counts what the CPU meter counts, the tensors' bytes.
/// Whether `device` is an index the CUDA meter counts (0 to kMaxCudaDevices - 1).
inline bool cuda_meter_counts(int device) {
  return device >= 0 && device < kMaxCudaDevices;
}
struct CudaCounters {
  std::atomic<int64_t> current[kMaxCudaDevices] = {};
  std::atomic<int64_t> peak[kMaxCudaDevices] = {};
  std::atomic<bool> installed{false};
};
inline CudaCounters& cuda_counters() {
  static CudaCounters c;
  return c;
}

/// Whether `install_cuda_meter()` has run (and passed its self-check) in this process.
inline bool cuda_meter_installed() {
  return cuda_counters().installed.load();
}

/// Bytes that tensors on CUDA device `device` hold now, as the CUDA meter counts them (since its
/// installation: tensors allocated before it are not counted, so only differences mean anything).
inline int64_t cuda_meter_current_bytes(int device) {
  if (!cuda_meter_counts(device)) return 0;
  return cuda_counters().current[device].load();
}
/// Highest `cuda_meter_current_bytes(device)` since installation or the last reset.
inline int64_t cuda_meter_peak_bytes(int device) {
  if (!cuda_meter_counts(device)) return 0;
  return cuda_counters().peak[device].load();
}
inline void reset_cuda_meter_peak(int device) {
  if (!cuda_meter_counts(device)) return;
  cuda_counters().peak[device].store(cuda_counters().current[device].load());
}

/// What the CUDA meter does with one allocation (`bytes` > 0) or free (`bytes` < 0) on `device`.
/// The allocator calls it under its lock for that device; it takes no other lock.
inline void cuda_meter_count(int device, int64_t bytes) {
  if (!cuda_meter_counts(device)) return;
  auto& c = cuda_counters();
  const int64_t now = c.current[device].fetch_add(bytes) + bytes;
  if (bytes > 0) {
    int64_t p = c.peak[device].load(std::memory_order_relaxed);
    while (now > p && !c.peak[device].compare_exchange_weak(p, now)) {
    }
  } else {
    note_free(device, now);
  }
}

#if defined(ANODE_CUDA_METER)
/// The CUDA meter's trace tracker: an allocation counts from the request (ALLOC), a free from the
/// tensor's release (FREE_REQUESTED: the allocated_bytes statistic drops there too; a block still
/// in use on another stream returns to the pool later, FREE_COMPLETED, which is not counted twice).
/// Sizes are the tensors' requested bytes.
inline void cuda_meter_trace(const c10::cuda::CUDACachingAllocator::TraceEntry& e) {
  using Entry = c10::cuda::CUDACachingAllocator::TraceEntry;
  if (e.action_ == Entry::ALLOC) {
    cuda_meter_count(static_cast<int>(e.device_), static_cast<int64_t>(e.size_));
  } else if (e.action_ == Entry::FREE_REQUESTED) {
    cuda_meter_count(static_cast<int>(e.device_), -static_cast<int64_t>(e.size_));
  }
}
#endif

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

/// Waits for the work queued on a meter's device (a CUDA device's index; nothing for the CPU), so
/// that the host's clock times the kernels and not only their launches.
inline void synchronize_meter_device(int meter) {
#if defined(ANODE_WITH_CUDA)
  if (meter >= 0) {
    const c10::DeviceIndex previous = c10::cuda::current_device();
    if (previous != meter) c10::cuda::set_device(static_cast<c10::DeviceIndex>(meter));
    c10::cuda::device_synchronize();
    if (previous != meter) c10::cuda::set_device(previous);
  }
#else
  (void)meter;
#endif
}

class PeakScope;

// The scopes open in the process, oldest first: a scope opened inside another must not lose the
// outer one's peak when it resets the meter's peak counter. Process-wide, not per thread: the
// meters are, and a backward pass on CUDA runs on autograd's device thread, where a memory plan
// and a recompute read and reset the peak while the caller's scope is open on its own thread.
struct OpenScopes {
  std::mutex mutex;
  std::vector<PeakScope*> scopes;
};
inline OpenScopes& open_scopes() {
  static OpenScopes s;
  return s;
}

/// Measures the peak memory of a region on one device, above what was live when it started (the
/// public name is anode::memory::PeakScope, documented in anode/memory.hpp). Scopes nest: an inner
/// scope (the one `memory_budget` opens) does not lose the outer scope's peak.
///
/// On CUDA a scope reads the counting CUDA meter when it is installed when the scope opens
/// (`install_cuda_meter()`: the tensors' bytes, what the CPU meter counts), else the caching
/// allocator's statistics (allocated_bytes: blocks rounded up by the allocator).
class PeakScope {
 public:
  explicit PeakScope(c10::Device device = c10::Device(c10::DeviceType::CPU)) : device_(device) {
    if (device_.is_cpu()) {
      TORCH_CHECK(cpu_meter_installed(),
                  "anode::memory::PeakScope: call anode::memory::install_cpu_meter() first");
      meter_ = kCpuMeter;
    } else {
      TORCH_CHECK(device_.is_cuda(), "anode::memory::PeakScope: unsupported device ", device_,
                  "; the meters measure CPU and CUDA memory");
#if !defined(ANODE_WITH_CUDA)
      TORCH_CHECK(false, "anode::memory::PeakScope: device ", device_,
                  " needs anode built with CUDA (ANODE_WITH_CUDA, set when LibTorch has CUDA); "
                  "this build can only measure CPU memory");
#else
      meter_ = device_.has_index() ? device_.index() : c10::cuda::current_device();
      counted_ = cuda_meter_installed();
#endif
    }
    // Resetting the meter's peak below would lose what enclosing scopes on the same meter have
    // seen so far: hand it to them first.
    auto& open = open_scopes();
    std::lock_guard<std::mutex> lock(open.mutex);
    for (PeakScope* outer : open.scopes) {
      if (same_meter(*outer)) outer->carried_ = std::max(outer->carried_, raw_peak());
    }
    reset_peak();
    baseline_ = raw_current();
    open.scopes.push_back(this);
  }
  ~PeakScope() {
    auto& open = open_scopes();
    std::lock_guard<std::mutex> lock(open.mutex);
    auto& scopes = open.scopes;
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
    std::lock_guard<std::mutex> lock(open_scopes().mutex);
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
  /// Whether the scope reads a counting meter (the CPU meter, or the CUDA meter) rather than the
  /// CUDA caching allocator's statistics.
  bool counted() const {
    return meter_ == kCpuMeter || counted_;
  }

 private:
  bool same_meter(const PeakScope& o) const {
    return o.meter_ == meter_ && o.counted_ == counted_;
  }
  int64_t raw_peak() const {
    if (meter_ == kCpuMeter) return cpu_peak_bytes();
    return counted_ ? cuda_meter_peak_bytes(meter_) : cuda_peak_bytes(meter_);
  }
  int64_t raw_current() const {
    if (meter_ == kCpuMeter) return cpu_current_bytes();
    return counted_ ? cuda_meter_current_bytes(meter_) : cuda_current_bytes(meter_);
  }
  void reset_peak() const {
    if (meter_ == kCpuMeter)
      reset_cpu_peak();
    else if (counted_)
      reset_cuda_meter_peak(meter_);
    else
      reset_cuda_peak(meter_);
  }

  c10::Device device_;
  int meter_ = kCpuMeter;  // kCpuMeter, or the CUDA device's index
  bool counted_ = false;   // CUDA: the counting CUDA meter, not the allocator's statistics
  int64_t baseline_ = 0;
  int64_t carried_ = 0;  // the highest peak seen before an inner scope reset the counter

  friend int64_t take_meter_peak(int meter);
};

/// A counting meter's peak (kCpuMeter: the CPU meter; a device index: the CUDA meter) since its
/// last reset, then resets it to the bytes live now, handing the peak to the PeakScopes open on
/// this thread on that meter first (as an inner scope does), so that they keep it. A memory plan
/// reads the peak of each segment of a step this way.
inline int64_t take_meter_peak(int meter) {
  auto& open = open_scopes();
  std::lock_guard<std::mutex> lock(open.mutex);
  const int64_t p = meter == kCpuMeter ? cpu_peak_bytes() : cuda_meter_peak_bytes(meter);
  for (PeakScope* s : open.scopes) {
    if (s->meter_ == meter && s->counted()) s->carried_ = std::max(s->carried_, p);
  }
  if (meter == kCpuMeter)
    reset_cpu_peak();
  else
    reset_cuda_meter_peak(meter);
  return p;
}
/// The CPU meter's take_meter_peak.
inline int64_t take_cpu_peak() {
  return take_meter_peak(kCpuMeter);
}

}  // namespace detail
}  // namespace memory
}  // namespace anode
