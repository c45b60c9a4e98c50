#pragma once
// Saving and replaying random-number-generator state, so a recomputation draws exactly the random
// numbers (dropout masks, noise) that the forward pass drew. Modelled on torch.utils.checkpoint:
// the CPU generator always, a CUDA generator only for devices the state already lives on (so CUDA
// is never initialised by accident), and a fork guard so the caller's random stream is left as it
// was. Generators are not thread-safe: their mutex is held while reading or writing state.

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <mutex>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

inline at::Generator default_generator(const c10::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

/// The states of the default generators of a set of devices (CPU always included).
class RngState {
 public:
  RngState() = default;

  /// Captures the CPU generator and, if `device` is not the CPU, that device's generator.
  static RngState capture(const c10::Device& device) {
    RngState s;
    s.add(c10::Device(c10::DeviceType::CPU));
    if (!device.is_cpu()) s.add(device);
    return s;
  }

  /// Sets every captured generator back to the captured state.
  void restore() const {
    for (const auto& [device, state] : states_) {
      auto gen = default_generator(device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
  }

  bool empty() const { return states_.empty(); }
  const std::vector<std::pair<c10::Device, at::Tensor>>& states() const { return states_; }

 private:
  void add(const c10::Device& device) {
    auto gen = default_generator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    states_.emplace_back(device, gen.get_state());
  }

  std::vector<std::pair<c10::Device, at::Tensor>> states_;
};

/// RAII: remembers the caller's generator states on construction and puts them back on
/// destruction, so whatever a recomputation replays does not disturb the outer random stream.
class RngFork {
 public:
  explicit RngFork(const c10::Device& device) : saved_(RngState::capture(device)) {}
  ~RngFork() {
    try {
      saved_.restore();
    } catch (...) {
      // Never throw from a destructor (we may be unwinding from an error already).
    }
  }
  RngFork(const RngFork&) = delete;
  RngFork& operator=(const RngFork&) = delete;

 private:
  RngState saved_;
};

}  // namespace detail
}  // namespace anode
