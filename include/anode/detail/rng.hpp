#pragma once
// Saving, replaying and checking random-number-generator state, so a recomputation draws exactly
// the random numbers (dropout masks, noise) that the forward pass drew, or says that it did not.
//
// Modelled on torch.utils.checkpoint (`preserve_rng_state`): the generators replayed are the ones
// the options name, or by default the CPU generator and the default generator of the state's
// device (so CUDA is never initialised by accident). A replay puts a generator back to the state
// it had when the forward pass reached that step. That is only right if nobody else drew from the
// generator in between or during the recomputation: the default generators are shared by every
// thread of the process. anode cannot prevent that, so it checks instead: the forward pass records
// each generator's state after the block, and a recomputation that does not end in that same state
// drew different numbers, and raises (see CheckpointFunction). Generators are not thread-safe:
// their mutex is held while reading or writing state.

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/equal.h>
#include <c10/core/Device.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

inline at::Generator default_generator(const c10::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

/// The generators a recomputation replays: `named` if any are given, else the CPU generator and,
/// if `device` is not the CPU, that device's default generator.
inline std::vector<at::Generator> replayed_generators(const std::vector<at::Generator>& named,
                                                      const c10::Device& device) {
  if (!named.empty()) return named;
  std::vector<at::Generator> out{default_generator(c10::Device(c10::DeviceType::CPU))};
  if (!device.is_cpu()) out.push_back(default_generator(device));
  return out;
}

/// The states of a list of generators at one moment.
class RngState {
 public:
  RngState() = default;

  static RngState capture(const std::vector<at::Generator>& generators) {
    RngState s;
    s.states_.reserve(generators.size());
    for (const auto& g : generators) {
      at::Generator gen = g;  // a handle: the copy shares the generator
      std::lock_guard<std::mutex> lock(gen.mutex());
      s.states_.emplace_back(gen, gen.get_state());
    }
    return s;
  }
  /// The CPU generator and, if `device` is not the CPU, that device's default generator.
  static RngState capture(const c10::Device& device) {
    return capture(replayed_generators({}, device));
  }

  /// Sets every captured generator back to the captured state.
  void restore() const {
    for (const auto& [g, state] : states_) {
      at::Generator gen = g;
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
  }

  /// Whether every generator is in the same state in both (same generators, same order).
  bool same_as(const RngState& other) const {
    if (states_.size() != other.states_.size()) return false;
    for (std::size_t i = 0; i < states_.size(); ++i) {
      if (states_[i].first != other.states_[i].first) return false;
      if (!at::equal(states_[i].second, other.states_[i].second)) return false;
    }
    return true;
  }

  /// A 64-bit hash (FNV-1a) of each generator's state: what a later state is compared with,
  /// at a few bytes instead of a CPU generator's 5 KB.
  std::vector<uint64_t> digest() const {
    std::vector<uint64_t> out;
    out.reserve(states_.size());
    for (const auto& [g, state] : states_) {
      const at::Tensor bytes = state.contiguous();
      const auto* p = static_cast<const unsigned char*>(bytes.data_ptr());
      const auto n = static_cast<std::size_t>(bytes.numel()) * bytes.element_size();
      uint64_t h = 1469598103934665603ULL;
      for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
      out.push_back(h);
    }
    return out;
  }

  bool empty() const { return states_.empty(); }
  std::size_t size() const { return states_.size(); }
  const std::vector<std::pair<at::Generator, at::Tensor>>& states() const { return states_; }

 private:
  std::vector<std::pair<at::Generator, at::Tensor>> states_;
};

/// RAII: remembers the generators' states on construction and puts them back on destruction, so
/// whatever a recomputation replays does not disturb the outer random stream.
class RngFork {
 public:
  explicit RngFork(const std::vector<at::Generator>& generators)
      : saved_(RngState::capture(generators)) {}
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

  const RngState& saved() const { return saved_; }

 private:
  RngState saved_;
};

}  // namespace detail
}  // namespace anode
