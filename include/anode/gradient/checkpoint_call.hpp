#pragma once
// What one Gradient::Anode call (a block, or one interval of a trajectory) carries from its
// forward pass to its backward pass: the problem, the configuration its options fix once, and the
// record each forward pass writes.
//
// The configuration is read from the options when the call is made and never changes; everything
// a forward pass decides or measures (the checkpoints it uses, the world it saw, the states it
// stored) is in the record, which only the forward pass writes and the backward pass reads.

#include <anode/adaptive.hpp>
#include <anode/detail/autocast.hpp>
#include <anode/detail/buffers.hpp>
#include <anode/detail/rng.hpp>
#include <anode/gradient/kept_graph.hpp>
#include <anode/gradient/schedule.hpp>
#include <anode/integrate.hpp>
#include <anode/memory_plan.hpp>
#include <anode/options.hpp>
#include <anode/system.hpp>

#include <ATen/core/Generator.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

/// What the options fix for a call, read once when the call is made.
struct CheckpointConfig {
  explicit CheckpointConfig(const ODEBlockOptions& o, const c10::Device& device)
      : checkpoints(o.checkpoints()),
        keep_forward_checkpoints(o.keep_forward_checkpoints()),
        memory_budget(o.memory_budget()),
        verify(o.verify_recompute()),
        keep_latest(o.keep_latest_graph()),
        plan(o.memory_plan()),
        generators(o.preserve_rng_state() ? replayed_generators(o.generators(), device)
                                          : std::vector<at::Generator>{}) {}

  int64_t checkpoints;               // asked for: 0 whole-block recompute; k > 0 binomial schedule
  bool keep_forward_checkpoints;     // store the k checkpoints in forward (else in backward)
  int64_t memory_budget;             // > 0: choose the checkpoints in forward from a measured step
  bool verify;                       // check the recompute against the forward (output, RNG)
  bool keep_latest;                  // keep the forward's graph until the next block (or backward)
  std::shared_ptr<MemoryPlan> plan;  // decides the three above per step, when set
  std::vector<at::Generator> generators;  // replayed; empty when preserve_rng_state is off
};

/// A stored point of the trajectory: the state and the world the next step must see.
struct Snapshot {
  torch::Tensor z;
  int64_t position = -1;
  RngState rng;                        // empty unless random numbers are replayed
  std::vector<torch::Tensor> buffers;  // empty unless the RHS is training
};

/// What a forward pass records for the backward pass.
struct ForwardRecord {
  int64_t checkpoints = 0;    // used: the configuration's, the budget's or the plan's; 0: whole
  bool keep_forward = false;  // the forward pass stores the checkpoints
  std::shared_ptr<PlanTicket> ticket;  // the memory plan's view of this call
  std::shared_ptr<KeptGraph> kept;     // keep_latest_graph: the forward's graph, while kept
  AutocastState autocast;              // the forward pass's
  Snapshot start;                      // z_0's world (z itself is saved through the context)
  std::vector<uint64_t> rng_after;     // digest of the generators after the block's forward
  bool draws = false;                  // whether the forward pass drew from them
  torch::Tensor fingerprint;           // sum of the forward's output in double, on its device
  std::vector<Snapshot> slots;         // keep_forward_checkpoints: slot 1..k (index 0 unused)
  schedule::Schedule plan;             // binomial schedule, when checkpoints > 0
  std::vector<torch::Tensor> params;   // the node's parameter inputs, in order
  std::vector<int64_t> out_sizes;      // the block output's shape and dtype
  c10::ScalarType out_dtype = c10::ScalarType::Undefined;
};

/// Everything the forward pass needs to leave for the backward pass of one block call.
struct CheckpointCall : torch::CustomClassHolder {
  using Snapshot = detail::Snapshot;

  CheckpointCall(System sys, Stepper st, const ODEBlockOptions& o, const c10::Device& device,
                 std::shared_ptr<AdaptiveSession> session = nullptr)
      : system(std::move(sys)),
        stepper(std::move(st)),
        adaptive(std::move(session)),
        config(o, device) {}

  Snapshot snapshot(const torch::Tensor& z, int64_t position, bool with_rng) const {
    Snapshot s;
    s.z = z;
    s.position = position;
    if (with_rng) s.rng = RngState::capture(config.generators);
    if (system.training) s.buffers = snapshot_buffers(system.buffers);
    return s;
  }
  void enter(const Snapshot& s) const {
    if (!s.rng.empty()) s.rng.restore();
    if (system.training) restore_buffers(system.buffers, s.buffers);
  }
  /// Whether a snapshot of the world before a step is worth taking (something to put back).
  bool world_changes() const { return record.draws || system.training; }

  System system;
  Stepper stepper;  // an adaptive method's forward pass sets its grid to the accepted steps
  std::shared_ptr<AdaptiveSession> adaptive;  // adaptive method: the solve's step control
  const CheckpointConfig config;
  ForwardRecord record;
};

}  // namespace detail
}  // namespace anode
