#pragma once
// Options of an ODE block: which Runge-Kutta method, how many steps over which interval, and how
// the solve is differentiated.

#include <anode/method.hpp>
#include <anode/tableau.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace anode {

class MemoryPlan;  // anode/memory_plan.hpp

/// Options for `ODEBlock` and `odeint`.
///
/// Example:
/// ```
/// auto opts = anode::ODEBlockOptions().method(anode::Method::RK2).steps(4);
/// anode::ODEBlock<MyRHSImpl> block(MyRHS(64), opts);
/// ```
struct ODEBlockOptions {
  /// The Runge-Kutta method of every step.
  TORCH_ARG(Method, method) = Method::Euler;
  /// Number of fixed steps N_t over [t0, t1] (over each output interval of a trajectory); must be
  /// >= 1. Fixed-step methods only.
  TORCH_ARG(int64_t, steps) = 1;
  /// Fixed-step methods: when > 0, each interval is divided into the fewest equal steps no longer
  /// than this (overrides `steps`). 0: unused.
  TORCH_ARG(double, step_size) = 0.0;
  /// Adaptive methods: relative tolerance of the local error estimate.
  TORCH_ARG(double, rtol) = 1e-7;
  /// Adaptive methods: absolute tolerance of the local error estimate.
  TORCH_ARG(double, atol) = 1e-9;
  /// Adaptive methods: the most trial steps (accepted + rejected) over the whole solve.
  TORCH_ARG(int64_t, max_steps) = 100000;
  /// Adaptive methods: the first step's size; 0 chooses it (Hairer's starting-step heuristic).
  TORCH_ARG(double, first_step) = 0.0;
  /// Start of the integration interval.
  TORCH_ARG(double, t0) = 0.0;
  /// End of the integration interval; must differ from t0 (t1 < t0 integrates backwards).
  TORCH_ARG(double, t1) = 1.0;
  /// How the solve is differentiated; `Anode` (exact, checkpointed) by default.
  TORCH_ARG(Gradient, gradient) = Gradient::Anode;
  /// `Gradient::Anode` only: the number of intermediate states kept inside a block (besides its
  /// input). 0, or >= steps, keeps the whole block trajectory during its backward (the paper's
  /// scheme); 1 <= k < steps uses the binomial (Revolve) schedule, recomputing steps to fit k.
  TORCH_ARG(int64_t, checkpoints) = 0;
  /// `Gradient::Anode` with 1 <= k < steps checkpoints only: where a block's k checkpoints come
  /// from. false (default): the block's backward rebuilds them from the block input with one
  /// extra forward sweep, so only the block input outlives the forward pass and peak memory is
  /// O(L) + O(k) states for L blocks. true: the forward pass stores them as it goes, saving that
  /// sweep (about N_t steps per block) at O(L * k) states, since every block's checkpoints then
  /// live until its backward.
  TORCH_ARG(bool, keep_forward_checkpoints) = false;
  /// `Gradient::Anode` only: when > 0, a byte budget for one block's backward, from which the
  /// number of checkpoints is chosen given the state's size (overrides `checkpoints`).
  TORCH_ARG(int64_t, memory_budget) = 0;
  /// Raise an error naming the step when a NaN or Inf appears in the state (costs a device sync
  /// per step, so it is off by default).
  TORCH_ARG(bool, check_finite) = false;
  /// `Gradient::Anode`: replay the random numbers the right-hand side drew in the forward pass when
  /// it is recomputed (dropout masks), as torch.utils.checkpoint's `preserve_rng_state`. Turn it
  /// off for a right-hand side that draws no random numbers to skip saving generator states; a
  /// right-hand side that does draw then fails the recompute check with a clear error.
  TORCH_ARG(bool, preserve_rng_state) = true;
  /// The generators the right-hand side draws from, replayed when it is recomputed. Empty (the
  /// default): the default CPU generator and the default generator of the state's device. Name
  /// them when the right-hand side draws from its own `torch::Generator`, which is also the way to
  /// keep other threads that draw from the default generator out of the replay.
  TORCH_ARG(std::vector<at::Generator>, generators) = {};
  /// `Gradient::Anode`: check in backward that the recomputation reproduced the forward pass
  /// (the block output, bit for bit, and the generators' states after it) and raise an error that
  /// says why if it did not, instead of returning the gradient of a different computation. It
  /// costs one reduction over the block output in forward; turn it off only for a right-hand side
  /// whose kernels are nondeterministic (e.g. atomics on GPU), whose recompute cannot be bitwise.
  TORCH_ARG(bool, verify_recompute) = true;
  /// `Gradient::Anode` with the whole-block recompute (checkpoints 0): the forward pass of a block
  /// keeps its graph until the next Anode block (or output interval) of the same thread starts its
  /// forward pass, or until its own backward uses it. The block differentiated first, typically
  /// the last block of a network or the last interval of an `odeint` solve, then needs no
  /// recompute: a lone solve costs what Backprop costs, and a network of L blocks saves 1/L of the
  /// recomputation. The gradient is Backprop's, bit for bit, either way. Memory stays O(L) block
  /// inputs + one block's graph, but that graph now also lives at the end of the forward pass
  /// (with whatever the layers after the block keep), not only during backward. With an adaptive
  /// method only an interval that starts without a carried first stage (the first of a solve) can
  /// keep its graph. Off by default.
  TORCH_ARG(bool, keep_latest_graph) = false;
  /// `Gradient::Anode`: one byte budget for a whole training step, shared by every block whose
  /// options hold the same plan, which then decides per block what `checkpoints`,
  /// `keep_forward_checkpoints`, `memory_budget` and `keep_latest_graph` would (so setting any of
  /// them too is an error). See anode/memory_plan.hpp. Default: none.
  TORCH_ARG(std::shared_ptr<MemoryPlan>, memory_plan) = nullptr;

