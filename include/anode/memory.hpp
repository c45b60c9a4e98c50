#pragma once
// Memory meters: a counting CPU allocator (current and peak bytes of every CPU tensor allocation)
// and, on CUDA builds, the caching allocator's peak statistics, or the counting CUDA meter
// (`install_cuda_meter()`: the tensors' bytes, counted from the caching allocator's trace), which
// anode::MemoryPlan measures CUDA memory with.
//
// Not part of the umbrella header anode/anode.hpp: the CPU meter replaces the process-wide CPU
// allocator, which only the program should decide to do. Include this header, and call
// `install_cpu_meter()` first thing in main(), to measure memory (or to use
// ODEBlockOptions::memory_budget on CPU tensors, which measures a step with the meter).
//
// The CPU meter wraps the allocator LibTorch had when it was installed and is installed once per
// process (it cannot be removed: tensors it allocated must be freed by it). Only allocations made
// after installation are counted.

#include <anode/detail/meter.hpp>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Device.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace anode {
namespace memory {
namespace detail {

// Every block carries a header in front of the pointer handed out, holding the block's size, so the
// deleter knows what to subtract without a lock or a map. 64 bytes keeps the payload 64-aligned.
constexpr std::size_t kHeader = 64;

inline void raw_free(void* ptr) {
  if (ptr == nullptr) return;
  char* base = static_cast<char*>(ptr) - kHeader;
  int64_t n = 0;
  std::memcpy(&n, base, sizeof(n));
  const int64_t now = counters().current.fetch_sub(n, std::memory_order_relaxed) - n;
  note_free(now);
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

/// Installs the counting CUDA meter: from now on anode counts, per CUDA device, the bytes that
/// tensors request from LibTorch's caching allocator (the figures the CPU meter gives for the CPU:
/// the allocator's own statistics round blocks up, and keep no low point, which a MemoryPlan needs
/// for a training step's baseline). Afterwards PeakScope on CUDA reads it, and MemoryPlan works on
/// CUDA. Call it first thing in main(), before tensors are allocated on the device: only what is
/// allocated afterwards is counted. Once per process; it cannot be removed (the allocator's trace
/// keeps its listener; each allocation and free then costs one call more).
///
/// It checks itself: a tensor of a known size must be counted to the byte. Raises, saying why,
/// without CUDA in this build, with LibTorch before 2.1 (no allocator trace), without a visible
/// CUDA device, or when the allocator does not report to it (PYTORCH_NO_CUDA_MEMORY_CACHING=1, or
/// a pluggable allocator in place of the caching one).
inline void install_cuda_meter() {
#if !defined(ANODE_WITH_CUDA)
  TORCH_CHECK(false,
              "anode::memory::install_cuda_meter: this build of anode has no CUDA "
              "(ANODE_WITH_CUDA is defined when LibTorch has CUDA: build against a CUDA LibTorch "
              "with anode's CMake package)");
#elif !defined(ANODE_CUDA_METER)
  TORCH_CHECK(false, "anode::memory::install_cuda_meter needs LibTorch 2.1 or later (the CUDA ",
              "caching allocator's trace, which it counts from); this is LibTorch ", TORCH_VERSION,
              ". Measure with PeakScope (the allocator's statistics) instead");
#else
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (detail::cuda_meter_installed()) return;
  TORCH_CHECK(c10::cuda::device_count() > 0,
              "anode::memory::install_cuda_meter: no CUDA device is visible "
              "(c10::cuda::device_count() is 0: check CUDA_VISIBLE_DEVICES and the driver)");
  const int device = c10::cuda::current_device();
  static bool attached = false;
  if (!attached) {
    detail::ensure_cuda_allocator(device);
    try {
      c10::cuda::CUDACachingAllocator::attachAllocatorTraceTracker(&detail::cuda_meter_trace);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false,
                  "anode::memory::install_cuda_meter: the CUDA allocator in place does not "
                  "report its allocations (",
                  e.what_without_backtrace(),
                  "); the CUDA meter needs LibTorch's caching allocator");
    }
    attached = true;
  }
  // The self-check: one tensor of an odd size, counted to the byte, and nothing left once freed.
  constexpr int64_t n = (int64_t{1} << 20) + 7;
  const int64_t before = detail::cuda_meter_current_bytes(device);
  int64_t held = 0;
  {
    auto t = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(c10::Device(
                                c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device))));
    held = detail::cuda_meter_current_bytes(device) - before;
  }
  const int64_t left = detail::cuda_meter_current_bytes(device) - before;
  TORCH_CHECK(held == n && left == 0,
              "anode::memory::install_cuda_meter: the CUDA caching allocator did not report a "
              "test tensor of ",
              n, " bytes as it should (counted ", held, " bytes while it lived, ", left,
              " after it was freed). Is PYTORCH_NO_CUDA_MEMORY_CACHING=1 set, or another CUDA "
              "allocator in place, or another thread allocating on the device meanwhile? A "
              "MemoryPlan cannot measure CUDA memory without the meter");
  detail::cuda_counters().installed = true;
#endif
}

// The meters' readings (anode/detail/meter.hpp, which the library's memory_budget uses too):
// bool cpu_meter_installed(), whether install_cpu_meter() has run in this process;
// int64_t cpu_current_bytes(), bytes of CPU tensor storage live now (allocated through the meter);
// int64_t cpu_peak_bytes(), the highest cpu_current_bytes() since installation or reset_cpu_peak();
// int64_t cpu_allocations(), the number of CPU allocations made through the meter;
// void reset_cpu_peak(), resets the peak to the bytes live now;
// int64_t cuda_peak_bytes(int device = -1) and cuda_current_bytes(int device = -1), the CUDA
// caching allocator's peak and current bytes on `device` (-1: current device), -1 without CUDA;
// void reset_cuda_peak(int device = -1), resets its peak (no-op without CUDA);
// bool cuda_meter_installed(), whether install_cuda_meter() has succeeded in this process;
// int64_t cuda_meter_current_bytes(int device) and cuda_meter_peak_bytes(int device), the CUDA
// meter's bytes live on `device` now and at most since installation or reset_cuda_meter_peak
// (counted from installation: differences are what mean something);
// void reset_cuda_meter_peak(int device), resets the CUDA meter's peak to the bytes live now.
using detail::cpu_allocations;
using detail::cpu_current_bytes;
using detail::cpu_meter_installed;
using detail::cpu_peak_bytes;
using detail::cuda_current_bytes;
using detail::cuda_meter_current_bytes;
using detail::cuda_meter_installed;
using detail::cuda_meter_peak_bytes;
using detail::cuda_peak_bytes;
using detail::reset_cpu_peak;
using detail::reset_cuda_meter_peak;
using detail::reset_cuda_peak;

/// Measures the peak memory of a region on one device (CPU: needs `install_cpu_meter()`; CUDA:
/// the CUDA meter if `install_cuda_meter()` ran before the scope opened, else the caching
/// allocator's statistics), above what was live when it started. Scopes nest: an
/// inner scope (anode opens one itself for `memory_budget`) does not lose the outer scope's peak.
///
/// Example:
/// ```
/// anode::memory::install_cpu_meter();
/// anode::memory::PeakScope scope(torch::kCPU);
/// auto loss = model->forward(x).sum(); loss.backward();
/// std::cout << scope.peak_bytes() << " bytes\n";
/// ```
using PeakScope = detail::PeakScope;

}  // namespace memory
}  // namespace anode
