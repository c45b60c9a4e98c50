#pragma once
// Memory meters: a counting CPU allocator (current and peak bytes of every CPU tensor allocation)
// and, on CUDA builds, the caching allocator's peak statistics.
//
// The CPU meter wraps the allocator LibTorch had when it was installed and is installed once per
// process (it cannot be removed: tensors it allocated must be freed by it). Only allocations made
// after installation are counted.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Device.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#if defined(ANODE_WITH_CUDA)
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

namespace anode {
namespace memory {
namespace detail {

// Every block carries a header in front of the pointer handed out, holding the block's size, so the
// deleter knows what to subtract without a lock or a map. 64 bytes keeps the payload 64-aligned.
constexpr std::size_t kHeader = 64;

struct Counters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> allocations{0};
};

inline Counters& counters() {
  static Counters c;
  return c;
}

inline void raw_free(void* ptr) {
  if (ptr == nullptr) return;
  char* base = static_cast<char*>(ptr) - kHeader;
  int64_t n = 0;
  std::memcpy(&n, base, sizeof(n));
  counters().current.fetch_sub(n, std::memory_order_relaxed);
  c10::free_cpu(base);
}

// Counting allocator. The DataPtr's context equals its data pointer and its deleter is a plain
// function, because oneDNN calls raw_allocate/raw_deleter and asserts on exactly that.
class CountingCPUAllocator final : public c10::Allocator {
 public:
  // LibTorch changed this interface over time (`allocate` lost its `const` and `copy_data` became
  // pure virtual in 2.x). Declaring every variant without `override` makes whichever the installed
  // version declares the one that overrides, with no version arithmetic to get wrong.
  c10::DataPtr allocate(std::size_t n) const { return allocate_impl(n); }  // LibTorch 1.x, 2.0-2.2
  c10::DataPtr allocate(std::size_t n) { return allocate_impl(n); }        // LibTorch >= 2.3
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &raw_free; }

 private:
  static c10::DataPtr allocate_impl(std::size_t n) {
    char* base = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    const int64_t bytes = static_cast<int64_t>(n);
    std::memcpy(base, &bytes, sizeof(bytes));
    auto& c = counters();
    const int64_t now = c.current.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t peak = c.peak.load(std::memory_order_relaxed);
    while (now > peak && !c.peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    c.allocations.fetch_add(1, std::memory_order_relaxed);
    void* data = base + kHeader;
    return {data, data, &raw_free, c10::Device(c10::DeviceType::CPU)};
  }
};

inline bool& installed_flag() {
  static bool flag = false;
  return flag;
}

}  // namespace detail

/// Installs the counting CPU allocator (idempotent, thread-safe). Call it before the allocations
/// you want to count, typically first thing in `main`.
inline void install_cpu_meter() {
  static std::once_flag once;
  std::call_once(once, [] {
    static detail::CountingCPUAllocator allocator;
    // Priority above the default registration so that later default registrations don't win.
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
    detail::installed_flag() = true;
  });
}

/// Whether `install_cpu_meter()` has run in this process.
inline bool cpu_meter_installed() {
  return detail::installed_flag();
}

/// Bytes of CPU tensor storage currently live (allocated through the meter).
inline int64_t cpu_current_bytes() {
  return detail::counters().current.load();
}

/// Highest `cpu_current_bytes()` since installation or the last `reset_cpu_peak()`.
inline int64_t cpu_peak_bytes() {
  return detail::counters().peak.load();
}

/// Number of CPU allocations made through the meter.
inline int64_t cpu_allocations() {
  return detail::counters().allocations.load();
}

/// Resets the peak to the bytes live now.
inline void reset_cpu_peak() {
  detail::counters().peak.store(detail::counters().current.load());
}

#if defined(ANODE_WITH_CUDA)
namespace detail {
// The caching allocator's statistics exist once it is initialised, which the first CUDA
// allocation does; recent LibTorch throws when they are read before. One small allocation, once.
inline void ensure_cuda_allocator(int device) {
  static std::once_flag once;
  std::call_once(once, [device] {
    (void)at::empty({1}, at::TensorOptions().device(c10::Device(
                             c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device))));
  });
}
}  // namespace detail
#endif

/// Peak bytes allocated by the CUDA caching allocator on `device` (-1: current device) since the
/// last reset; -1 when LibTorch was built without CUDA.
inline int64_t cuda_peak_bytes(int device = -1) {
#if defined(ANODE_WITH_CUDA)
  if (device < 0) device = c10::cuda::current_device();
  detail::ensure_cuda_allocator(device);
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
  detail::ensure_cuda_allocator(device);
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
  detail::ensure_cuda_allocator(device);
  c10::cuda::CUDACachingAllocator::resetPeakStats(device);
#else
  (void)device;
#endif
}

class PeakScope;

namespace detail {
// The scopes open on this thread, innermost last: a scope opened inside another must not lose the
// outer one's peak when it resets the device's peak counter.
inline std::vector<PeakScope*>& open_scopes() {
  thread_local std::vector<PeakScope*> scopes;
  return scopes;
}
}  // namespace detail

/// Measures the peak memory of a region on one device, above what was live when it started.
/// Scopes nest: an inner scope (anode opens one itself for `memory_budget`) does not lose the
/// outer scope's peak.
///
/// Example:
/// ```
/// anode::memory::install_cpu_meter();
/// anode::memory::PeakScope scope(torch::kCPU);
/// auto loss = model->forward(x).sum(); loss.backward();
/// std::cout << scope.peak_bytes() << " bytes\n";
/// ```
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
    for (PeakScope* outer : detail::open_scopes()) {
      if (outer->device_ == device_) outer->carried_ = std::max(outer->carried_, raw_peak());
    }
    reset_peak();
    baseline_ = raw_current();
    detail::open_scopes().push_back(this);
  }
  ~PeakScope() {
    auto& scopes = detail::open_scopes();
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
};

}  // namespace memory
}  // namespace anode