 public:
  /// A user's explicit Butcher tableau (fixed or embedded), used instead of `method`'s. It is
  /// validated here, once: row sums equal c, weights sum to 1, and the order conditions of the
  /// claimed order(s) hold; an error names what fails.
  ODEBlockOptions& tableau(const ButcherTableau& t) {
    t.validate();
    tableau_ = std::make_shared<const ButcherTableau>(t);
    return *this;
  }
  /// The user's tableau, or null (then `method` decides).
  const std::shared_ptr<const ButcherTableau>& tableau() const { return tableau_; }
  /// The tableau the solve uses: the user's, or the preset of `method`.
  const ButcherTableau& effective_tableau() const {
    return tableau_ ? *tableau_ : anode::tableau(method_);
  }
  /// Whether the solve chooses its own steps (an embedded tableau).
  bool adaptive() const { return effective_tableau().adaptive(); }

 private:
  std::shared_ptr<const ButcherTableau> tableau_;

 public:
  /// These options with gradient `g`: when `g` is not `Gradient::Anode`, the options only Anode
  /// accepts (checkpoints, keep_forward_checkpoints, memory_budget, keep_latest_graph,
  /// generators, memory_plan) are reset to their defaults, so that the result validates. Used
  /// wherever the same solve is run under another gradient mode (a Backprop reference, a
  /// gradient-gap study).
  ODEBlockOptions with_gradient(Gradient g) const {
    ODEBlockOptions o = *this;
    o.gradient(g);
    if (g != Gradient::Anode) {
      const ODEBlockOptions d;
      o.checkpoints(d.checkpoints())
          .keep_forward_checkpoints(d.keep_forward_checkpoints())
          .memory_budget(d.memory_budget())
          .keep_latest_graph(d.keep_latest_graph())
          .generators(d.generators())
          .memory_plan(d.memory_plan());
    }
    return o;
  }

