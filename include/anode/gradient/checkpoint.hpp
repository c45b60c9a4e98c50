#pragma once
// Gradient::Anode: the checkpointed discretize-then-optimize gradient of Gholami, Keutzer & Biros,
// "ANODE: Unconditionally Accurate Memory-Efficient Gradients for Neural ODEs" (IJCAI 2019).
//
// Forward runs the block's solve with autograd off and keeps only the block input (plus, with
// `checkpoints(k)` and `keep_forward_checkpoints(true)`, k intermediate states). Backward re-runs
// the block's steps with autograd on from the nearest stored state and backpropagates through
// them. The result is the exact gradient of the discrete solve (to round-off), at memory O(L)
// block inputs + one block's trajectory, or O(L) + O(k) states + one step's graph with binomial
// checkpointing (the backward first rebuilds the block's k checkpoints from its input). With
// `keep_latest_graph(true)` a block's forward pass builds its graph instead and keeps it until the
// next block's forward pass starts (then it is freed, and backward recomputes as usual) or its own
// backward uses it: the block differentiated first is not recomputed, at the same O(L) + one
// block's graph memory.
//
// The exactness contract. A recomputation must see the world the forward pass saw, and anode
// replays what it can and checks the rest:
// - replayed: the random numbers of the generators named in the options (default: the CPU and the
//   state device's default generators), the autocast state (flags and dtypes, CPU and CUDA), and
//   buffers (BatchNorm running statistics: put back to their value at each step and, once the
//   gradient is taken, to the values the forward pass left);
// - checked (raising, never a silently wrong gradient): that each generator ends the recompute in
//   the state the forward pass left it in (another thread drew from it, or the draws differ), that
//   the recomputed block output equals the forward's bit for bit (`verify_recompute`), that the
//   right-hand side did not write into its input, and that it reads no tensor requiring grad
//   outside the Function's inputs (a closure's unlisted weight);
// - the caller's world is left as it was: generators and buffers are restored afterwards, and no
//   tensor autograd handed in is written to.
// Every backward can be retried after an exception: it keeps no half-built state.
//
// The pieces: the call object (checkpoint_call.hpp), the kept graph of keep_latest_graph
// (kept_graph.hpp), the parameter-gradient sums of the binomial backward (param_sums.hpp), the
// checkpoints a memory_budget allows (budget.hpp) and the binomial schedule (schedule.hpp). This
// file is the Function: its forward pass, its backward paths, and the checks of each recompute.

#include <anode/adaptive.hpp>
#include <anode/detail/autocast.hpp>
#include <anode/detail/buffers.hpp>
#include <anode/detail/capsule.hpp>
#include <anode/detail/graph.hpp>
#include <anode/detail/rng.hpp>
#include <anode/gradient/budget.hpp>
#include <anode/gradient/checkpoint_call.hpp>
#include <anode/gradient/kept_graph.hpp>
#include <anode/gradient/param_sums.hpp>
#include <anode/gradient/schedule.hpp>
#include <anode/integrate.hpp>

#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

/// A cheap, exact summary of a block output: a recompute that reproduces the output bit for bit
/// reproduces this bit for bit. Stays on the output's device (no host sync in forward).
inline torch::Tensor output_fingerprint(const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  return z.detach().sum(torch::kDouble);
}

}  // namespace detail

