#pragma once
// Gradient::Anode: the checkpointed discretize-then-optimize gradient of Gholami, Keutzer & Biros,
// "ANODE: Unconditionally Accurate Memory-Efficient Gradients for Neural ODEs" (IJCAI 2019).
//
// Forward runs the block's solve with autograd off and keeps only the block input (plus, with
// `checkpoints(k)` and `keep_forward_checkpoints(true)`, k intermediate states). Backward re-runs
// the block's steps with autograd on from the nearest stored state and backpropagates through
// them. The result is the exact gradient of the discrete solve (to round-off), at memory O(L)
// block inputs + one block's trajectory, or O(L) + O(k) states + one step's graph with binomial
// checkpointing (the backward first rebuilds the block's k checkpoints from its input).
//
// A recomputation must see the world the forward pass saw: the RNG is put back to the state it
// had at that step (dropout masks replay exactly), and buffers (BatchNorm running statistics) are
// put back to their values at that step and, once the gradient is taken, to the values the
// forward pass left, so that training is indistinguishable from plain backprop.

#include <anode/detail/buffers.hpp>
#include <anode/detail/capsule.hpp>
#include <anode/detail/rng.hpp>
#include <anode/gradient/schedule.hpp>
#include <anode/integrate.hpp>
#include <anode/system.hpp>

#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace anode {
namespace detail {

/// Everything the forward pass needs to leave for the backward pass of one block call.
struct CheckpointCall : torch::CustomClassHolder {
  CheckpointCall(System sys, Stepper st, int64_t k, bool keep_forward = false)
      : system(std::move(sys)),
        stepper(std::move(st)),
        checkpoints(k),
        keep_forward_checkpoints(keep_forward) {}

  /// A stored point of the trajectory: the state and the world the next step must see.
  struct Snapshot {
    torch::Tensor z;
    int64_t position = -1;
    RngState rng;
    std::vector<torch::Tensor> buffers;  // empty unless the RHS is training
  };

  Snapshot snapshot(const torch::Tensor& z, int64_t position, const c10::Device& device) const {
    Snapshot s;
    s.z = z;
    s.position = position;
    s.rng = RngState::capture(device);
    if (system.training) s.buffers = snapshot_buffers(system.buffers);
    return s;
  }
  void enter(const Snapshot& s) const {
    s.rng.restore();
    if (system.training) restore_buffers(system.buffers, s.buffers);
  }

  System system;
  Stepper stepper;
  int64_t checkpoints;                // 0: whole-block recompute; 1..N-1: binomial schedule
  bool keep_forward_checkpoints;      // store the k checkpoints in forward (else in backward)
  Snapshot start;                     // z_0's world (z itself is saved through the context)
  std::vector<Snapshot> slots;        // binomial checkpoints, slot 1..k (index 0 unused)
  schedule::Schedule plan;            // binomial schedule, when checkpoints > 0
  std::vector<torch::Tensor> params;  // the node's parameter inputs, in order
  std::vector<int64_t> out_sizes;
  c10::ScalarType out_dtype = c10::ScalarType::Undefined;
};

}  // namespace detail