  /// Throws a `c10::Error` naming the offending option and its value.
  void validate() const {
    TORCH_CHECK(steps_ >= 1, "anode: ODEBlockOptions::steps must be >= 1, got ", steps_);
    TORCH_CHECK(std::isfinite(t0_), "anode: ODEBlockOptions::t0 must be finite, got ", t0_);
    TORCH_CHECK(std::isfinite(t1_), "anode: ODEBlockOptions::t1 must be finite, got ", t1_);
    TORCH_CHECK(std::isfinite(t1_ - t0_), "anode: ODEBlockOptions::t1 - t0 overflows (t0 = ", t0_,
                ", t1 = ", t1_, ")");
    TORCH_CHECK(t1_ != t0_, "anode: ODEBlockOptions::t1 must differ from t0, both are ", t0_);
    TORCH_CHECK(find_method(method_) != nullptr,
                "anode: ODEBlockOptions::method has an invalid value ", static_cast<int>(method_));
    TORCH_CHECK(std::isfinite(step_size_) && step_size_ >= 0.0,
                "anode: ODEBlockOptions::step_size must be finite and >= 0 (0: use steps), got ",
                step_size_);
    TORCH_CHECK(std::isfinite(rtol_) && rtol_ > 0.0,
                "anode: ODEBlockOptions::rtol must be finite and > 0, got ", rtol_);
    TORCH_CHECK(std::isfinite(atol_) && atol_ > 0.0,
                "anode: ODEBlockOptions::atol must be finite and > 0, got ", atol_);
    TORCH_CHECK(max_steps_ >= 1, "anode: ODEBlockOptions::max_steps must be >= 1, got ",
                max_steps_);
    TORCH_CHECK(std::isfinite(first_step_) && first_step_ >= 0.0,
                "anode: ODEBlockOptions::first_step must be finite and >= 0 (0: automatic), got ",
                first_step_);
    TORCH_CHECK(!(adaptive() && keep_forward_checkpoints_),
                "anode: ODEBlockOptions::keep_forward_checkpoints(true) is not supported with an "
                "adaptive method (",
                effective_tableau().name,
                ") yet: its checkpoints are rebuilt in backward; set it to false");
    TORCH_CHECK(!(adaptive() && memory_budget_ > 0), "anode: ODEBlockOptions::memory_budget(",
                memory_budget_, ") is not supported with an adaptive method (",
                effective_tableau().name, ") yet; set checkpoints(k) instead");
    TORCH_CHECK(gradient_ == Gradient::Backprop || gradient_ == Gradient::Anode ||
                    gradient_ == Gradient::Adjoint,
                "anode: ODEBlockOptions::gradient has an invalid value ",
                static_cast<int>(gradient_));
    TORCH_CHECK(checkpoints_ >= 0, "anode: ODEBlockOptions::checkpoints must be >= 0, got ",
                checkpoints_);
    TORCH_CHECK(memory_budget_ >= 0,
                "anode: ODEBlockOptions::memory_budget must be >= 0 bytes, got ", memory_budget_);
    // Options that shape Gradient::Anode's checkpointing would be silently ignored by the others.
    if (gradient_ != Gradient::Anode) {
      TORCH_CHECK(checkpoints_ == 0, "anode: ODEBlockOptions::checkpoints(", checkpoints_,
                  ") applies to Gradient::Anode only, but gradient is ", to_string(gradient_),
                  "; set checkpoints(0) or gradient(anode::Gradient::Anode)");
      TORCH_CHECK(memory_budget_ == 0, "anode: ODEBlockOptions::memory_budget(", memory_budget_,
                  ") applies to Gradient::Anode only, but gradient is ", to_string(gradient_),
                  "; set memory_budget(0) or gradient(anode::Gradient::Anode)");
      TORCH_CHECK(!keep_forward_checkpoints_,
                  "anode: ODEBlockOptions::keep_forward_checkpoints(true) applies to "
                  "Gradient::Anode only, but gradient is ",
                  to_string(gradient_), "; set keep_forward_checkpoints(false)");
    }
    if (keep_latest_graph_) {
      TORCH_CHECK(gradient_ == Gradient::Anode,
                  "anode: ODEBlockOptions::keep_latest_graph(true) applies to Gradient::Anode "
                  "only, but gradient is ",
                  to_string(gradient_), "; set keep_latest_graph(false)");
      TORCH_CHECK(checkpoints_ == 0 && memory_budget_ == 0,
                  "anode: ODEBlockOptions::keep_latest_graph(true) keeps a whole block's graph, "
                  "which binomial checkpointing (checkpoints ",
                  checkpoints_, ", memory_budget ", memory_budget_,
                  ") exists to avoid; use one or the other");
    }
    if (memory_plan_) {
      TORCH_CHECK(gradient_ == Gradient::Anode,
                  "anode: ODEBlockOptions::memory_plan applies to Gradient::Anode only, but "
                  "gradient is ",
                  to_string(gradient_),
                  "; set memory_plan(nullptr) or gradient(anode::Gradient::Anode)");
      const auto planned = [](bool set, const std::string& what) {
        TORCH_CHECK(!set, "anode: ODEBlockOptions::memory_plan decides what ", what,
                    " would, block by block; set one or the other");
      };
      planned(checkpoints_ != 0, "checkpoints(" + std::to_string(checkpoints_) + ")");
      planned(memory_budget_ != 0, "memory_budget(" + std::to_string(memory_budget_) + ")");
      planned(keep_forward_checkpoints_, "keep_forward_checkpoints(true)");
      planned(keep_latest_graph_, "keep_latest_graph(true)");
    }
    TORCH_CHECK(!keep_forward_checkpoints_ || checkpoints_ > 0 || memory_budget_ > 0,
                "anode: ODEBlockOptions::keep_forward_checkpoints(true) needs binomial "
                "checkpointing (checkpoints(k) with 1 <= k < steps, or a memory_budget), but "
                "checkpoints is 0: the whole block trajectory is recomputed, nothing is kept "
                "from forward");
    // Options a configuration would silently ignore raise, as `checkpoints` does: a user who sets
    // them expects them to act. The step count belongs to fixed-step methods, the tolerances to
    // adaptive ones, the replayed generators to Anode's recompute (Backprop replays nothing, the
    // adjoint evaluates f at other states than the forward's, where no replay can be right).
    if (adaptive()) {
      TORCH_CHECK(steps_ == 1, "anode: ODEBlockOptions::steps(", steps_,
                  ") applies to fixed-step methods, but ", effective_tableau().name,
                  " is adaptive and chooses its own steps; set steps(1) (the default) and control "
                  "the accuracy with rtol/atol, or choose a fixed-step method");
      TORCH_CHECK(step_size_ == 0.0, "anode: ODEBlockOptions::step_size(", step_size_,
                  ") applies to fixed-step methods, but ", effective_tableau().name,
                  " is adaptive and chooses its own steps; set step_size(0) (use first_step for "
                  "the size of its first trial step)");
    } else {
      const ODEBlockOptions d;
      const auto ignored = [&](bool changed, const char* name, double value) {
        TORCH_CHECK(!changed, "anode: ODEBlockOptions::", name, "(", value,
                    ") applies to adaptive methods, but ", effective_tableau().name,
                    " is a fixed-step method; leave it at its default or choose an adaptive "
                    "method (Bosh3, Dopri5, Tsit5)");
      };
      ignored(rtol_ != d.rtol_, "rtol", rtol_);
      ignored(atol_ != d.atol_, "atol", atol_);
      ignored(max_steps_ != d.max_steps_, "max_steps", static_cast<double>(max_steps_));
      ignored(first_step_ != d.first_step_, "first_step", first_step_);
    }
    TORCH_CHECK(generators_.empty() || gradient_ == Gradient::Anode,
                "anode: ODEBlockOptions::generators (", generators_.size(),
                ") applies to Gradient::Anode only, whose recompute replays them, but gradient "
                "is ",
                to_string(gradient_), "; clear them (generators({})) or use Gradient::Anode");
    for (std::size_t i = 0; i < generators_.size(); ++i) {
      TORCH_CHECK(generators_[i].defined(), "anode: ODEBlockOptions::generators[", i,
                  "] is an undefined generator");
    }
  }
};

inline std::ostream& operator<<(std::ostream& os, const ODEBlockOptions& o) {
  os << "method=" << (o.tableau() ? o.tableau()->name : to_string(o.method()));
  if (o.adaptive())
    os << ", rtol=" << o.rtol() << ", atol=" << o.atol();
  else if (o.step_size() > 0)
    os << ", step_size=" << o.step_size();
  else
    os << ", steps=" << o.steps();
  os << ", t0=" << o.t0() << ", t1=" << o.t1() << ", gradient=" << o.gradient();
  if (o.checkpoints() > 0) os << ", checkpoints=" << o.checkpoints();
  if (o.memory_budget() > 0) os << ", memory_budget=" << o.memory_budget();
  if (o.keep_forward_checkpoints()) os << ", keep_forward_checkpoints=true";
  if (o.check_finite()) os << ", check_finite=true";
  if (!o.preserve_rng_state()) os << ", preserve_rng_state=false";
  if (!o.generators().empty()) os << ", generators=" << o.generators().size();
  if (!o.verify_recompute()) os << ", verify_recompute=false";
  if (o.keep_latest_graph()) os << ", keep_latest_graph=true";
  if (o.memory_plan()) os << ", memory_plan=shared";
  return os;
}

}  // namespace anode
