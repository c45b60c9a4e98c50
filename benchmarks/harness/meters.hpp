#pragma once
// Memory meters of a benchmark region, in one place:
//  - tensor bytes: anode::memory's counting CPU allocator, or the CUDA caching allocator's peak;
//  - heap bytes: the LD_PRELOAD heap counter (benchmarks/heapcount), when the process runs under
//    it: every malloc'd byte (tensors, autograd graph, everything), the meter shared with the
//    Python peers;
//  - the process's peak resident set (getrusage), a coarse whole-process figure.

#include <anode/memory.hpp>

#include <c10/core/Device.h>
#include <c10/util/Optional.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>

namespace anode {
namespace bench {

/// The LD_PRELOAD heap counter's control functions, found with dlsym; `available()` is false
/// when the process does not run under it (and every reading is then -1).
class HeapCounter {
 public:
  static bool available() { return api().current != nullptr; }
  static int64_t current_bytes() { return available() ? api().current() : -1; }
  static int64_t peak_bytes() { return available() ? api().peak() : -1; }
  static void reset_peak() {
    if (available()) api().reset();
  }

 private:
  struct Api {
    int64_t (*current)() = nullptr;
    int64_t (*peak)() = nullptr;
    void (*reset)() = nullptr;
  };
  static const Api& api() {
    static const Api a = [] {
      Api r;
      r.current = reinterpret_cast<int64_t (*)()>(dlsym(RTLD_DEFAULT, "heapcount_current_bytes"));
      r.peak = reinterpret_cast<int64_t (*)()>(dlsym(RTLD_DEFAULT, "heapcount_peak_bytes"));
      r.reset = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "heapcount_reset_peak"));
      if (!r.current || !r.peak || !r.reset) r = Api{};
      return r;
    }();
    return a;
  }
};

/// Peak resident set size of this process so far, in bytes (Linux reports KiB).
inline int64_t max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

/// Peaks of one region above what was live at its start.
struct RegionPeak {
  int64_t tensor_bytes = -1;  ///< tensor storage (CPU meter or CUDA allocator); -1: no meter
  int64_t heap_bytes = -1;    ///< all heap blocks (LD_PRELOAD counter); -1: not preloaded
};

/// Meters a region: construct before it, read `peak()` after it.
///
/// Example:
/// ```
/// anode::memory::install_cpu_meter();            // first thing in main()
/// anode::bench::RegionMeter meter(torch::kCPU);
/// train_step();
/// auto p = meter.peak();                         // p.tensor_bytes, p.heap_bytes
/// ```
class RegionMeter {
 public:
  explicit RegionMeter(c10::Device device) : device_(device) {
    if (!device_.is_cpu() || anode::memory::cpu_meter_installed()) {
      scope_valid_ = true;
      scope_.emplace(device_);
    }
    HeapCounter::reset_peak();
    heap_base_ = HeapCounter::current_bytes();
  }

  RegionPeak peak() const {
    RegionPeak p;
    if (scope_valid_) p.tensor_bytes = scope_->peak_bytes();
    if (HeapCounter::available()) p.heap_bytes = HeapCounter::peak_bytes() - heap_base_;
    return p;
  }

 private:
  c10::Device device_;
  bool scope_valid_ = false;
  c10::optional<anode::memory::PeakScope> scope_;
  int64_t heap_base_ = -1;
};

/// The larger of two readings, field by field (for the max over repeated runs).
inline RegionPeak max_of(const RegionPeak& a, const RegionPeak& b) {
  return {std::max(a.tensor_bytes, b.tensor_bytes), std::max(a.heap_bytes, b.heap_bytes)};
}

}  // namespace bench
}  // namespace anode
