#pragma once
// A memory plan's kept block, run as Backprop runs it: the block's steps build their graph in the
// caller's autograd world, and the engine differentiates it with the rest of the network.
//
// Why not inside CheckpointFunction. A graph kept inside the Function is differentiated by an
// inner engine call from the Function's backward, and LibTorch's node for a custom Function
// (CppNode::apply) holds the gradient it hands in until that backward returns, where Backprop's
// engine frees the gradient of a block's output as soon as the block's last operation has used
// it. Measured, that costs one block output of memory at the step's peak (a plan with every graph
// kept then needs Backprop's peak plus a block output) and an inner engine call in time (2-8 %
// of a step on launch-bound networks). Here nothing sits between the block and the engine: a
// kept block's step is Backprop's step, byte for byte.
//
// The plan's bookkeeping needs the block's backward boundaries, which a bare graph does not
// announce, so two marks are attached, neither of which allocates:
// - its end: the block's input passes through `PlanBoundary`, an identity Function (its output
//   is a view of its input); its backward runs once every gradient of the block's input has
//   arrived, i.e. when the block's own backward is done. The Function's node also owns the
//   plan's ticket, so a graph dropped without a backward releases it, as CheckpointFunction's
//   does. An input that needs no gradient (a block on the network's raw input) is anchored to
//   one of the block's parameters instead, so that the node exists; the block's first step then
//   also computes the gradient of its input, which the boundary drops (one state's bytes at
//   the end of the block's backward, when the step's memory is lowest);
// - its start: a hook on the block's output, which runs when the output's gradient is complete,
//   before the block's last operation is differentiated.
//
// The gradient is Backprop's by construction: there is no recompute to check.

#include <anode/detail/capsule.hpp>
#include <anode/gradient/kept_graph.hpp>
#include <anode/integrate.hpp>
#include <anode/memory_plan.hpp>

#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

/// The plan and the ticket of one kept call, as its marks hold them.
struct PlanMarks : torch::CustomClassHolder {
  std::shared_ptr<MemoryPlan> plan;
  std::shared_ptr<PlanTicket> ticket;
};

/// The identity on a kept block's input; its backward marks the end of the block's backward.
struct PlanBoundary : public torch::autograd::Function<PlanBoundary> {
  /// `anchor`: empty, or (when `z0` needs no gradient) one tensor that does, for the node.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z0,
                               at::TensorList anchor, c10::intrusive_ptr<PlanMarks> marks) {
    ctx->saved_data["anchors"] = static_cast<int64_t>(anchor.size());
    save_object(ctx, "marks", std::move(marks));
    return z0;  // returned as a view of the input (custom_function.h): nothing is allocated
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto marks = load_object<PlanMarks>(ctx, "marks");
    marks->plan->end_backward(*marks->ticket);
    // One entry per input: z0, the anchor (if any), the marks.
    torch::autograd::variable_list out(2 + ctx->saved_data["anchors"].toInt());
    if (ctx->needs_input_grad(0)) out[0] = grads[0];
    return out;
  }
};

/// Runs a kept call's `steps` with autograd on, in the caller's world (autocast, random numbers,
/// buffers: exactly Backprop's step), and returns the output with its graph. `ticket` is the
/// plan's decision for this call, already begun; `params` the call's differentiable parameters
/// (the anchor of an input that needs no gradient).
inline torch::Tensor run_kept_in_engine(const Stepper& stepper, const torch::Tensor& z0,
                                        const std::vector<torch::Tensor>& params, int64_t steps,
                                        std::shared_ptr<MemoryPlan> plan,
                                        std::shared_ptr<PlanTicket> ticket) {
  TORCH_CHECK(z0.requires_grad() || !params.empty(),
              "anode: internal error: a kept call with nothing to differentiate");
  // As any Anode forward pass: the graph a keep_latest_graph block kept is not needed first.
  release_latest_kept_graph();
  auto marks = c10::make_intrusive<PlanMarks>();
  marks->plan = plan;
  marks->ticket = ticket;
  std::vector<torch::Tensor> anchor;
  if (!z0.requires_grad()) anchor.push_back(params.front());
  torch::Tensor input = PlanBoundary::apply(z0, at::TensorList(anchor), marks);
  torch::Tensor out = stepper.integrate(input, 0, steps);
  if (out.requires_grad()) {
    out.register_hook(
        [marks](const torch::Tensor&) { marks->plan->begin_backward(*marks->ticket); });
  }
  plan->end_forward(*ticket);
  return out;
}

}  // namespace detail
}  // namespace anode