/// The ANODE autograd Function. Inputs: the block input z0 and the differentiable parameters
/// (as a TensorList, so autograd sees them as inputs); the call object carries the rest.
struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  using Call = detail::CheckpointCall;
  using Guard = detail::AutocastGuard;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z0,
                               at::TensorList params, c10::intrusive_ptr<Call> call) {
    const auto& stepper = call->stepper;
    const detail::CheckpointConfig& cfg = call->config;
    detail::ForwardRecord& rec = call->record;
    rec.params = params.vec();
    rec.autocast = detail::AutocastState::capture();
    Guard graph_free(rec.autocast, Guard::Purpose::GraphFree);
    rec.start = call->snapshot(torch::Tensor(), 0, /*with_rng=*/!cfg.generators.empty());
    rec.checkpoints = cfg.checkpoints;  // clamped to the grid below
    rec.keep_forward = cfg.keep_forward_checkpoints;
    if (cfg.plan) plan_forward(*call, z0);  // the plan decides these for this step
    if (cfg.memory_budget > 0) {
      rec.checkpoints = detail::checkpoints_for_budget(call->stepper, call->system, rec.autocast,
                                                       rec.start.rng, z0, cfg.memory_budget);
      call->enter(rec.start);  // the measured step drew random numbers and updated buffers
    }
    // This block's forward pass starts: the graph the previous one kept is not needed first.
    detail::release_latest_kept_graph();
    torch::Tensor zN;
    if (call->adaptive) {
      // Choose the steps; the accepted grid becomes the block's grid, which the recompute repeats.
      zN = run_adaptive(*call, z0);
    }
    const int64_t steps = call->stepper.grid().steps;
    if (rec.checkpoints >= steps) rec.checkpoints = 0;  // the whole block fits
    if (rec.checkpoints > 0) rec.plan = schedule::binomial_schedule(steps, rec.checkpoints);
    if (zN.defined()) {
      // the adaptive pass's output
    } else if (rec.checkpoints > 0 && rec.keep_forward) {
      zN = run_forward_plan(*call, z0, /*to_end=*/true, /*with_rng=*/!cfg.generators.empty(),
                            rec.slots);
    } else if (cfg.keep_latest && rec.checkpoints == 0) {
      zN = run_keeping_graph(*call, z0, steps);
    } else {
      zN = stepper.integrate(z0, 0, steps);
    }
    if (!cfg.generators.empty()) {
      const auto after = detail::RngState::capture(cfg.generators);
      rec.draws = !after.same_as(rec.start.rng);
      if (rec.draws) {
        rec.rng_after = after.digest();
      } else {
        // Nothing drawn, nothing to replay: keep no generator state (5 KB each on the CPU).
        rec.start.rng = detail::RngState();
        for (auto& s : rec.slots) s.rng = detail::RngState();
      }
    }
    if (cfg.verify) rec.fingerprint = detail::output_fingerprint(zN);
    rec.out_sizes = zN.sizes().vec();
    rec.out_dtype = zN.scalar_type();
    detail::save_for_backward(ctx, z0, params, call);
    if (rec.ticket) cfg.plan->end_forward(*rec.ticket);
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
    const auto& params = call->record.params;  // this node's parameter inputs, in forward's order
    const std::size_t n_params = params.size();
    // One entry per forward argument: z0, each parameter, and the (non-tensor) call object.
    const torch::Tensor& grad_out = grads[0];
    detail::PlanTicket* ticket = call->record.ticket.get();
    if (ticket) call->config.plan->begin_backward(*ticket);
    if (!grad_out.defined()) {
      if (ticket) call->config.plan->end_backward(*ticket);
      return torch::autograd::variable_list(2 + n_params);
    }
    torch::autograd::variable_list out;

    // Run under the forward's autocast state; leave the caller's random streams and the
    // forward's final buffer values as they are now.
    BackwardCounting counting(call->stepper.counter());
    Guard recompute(call->record.autocast, Guard::Purpose::Recompute);
    std::optional<detail::RngFork> fork;
    if (!call->config.generators.empty()) fork.emplace(call->config.generators);
    std::unique_ptr<detail::BufferRestore> keep_buffers;
    if (call->system.training) {
      keep_buffers = std::make_unique<detail::BufferRestore>(call->system.buffers);
    }
    // The generators' states a faithful recompute of the whole block ends in: the forward's, or,
    // if it drew nothing (nothing is replayed), the states they have now.
    std::vector<uint64_t> expected_digest;
    if (fork)
      expected_digest = call->record.draws ? call->record.rng_after : fork->saved().digest();
    const std::vector<uint64_t>* expected = fork ? &expected_digest : nullptr;

    std::vector<bool> need(1 + n_params);
    for (std::size_t i = 0; i < need.size(); ++i) need[i] = ctx->needs_input_grad(i);
    if (call->record.checkpoints == 0) {
      // The graph the forward pass kept, if the next block has not released it: no recompute.
      auto [kept_in, kept_out] =
          call->record.kept ? call->record.kept->take() : std::pair<torch::Tensor, torch::Tensor>();
      if (kept_out.defined()) {
        out = backward_kept(*call, kept_in, kept_out, grad_out, params, need);
      } else {
        out = backward_whole_block(*call, z0, grad_out, params, need, expected);
      }
    } else {
      // Checkpoints stored by the forward pass are handed to this backward pass, which frees
      // each one as soon as the schedule is done with it (they would otherwise live as long as
      // the graph). Without them (the default, a second backward through a retained graph, or a
      // retry after an exception), they are rebuilt by replaying the forward plan from the block
      // input in the forward's RNG and buffer state, up to the last checkpoint: the same states,
      // bit for bit. Nothing is written to `call` here, so a failed backward can be retried.
      std::vector<Call::Snapshot> slots = std::move(call->record.slots);
      call->record.slots.clear();
      if (slots.empty()) {
        call->enter(replayed(*call, call->record.start));
        Guard graph_free(call->record.autocast, Guard::Purpose::GraphFree);
        torch::NoGradGuard no_grad;
        run_forward_plan(*call, z0, /*to_end=*/false, /*with_rng=*/call->record.draws, slots);
      }
      out = backward_binomial(*call, z0, grad_out, params, need, std::move(slots), expected);
    }
    if (ticket) call->config.plan->end_backward(*ticket);
    out.emplace_back();  // for the call object: not a tensor input, but it has a slot
    return out;  // buffers restored (keep_buffers) after every gradient above has been taken
  }

 private:
  // A snapshot as the recompute enters it: its RNG states are replayed only if the forward pass
  // drew random numbers (otherwise the live states are left alone, and checked at the end).
  static Call::Snapshot replayed(const Call& call, const Call::Snapshot& s) {
    if (call.record.draws) return s;
    Call::Snapshot t = s;
    t.rng = detail::RngState();
    return t;
  }

  // The adaptive forward pass: chooses and takes the steps, and records the accepted times as the
  // block's grid (each step h = t_new - t exactly, so the recompute repeats them bit for bit).
  //
  // keep_latest_graph: the interval is solved with autograd on, as Backprop solves it, and its
  // graph through the accepted steps is kept. Only when no first stage is carried in from the
  // previous interval (FSAL): that stage's graph would belong to the previous interval's node, so
  // a later interval of a trajectory is solved graph-free and recomputed as usual.
  static torch::Tensor run_adaptive(Call& call, const torch::Tensor& z0) {
    auto& session = *call.adaptive;
    const TimeGrid interval = call.stepper.grid();
    std::vector<double> times{interval.t0};
    const Stepper& stepper = call.stepper;
    const auto f = [&stepper](double t, const torch::Tensor& x) { return stepper.eval(t, x); };
    const bool keep = call.config.keep_latest && !session.have_k;
    torch::Tensor input, z;
    {
      std::optional<Guard> as_captured;
      std::optional<torch::AutoGradMode> enable;
      input = z0;
      if (keep) {
        as_captured.emplace(call.record.autocast, Guard::Purpose::Forward);
        enable.emplace(true);
        input = z0.detach().requires_grad_(z0.requires_grad());
      }
      z = adaptive_integrate(stepper.tableau(), f, input, interval.t0, interval.t1, session.control,
                             session.carry, &times, session.k, session.have_k);
    }
    call.stepper.set_grid(TimeGrid::explicit_times(std::move(times)));
    if (!keep) return z;
    // The stage carried to the next interval must not hold this interval's graph alive.
    if (session.k.defined()) session.k = session.k.detach();
    call.record.kept = detail::keep_latest_graph(input, z);
    return z.detach();
  }

  // The memory plan's decision for this call (ODEBlockOptions::memory_plan), when it is not to keep
  // its graph (the solve runs those outside this Function): recompute it whole, or binomial
  // checkpoints rebuilt or kept. A calibrating call measures one step's cost first (as
  // memory_budget does) and runs in its cheapest form.
  static void plan_forward(Call& call, const torch::Tensor& z0) {
    auto& rec = call.record;
    const auto& memory_plan = call.config.plan;
    // Begun by the solve (which runs a kept call outside this Function), or here.
    if (!rec.ticket) {
      rec.ticket = memory_plan->begin_forward(detail::plan_call_key(
          z0, call.system.training, call.adaptive != nullptr, call.stepper.grid().steps,
          call.stepper.tableau().name, rec.params.size()));
    }
    auto& t = *rec.ticket;
    const detail::PlanCallKey& key = t.key;
    if (t.calibrating) {
      detail::StepCost cost;
      if (!key.adaptive) {
        cost =
            detail::measure_step_cost(call.stepper, call.system, rec.autocast, rec.start.rng, z0);
        call.enter(rec.start);  // the measured step drew random numbers and updated buffers
      }
      memory_plan->measured(t, cost);
    }
    const plan::Decision d = t.decision;
    const bool binomial =
        d.choice == plan::Choice::Binomial || d.choice == plan::Choice::BinomialKept;
    rec.checkpoints = binomial ? d.checkpoints : 0;
    rec.keep_forward = d.choice == plan::Choice::BinomialKept;
    // A kept call runs outside this Function (gradient/planned_keep.hpp).
    TORCH_INTERNAL_ASSERT(d.choice != plan::Choice::Keep,
                          "anode: internal error: a kept call reached CheckpointFunction");
  }

  // keep_latest_graph: the block's steps with autograd on, as Backprop takes them (under the
  // caller's autocast state, cache included), keeping the graph for this block's backward and
  // registering it as the one the next block's forward pass releases. Returns the output without
  // the graph (the Function's own output).
  static torch::Tensor run_keeping_graph(Call& call, const torch::Tensor& z0, int64_t steps) {
    torch::Tensor input, output;
    {
      Guard as_captured(call.record.autocast, Guard::Purpose::Forward);
      torch::AutoGradMode enable(true);
      input = z0.detach().requires_grad_(z0.requires_grad());
      output = call.stepper.integrate(input, 0, steps);
    }
    call.record.kept = detail::keep_latest_graph(input, output);
    return output.detach();
  }

  // Backward through the graph the forward pass kept: Backprop's gradient, no recompute, so
  // nothing to replay or verify; only the check that the graph reaches no foreign leaf.
  static torch::autograd::variable_list backward_kept(const Call& call, const torch::Tensor& in,
                                                      const torch::Tensor& out,
                                                      const torch::Tensor& grad_out,
                                                      const std::vector<torch::Tensor>& params,
                                                      const std::vector<bool>& need) {
    check_inputs(call, out, in, params);
    return gradients_of(out, in, grad_out, params, need);
  }

  // The gradients of `zN` (seeded with `grad_out`) with respect to the inputs `need` asks for: the
  // block input `z` and the parameters. One entry per Function input, undefined where not needed.
  static torch::autograd::variable_list gradients_of(const torch::Tensor& zN,
                                                     const torch::Tensor& z,
                                                     const torch::Tensor& grad_out,
                                                     const std::vector<torch::Tensor>& params,
                                                     const std::vector<bool>& need) {
    torch::autograd::variable_list out(need.size());
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

  // Paper's scheme: re-run the whole block with autograd on, backprop through it once.
  static torch::autograd::variable_list backward_whole_block(
      const Call& call, const torch::Tensor& z0, const torch::Tensor& grad_out,
      const std::vector<torch::Tensor>& params, const std::vector<bool>& need,
      const std::vector<uint64_t>* expected_rng) {
    call.enter(replayed(call, call.record.start));
    torch::AutoGradMode enable(true);
    torch::Tensor z = z0.detach().requires_grad_(need[0]);
    torch::Tensor zN = call.stepper.integrate(z, 0, call.stepper.grid().steps);
    if (call.record.ticket) call.config.plan->rebuilt(*call.record.ticket);
    const torch::Tensor fingerprint = check_recomputed(call, zN, expected_rng);
    check_inputs(call, zN, z, params);
    auto out = gradients_of(zN, z, grad_out, params, need);
    verify_fingerprint(call, fingerprint);  // before any gradient leaves this function
    return out;
  }

  // The first sweep of the binomial schedule: advance from z_0, storing its checkpoints into
  // `slots`, to z_N (to_end) or only as far as the last checkpoint (when rebuilding them in
  // backward). Writes nothing else, so a sweep that throws leaves no half-built state behind.
  static torch::Tensor run_forward_plan(const Call& call, const torch::Tensor& z0, bool to_end,
                                        bool with_rng, std::vector<Call::Snapshot>& slots) {
    std::vector<Call::Snapshot> built(static_cast<std::size_t>(call.record.checkpoints) + 1);
    const auto& actions = call.record.plan.forward;
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
          TORCH_CHECK(a.arg >= 1 && a.arg <= call.record.checkpoints,
                      "anode: internal error: schedule stores to slot ", a.arg);
          built[static_cast<std::size_t>(a.arg)] = call.snapshot(z, pos, with_rng);
          break;
        default:
          TORCH_CHECK(false, "anode: internal error: unexpected action in a forward schedule");
      }
    }
    TORCH_CHECK(!to_end || pos == call.stepper.grid().steps,
                "anode: internal error: the forward schedule ended at step ", pos);
    slots = std::move(built);
    return z;
  }

  // Backward pass of the binomial schedule: only one step's graph exists at a time.
  static torch::autograd::variable_list backward_binomial(
      const Call& call, const torch::Tensor& z0, const torch::Tensor& grad_out,
      const std::vector<torch::Tensor>& params, const std::vector<bool>& need,
      std::vector<Call::Snapshot> slots, const std::vector<uint64_t>* expected_rng) {
    const int64_t n_steps = call.stepper.grid().steps;
    torch::Tensor z;  // the current state z_pos
    int64_t pos = -1;
    torch::Tensor adjoint = grad_out;  // dL/dz_{next step to reverse + 1}
    int64_t next_reverse = n_steps - 1;
    detail::GradientSums sums(call.record.autocast, params, need);
    torch::Tensor fingerprint;  // of the recomputed z_N, compared once all steps are reversed
    slots[0] = replayed(call, call.record.start);
    slots[0].z = z0;
    // The generators' states after the step reversed next, as the forward pass (for the last
    // step) or the recompute of the step after it left them.
    const std::vector<uint64_t>* after_step = call.record.draws ? expected_rng : nullptr;
    std::vector<uint64_t> world_rng;
    for (const auto& a : call.record.plan.backward) {
      switch (a.kind) {
        case schedule::ActionKind::Restore: {
          const auto& s = slots.at(static_cast<std::size_t>(a.arg));
          TORCH_CHECK(s.z.defined(), "anode: internal error: restore from empty slot ", a.arg);
          call.enter(s);
          z = s.z;
          pos = s.position;
          break;
        }
        case schedule::ActionKind::Advance: {
          Guard graph_free(call.record.autocast, Guard::Purpose::GraphFree);
          z = call.stepper.integrate(z, pos, pos + a.arg);
          pos += a.arg;
          break;
        }
        case schedule::ActionKind::Store:
          slots.at(static_cast<std::size_t>(a.arg)) = call.snapshot(z, pos, call.record.draws);
          break;
        case schedule::ActionKind::Free:
          slots.at(static_cast<std::size_t>(a.arg)) = Call::Snapshot{};
          break;
        case schedule::ActionKind::Reverse: {
          TORCH_CHECK(pos == next_reverse && a.arg == pos, "anode: internal error: reversing step ",
                      a.arg, " at position ", pos, " but step ", next_reverse, " is next");
          // Reverse one step: it consumes the RNG/buffers of step pos, which later actions that
          // start from this same state must see again.
          Call::Snapshot world;
          if (call.world_changes()) world = call.snapshot(torch::Tensor(), pos, call.record.draws);
          {
            torch::AutoGradMode enable(true);
            torch::Tensor zi = z.detach().requires_grad_(true);
            torch::Tensor next = call.stepper.step(pos, zi);
            if (after_step != nullptr) check_rng(call, *after_step, pos);
            if (pos == n_steps - 1) fingerprint = check_recomputed(call, next, nullptr);
            sums.reverse_step(next, zi, adjoint);
          }
          if (call.world_changes()) call.enter(world);
          if (call.record.draws) {
            world_rng = world.rng.digest();
            after_step = &world_rng;
          }
          --next_reverse;
          break;
        }
      }
    }
    TORCH_CHECK(next_reverse == -1, "anode: internal error: the backward schedule left step ",
                next_reverse, " unreversed");
    // Nothing replayed: the generators must not have moved at all.
    if (!call.record.draws && expected_rng != nullptr) check_rng(call, *expected_rng, -1);
    verify_fingerprint(call, fingerprint);
    torch::autograd::variable_list out = sums.parameter_gradients();
    if (need[0]) out[0] = adjoint;
    return out;
  }

  // The recompute must have reproduced the forward pass: same shape and dtype, the generators in
  // the states the forward left them in, and (verify_recompute) the same output, bit for bit.
  // Checks what needs no host-device synchronisation and returns the recomputed output's
  // fingerprint (undefined without verify_recompute), for verify_fingerprint to compare.
  static torch::Tensor check_recomputed(const Call& call, const torch::Tensor& z,
                                        const std::vector<uint64_t>* expected_rng) {
    TORCH_CHECK(
        z.sizes().vec() == call.record.out_sizes && z.scalar_type() == call.record.out_dtype,
        "anode: the recomputed block output (shape ", z.sizes(), ", dtype ", z.scalar_type(),
        ") differs from the forward pass's (shape ", c10::IntArrayRef(call.record.out_sizes),
        ", dtype ", call.record.out_dtype,
        "); the right-hand side must be deterministic given its inputs and RNG state");
    if (expected_rng != nullptr) check_rng(call, *expected_rng, -1);
    if (!call.config.verify || !call.record.fingerprint.defined()) return torch::Tensor();
    return detail::output_fingerprint(z);
  }

  // Compares the recompute's fingerprint with the forward's: the block's one host-device
  // synchronisation. It is called after the block's gradient work has been queued, so that a GPU
  // has that work to do while the host waits (checking right after the recompute left the GPU
  // idle while the host then queued the backward: measured on an H200, see docs/gpu.md), and
  // before any gradient is returned, so a mismatch still means no gradient at all.
  static void verify_fingerprint(const Call& call, const torch::Tensor& now) {
    if (!now.defined()) return;
    const torch::Tensor both =
        torch::stack({call.record.fingerprint, now}).to(torch::kCPU);  // one sync
    const double before = both.data_ptr<double>()[0], recomputed = both.data_ptr<double>()[1];
    TORCH_CHECK(
        std::memcmp(&before, &recomputed, sizeof(double)) == 0,
        "anode: recomputing this ODE block in backward gave a different output than its forward "
        "pass did (sum ",
        before, " in forward, ", recomputed,
        " recomputed), so its gradient would not be the gradient of the forward pass. The "
        "right-hand side must compute the same values from the same input and replayed random "
        "numbers. Does it draw from a torch::Generator not named in ODEBlockOptions::generators, "
        "or draw random numbers with preserve_rng_state(false)? Another thread may have drawn "
        "from a replayed generator during the forward pass and again during this recompute, the "
        "same count at other positions: each generator then ends in the same state, and only "
        "this check (verify_recompute) tells; name the right-hand side's own generator in "
        "ODEBlockOptions::generators to keep other threads out. Does it read a tensor or state "
        "that changed after the forward pass (a closure over a variable since reassigned)? Does "
        "it use nondeterministic kernels (atomics on GPU)? For the last, "
        "at::globalContext().setDeterministicAlgorithms(true) makes them deterministic, or "
        "verify_recompute(false) accepts the difference");
  }

  // The generators must be where a faithful recompute leaves them.
  static void check_rng(const Call& call, const std::vector<uint64_t>& expected, int64_t step) {
    const auto live = detail::RngState::capture(call.config.generators).digest();
    int64_t i = -1;
    for (std::size_t j = 0; j < live.size() && i < 0; ++j) {
      if (j >= expected.size() || live[j] != expected[j]) i = static_cast<int64_t>(j);
    }
    if (i < 0) return;
    const auto& gen = call.config.generators.at(static_cast<std::size_t>(i));
    TORCH_CHECK(false,
                "anode: recomputing this ODE block in backward did not draw the same random "
                "numbers as its forward pass",
                step >= 0 ? " (step " : "", step >= 0 ? std::to_string(step + 1) : "",
                step >= 0 ? ")" : "", ": the generator on ", gen.device(),
                " ended in a different state. Another thread drew from it between the forward "
                "pass and this backward, or during either (the default generators are shared by "
                "every thread: a data-loading thread with random augmentation, a second model), "
                "or the right-hand side's draws depend on something that changed. The gradient "
                "would not be the forward pass's, so anode stops. Give the right-hand side its own "
                "torch::Generator and name it in ODEBlockOptions::generators, or keep other "
                "threads from drawing from the default generator during training; a right-hand "
                "side without randomness can set preserve_rng_state(false)");
  }

  // The recomputed graph may only reach the Function's inputs (the state and the parameters).
  static void check_inputs(const Call&, const torch::Tensor& out, const torch::Tensor& z,
                           const std::vector<torch::Tensor>& params) {
    if (!out.requires_grad()) return;
    std::vector<torch::Tensor> known(params);
    known.push_back(z);
    detail::check_no_foreign_leaf({out}, known, "Gradient::Anode");
  }
};

}  // namespace anode