/// The ANODE autograd Function. Inputs: the block input z0 and the differentiable parameters
/// (as a TensorList, so autograd sees them as inputs); the call object carries the rest.
struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  using Call = detail::CheckpointCall;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z0,
                               at::TensorList params, c10::intrusive_ptr<Call> call) {
    const auto& stepper = call->stepper;
    const int64_t n_steps = stepper.grid().steps;
    call->params = params.vec();
    call->start = call->snapshot(torch::Tensor(), 0, z0.device());
    torch::Tensor zN;
    if (call->checkpoints > 0 && call->keep_forward_checkpoints) {
      zN = run_forward_plan(*call, z0, /*to_end=*/true);
    } else {
      zN = stepper.integrate(z0, 0, n_steps);
    }
    call->out_sizes = zN.sizes().vec();
    call->out_dtype = zN.scalar_type();
    detail::save_for_backward(ctx, z0, params, call);
    return zN;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(
        !torch::GradMode::is_enabled(),
        "anode: Gradient::Anode does not support higher-order gradients (create_graph=true);"
        " use Gradient::Backprop for those");
    auto call = detail::load_object<Call>(ctx, "call");
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& z0 = saved[0];
    const auto& params = call->params;  // this node's parameter inputs, in forward's order
    const std::size_t n_params = params.size();
    // One entry per forward argument: z0, each parameter, and the (non-tensor) call object.
    const torch::Tensor& grad_out = grads[0];
    if (!grad_out.defined()) return torch::autograd::variable_list(2 + n_params);
    torch::autograd::variable_list out;

    // Leave the caller's RNG stream and the forward's final buffer values as they are now.
    detail::RngFork fork(z0.device());
    std::unique_ptr<detail::BufferRestore> keep_buffers;
    if (call->system.training) {
      keep_buffers = std::make_unique<detail::BufferRestore>(call->system.buffers);
    }

    std::vector<bool> need(1 + n_params);
    for (std::size_t i = 0; i < need.size(); ++i) need[i] = ctx->needs_input_grad(i);
    if (call->checkpoints == 0) {
      out = backward_whole_block(*call, z0, grad_out, params, need);
    } else {
      // Checkpoints stored by the forward pass are handed to this backward pass, which frees
      // each one as soon as the schedule is done with it (they would otherwise live as long as
      // the graph). Without them (the default, or a second backward through a retained graph),
      // they are rebuilt by replaying the forward plan from the block input in the forward's RNG
      // and buffer state, up to the last checkpoint: the same states, bit for bit.
      std::vector<Call::Snapshot> slots = std::move(call->slots);
      call->slots.clear();
      if (slots.empty()) {
        call->enter(call->start);
        torch::NoGradGuard no_grad;
        run_forward_plan(*call, z0, /*to_end=*/false);
        slots = std::move(call->slots);
        call->slots.clear();
      }
      out = backward_binomial(*call, z0, grad_out, params, need, std::move(slots));
    }
    out.emplace_back();  // for the call object: not a tensor input, but it has a slot
    return out;  // buffers restored (keep_buffers) after every gradient above has been taken
  }

 private:
  // Paper's scheme: re-run the whole block with autograd on, backprop through it once.
  static torch::autograd::variable_list backward_whole_block(
      const Call& call, const torch::Tensor& z0, const torch::Tensor& grad_out,
      const std::vector<torch::Tensor>& params, const std::vector<bool>& need) {
    call.enter(call.start);
    torch::autograd::variable_list out(need.size());
    torch::AutoGradMode enable(true);
    torch::Tensor z = z0.detach().requires_grad_(need[0]);
    torch::Tensor zN = call.stepper.integrate(z, 0, call.stepper.grid().steps);
    check_recomputed(call, zN);
    std::vector<torch::Tensor> inputs;
    std::vector<std::size_t> where;
    if (need[0]) {
      inputs.push_back(z);
      where.push_back(0);
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (need[1 + i]) {
        inputs.push_back(params[i]);
        where.push_back(1 + i);
      }
    }
    if (inputs.empty() || !zN.requires_grad()) return out;
    auto g = torch::autograd::grad({zN}, inputs, {grad_out}, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    for (std::size_t i = 0; i < g.size(); ++i) out[where[i]] = g[i];
    return out;
  }

  // The first sweep of the binomial schedule: advance from z_0, storing its checkpoints, to z_N
  // (to_end) or only as far as the last checkpoint (when rebuilding them in backward).
  static torch::Tensor run_forward_plan(Call& call, const torch::Tensor& z0, bool to_end) {
    call.plan = schedule::binomial_schedule(call.stepper.grid().steps, call.checkpoints);
    call.slots.assign(static_cast<std::size_t>(call.checkpoints) + 1, {});
    const auto& actions = call.plan.forward;
    std::size_t end = actions.size();
    if (!to_end) {
      while (end > 0 && actions[end - 1].kind != schedule::ActionKind::Store) --end;
    }
    torch::Tensor z = z0;
    int64_t pos = 0;
    for (std::size_t i = 0; i < end; ++i) {
      const auto& a = actions[i];
      switch (a.kind) {
        case schedule::ActionKind::Advance:
          z = call.stepper.integrate(z, pos, pos + a.arg);
          pos += a.arg;
          break;
        case schedule::ActionKind::Store:
          TORCH_CHECK(a.arg >= 1 && a.arg <= call.checkpoints,
                      "anode: internal error: schedule stores to slot ", a.arg);
          call.slots[static_cast<std::size_t>(a.arg)] = call.snapshot(z, pos, z0.device());
          break;
        default:
          TORCH_CHECK(false, "anode: internal error: unexpected action in a forward schedule");
      }
    }
    TORCH_CHECK(!to_end || pos == call.stepper.grid().steps,
                "anode: internal error: the forward schedule ended at step ", pos);
    return z;
  }

  // Backward pass of the binomial schedule: only one step's graph exists at a time.
  static torch::autograd::variable_list backward_binomial(const Call& call, const torch::Tensor& z0,
                                                          const torch::Tensor& grad_out,
                                                          const std::vector<torch::Tensor>& params,
                                                          const std::vector<bool>& need,
                                                          std::vector<Call::Snapshot> slots) {
    const int64_t n_steps = call.stepper.grid().steps;
    torch::Tensor z;  // the current state z_pos
    int64_t pos = -1;
    torch::Tensor adjoint = grad_out;  // dL/dz_{next step to reverse + 1}
    int64_t next_reverse = n_steps - 1;
    std::vector<torch::Tensor> param_grads(params.size());
    std::vector<torch::Tensor> inputs;
    slots[0] = call.start;
    slots[0].z = z0;
    for (const auto& a : call.plan.backward) {
      switch (a.kind) {
        case schedule::ActionKind::Restore: {
          const auto& s = slots.at(static_cast<std::size_t>(a.arg));
          TORCH_CHECK(s.z.defined(), "anode: internal error: restore from empty slot ", a.arg);
          call.enter(s);
          z = s.z;
          pos = s.position;
          break;
        }
        case schedule::ActionKind::Advance:
          z = call.stepper.integrate(z, pos, pos + a.arg);
          pos += a.arg;
          break;
        case schedule::ActionKind::Store:
          slots.at(static_cast<std::size_t>(a.arg)) = call.snapshot(z, pos, z0.device());
          break;
        case schedule::ActionKind::Free:
          slots.at(static_cast<std::size_t>(a.arg)) = Call::Snapshot{};
          break;
        case schedule::ActionKind::Reverse: {
          TORCH_CHECK(pos == next_reverse && a.arg == pos, "anode: internal error: reversing step ",
                      a.arg, " at position ", pos, " but step ", next_reverse, " is next");
          // Reverse one step: it consumes the RNG/buffers of step pos, which later actions that
          // start from this same state must see again.
          const auto world = call.snapshot(torch::Tensor(), pos, z0.device());
          {
            torch::AutoGradMode enable(true);
            torch::Tensor zi = z.detach().requires_grad_(true);
            torch::Tensor next = call.stepper.step(pos, zi);
            inputs.assign(1, zi);
            for (std::size_t i = 0; i < params.size(); ++i) {
              if (need[1 + i]) inputs.push_back(params[i]);
            }
            auto g = torch::autograd::grad({next}, inputs, {adjoint}, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
            adjoint = g[0].defined() ? g[0] : torch::zeros_like(zi);
            std::size_t j = 1;
            for (std::size_t i = 0; i < params.size(); ++i) {
              if (!need[1 + i]) continue;
              const auto& gi = g[j++];
              if (gi.defined())
                param_grads[i] = param_grads[i].defined() ? param_grads[i].add_(gi) : gi;
            }
          }
          call.enter(world);
          --next_reverse;
          break;
        }
      }
    }
    TORCH_CHECK(next_reverse == -1, "anode: internal error: the backward schedule left step ",
                next_reverse, " unreversed");
    torch::autograd::variable_list out(need.size());
    if (need[0]) out[0] = adjoint;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (need[1 + i]) out[1 + i] = param_grads[i];
    }
    return out;
  }

  static void check_recomputed(const Call& call, const torch::Tensor& z) {
    TORCH_CHECK(z.sizes().vec() == call.out_sizes && z.scalar_type() == call.out_dtype,
                "anode: the recomputed block output (shape ", z.sizes(), ", dtype ",
                z.scalar_type(), ") differs from the forward pass's (shape ",
                c10::IntArrayRef(call.out_sizes), ", dtype ", call.out_dtype,
                "); the right-hand side must be deterministic given its inputs and RNG state");
  }
};

}  // namespace anode
