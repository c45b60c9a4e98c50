#pragma once
// Gradient::Adjoint: the reverse-time continuous adjoint of Chen et al., "Neural Ordinary
// Differential Equations" (NeurIPS 2018), as in torchdiffeq's odeint_adjoint, with the same
// fixed-step method as the forward solve. Optimize-then-discretize: the augmented system
//
//   dz/dt = f(t, z),   da/dt = -a^T df/dz,   dg/dt = -a^T df/dtheta,
//
// is integrated from t1 back to t0 starting from (z(t1), dL/dz(t1), 0). Memory is flat in N_t,
// but z is reconstructed by solving backwards, which is unstable for ReLU/conv right-hand sides,
// and the result is the discretisation of the continuous gradient, not the gradient of the
// discrete forward pass. It is here as the baseline the ANODE paper argues against.

#include <anode/adaptive.hpp>
#include <anode/detail/autocast.hpp>
#include <anode/detail/buffers.hpp>
#include <anode/detail/capsule.hpp>
#include <anode/detail/graph.hpp>
#include <anode/detail/rng.hpp>
#include <anode/integrate.hpp>
#include <anode/system.hpp>

#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

struct AdjointCall : torch::CustomClassHolder {
  AdjointCall(System sys, Stepper st) : system(std::move(sys)), stepper(std::move(st)) {}
  System system;
  Stepper stepper;
  std::vector<torch::Tensor> params;          // the node's parameter inputs, in order
  AutocastState autocast;                     // the forward pass's, re-entered by the reverse solve
  std::shared_ptr<AdaptiveSession> adaptive;  // adaptive method: both solves choose steps
};

}  // namespace detail

/// The reverse-time adjoint as an autograd Function (inputs: z0 and the parameters).
struct AdjointFunction : public torch::autograd::Function<AdjointFunction> {
  using Call = detail::AdjointCall;

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& z0,
                               at::TensorList params, c10::intrusive_ptr<Call> call) {
    call->params = params.vec();
    call->autocast = detail::AutocastState::capture();
    detail::AutocastGuard graph_free(call->autocast, detail::AutocastGuard::Purpose::GraphFree);
    torch::Tensor zN;
    if (call->adaptive) {
      auto& session = *call->adaptive;
      const auto& st = call->stepper;
      const auto f = [&st](double t, const torch::Tensor& x) { return st.eval(t, x); };
      zN = adaptive_integrate(st.tableau(), f, z0, st.grid().t0, st.grid().t1, session.control,
                              session.carry, nullptr, session.k, session.have_k);
    } else {
      zN = call->stepper.integrate(z0, 0, call->stepper.grid().steps);
    }
    detail::save_for_backward(ctx, zN, params, call);
    return zN;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "anode: Gradient::Adjoint does not support higher-order gradients "
                "(create_graph=true); use Gradient::Backprop for those");
    auto call = detail::load_object<Call>(ctx, "call");
    const torch::Tensor zN = ctx->get_saved_variables()[0];
    const auto& params = call->params;
    const std::size_t P = params.size();
    // One entry per forward argument: z0, each parameter, and the (non-tensor) call object.
    torch::autograd::variable_list out(2 + P);
    if (!grads[0].defined()) return out;

    // The reverse solve re-evaluates f under the forward's autocast state; keep the caller's RNG
    // stream and the buffers as they are.
    BackwardCounting counting(call->stepper.counter());
    detail::AutocastGuard recompute(call->autocast, detail::AutocastGuard::Purpose::Recompute);
    detail::RngFork fork(zN.device());
    std::unique_ptr<detail::BufferRestore> keep_buffers;
    if (call->system.training) {
      keep_buffers = std::make_unique<detail::BufferRestore>(call->system.buffers);
    }

    const auto& grid = call->stepper.grid();
    const bool check = call->stepper.check_finite();
    // Parameters the RHS never touched keep an undefined gradient, as with Backprop (optimizers
    // skip those; a zero would still feel weight decay and momentum).
    std::vector<bool> used(P, false);
    // Augmented state: [z, a, g_1 .. g_P].
    auto augmented = [&](double t, const std::vector<torch::Tensor>& y) {
      std::vector<torch::Tensor> dy(2 + P);
      torch::AutoGradMode enable(true);
      torch::Tensor z = y[0].detach().requires_grad_(true);
      torch::Tensor f = call->stepper.eval(t, z);
      std::vector<torch::Tensor> inputs{z};
      inputs.insert(inputs.end(), params.begin(), params.end());
      // An f with no graph (a constant field, or one that reads neither z nor a parameter) has a
      // zero vector-Jacobian product.
      std::vector<torch::Tensor> vjp(inputs.size());
      if (f.requires_grad()) {
        detail::check_no_foreign_leaf({f}, inputs, "Gradient::Adjoint");
        vjp = torch::autograd::grad({f}, inputs, {y[1].to(f.scalar_type())},
                                    /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
      }
      dy[0] = f.detach();
      dy[1] = vjp[0].defined() ? vjp[0].neg() : torch::zeros_like(y[1]);
      for (std::size_t i = 0; i < P; ++i) {
        if (vjp[1 + i].defined()) used[i] = true;
        dy[2 + i] = vjp[1 + i].defined() ? vjp[1 + i].neg() : torch::zeros_like(y[2 + i]);
      }
      return dy;
    };

    std::vector<torch::Tensor> y(2 + P);
    y[0] = zN.detach();
    y[1] = grads[0];
    for (std::size_t i = 0; i < P; ++i) y[2 + i] = torch::zeros_like(params[i]);
    if (call->adaptive) {
      // Solve the augmented system backwards with its own step control and the same tolerances,
      // as torchdiffeq's odeint_adjoint does.
      AdaptiveCarry carry;
      carry.t_start = grid.t1;
      std::vector<torch::Tensor> k;
      bool have_k = false;
      y = adaptive_integrate(call->stepper.tableau(), augmented, y, grid.t1, grid.t0,
                             call->adaptive->control, carry, nullptr, k, have_k);
    } else {
      for (int64_t n = grid.steps; n > 0; --n) {
        // Step from t_n back to t_{n-1}: the same tableau with step -h.
        y = rk_step(call->stepper.tableau(), augmented, grid.time(n), -grid.h(n - 1), y);
        if (check) {
          TORCH_CHECK(torch::isfinite(y[1]).all().item<bool>(),
                      "anode: non-finite adjoint (NaN or Inf) in the reverse solve at step ", n,
                      " of ", grid.steps, " (t = ", grid.time(n - 1), ")");
        }
      }
    }
    if (ctx->needs_input_grad(0)) out[0] = y[1];
    for (std::size_t i = 0; i < P; ++i) {
      if (ctx->needs_input_grad(1 + i) && used[i]) out[1 + i] = y[2 + i];
    }
    return out;
  }
};

}  // namespace anode
