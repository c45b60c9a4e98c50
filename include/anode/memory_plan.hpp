#pragma once
// anode::MemoryPlan: one byte budget for a whole training step, planned across every
// Gradient::Anode call (ODE block, or output interval of a trajectory) whose options hold it.
//
//   auto plan = std::make_shared<anode::MemoryPlan>(512ll << 20);   // bytes
//   for (auto& b : anode::ode_blocks(*model)) b->options.memory_plan(plan);
//   // ... the training loop, unchanged; std::cout << *plan shows what was decided.
//
// What the budget means: the peak bytes one training step allocates, from the start of the
// network's forward pass to the end of its backward, above what was live when the step started,
// on anode's memory meter for the blocks' device (the counting CPU allocator: call
// anode::memory::install_cpu_meter() first thing in main(); on CUDA the counting CUDA meter, the
// tensors' bytes counted from the caching allocator's trace: anode::memory::install_cuda_meter()).
// It covers the whole step, the layers around the ODE blocks, the loss
// and the gradients included: the plan measures what it does not control and plans the blocks
// around it.
//
// How it works (the model and why its search is optimal: gradient/plan_solver.hpp):
// 1. Calibration. The first step (and the first after the input's shape, dtype or device, a
//    block's training mode, its solver, or the set of calls changes) runs every call in its
//    cheapest form (binomial checkpointing with one checkpoint, rebuilt; the whole-block
//    recompute for one-step calls), measuring the memory profile of the step around the calls
//    (the usage where each call's forward and backward start, the peaks between them), each
//    call's step cost (one step's graph and backward, measured as memory_budget does) and the
//    time of its steps. A budget the calibration step does not fit cannot fit any plan.
// 2. Planning. From the measurements, the choice per call (keep its graph, recompute it whole,
//    binomial checkpoints rebuilt or kept) with the least recompute time whose predicted peak is
//    within the budget, for the usage measured at the step's first call. Re-solved when that
//    usage changes; a budget too small for any plan raises in the first call's forward pass,
//    naming the bytes the cheapest plan needs, before anything is done.
// 3. Checking. Each planned step's peak is measured; a step above its prediction (the model is
//    conservative, so this is not expected) raises the safety margin of the next plans by the
//    excess, and `operator<<` reports it. What a step measures replaces the model's estimates: a
//    kept graph's size and the bytes its forward and backward allocate (bounded from above on
//    the graph a whole recompute rebuilt, until the graph itself is kept), the whole recompute's
//    backward bytes. Calls of one kind share what one of them measured.
//
// The gradient is Backprop's whatever is decided: a kept graph is Backprop's graph, built and
// differentiated by the autograd engine as Backprop's is (gradient/planned_keep.hpp: so a step
// that keeps every graph is Backprop's step, in time and in bytes), and every recompute obeys the
// exactness contract (replayed random numbers and buffers, verified output).
//
// On CUDA, a calibration step synchronises the device around each call's forward pass, to time its
// steps (kernels run asynchronously: the host's clock alone would time their launches); planned
// steps add no synchronisation.
//
// Limits, said where they apply: one device per plan; CUDA needs LibTorch 2.1 or later (the
// allocator's trace, which the CUDA meter counts from); adaptive calls are
// recomputed whole (the only choice an adaptive solve supports under a plan: its steps are known
// only once solved); at most 32 plans in one process.

#include <anode/detail/meter.hpp>
#include <anode/gradient/budget.hpp>
#include <anode/gradient/plan_solver.hpp>
#include <anode/gradient/schedule.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace anode {

class MemoryPlan;

namespace detail {

/// What identifies a call within a step: a plan's measurements hold while these stay the same.
struct PlanCallKey {
  std::vector<int64_t> sizes;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  bool training = false;
  bool adaptive = false;
  int64_t steps = 0;
  std::string method;
  std::size_t parameters = 0;

  bool operator==(const PlanCallKey& o) const {
    return sizes == o.sizes && dtype == o.dtype && device == o.device && training == o.training &&
           adaptive == o.adaptive && steps == o.steps && method == o.method &&
           parameters == o.parameters;
  }
  bool operator!=(const PlanCallKey& o) const { return !(*this == o); }
};

/// The key of a call from its input and solver.
inline PlanCallKey plan_call_key(const at::Tensor& z0, bool training, bool adaptive, int64_t steps,
                                 std::string method, std::size_t parameters) {
  PlanCallKey key;
  key.sizes = z0.sizes().vec();
  key.dtype = z0.scalar_type();
  key.device = z0.device();
  key.training = training;
  key.adaptive = adaptive;
  key.steps = adaptive ? 0 : steps;
  key.method = std::move(method);
  key.parameters = parameters;
  return key;
}

/// What a call's forward pass is told, and what the plan measures of it (absolute meter bytes).
/// The plan keeps the step's tickets; the call holds its own through a PlanLease.
struct PlanTicket {
  MemoryPlan* plan = nullptr;
  std::weak_ptr<int> alive;  // the plan's lifetime token
  int64_t step = 0;          // the plan's step this call belongs to
  std::size_t index = 0;     // its position among the step's calls
  PlanCallKey key;
  plan::Decision decision;
  bool calibrating = false;  // its step cost is measured, its decision is the cheapest
  bool backward_started = false;
  bool done = false;
  StepCost cost;  // calibration: one step's measured cost
  double seconds_per_step = 0;
  bool timed = false;  // its forward is timed (on CUDA: in calibration only, synchronised)
  std::chrono::steady_clock::time_point forward_started;
  int64_t fwd_usage = 0;       // when its forward started
  int64_t fwd_peak = 0;        // during its forward
  int64_t fwd_end = 0;         // when its forward ended
  int64_t after_fwd_peak = 0;  // from its forward's end to the next boundary
  int64_t bwd_usage = 0;       // when its backward started
  int64_t bwd_peak = 0;        // during its backward
  int64_t rebuild_peak = 0;    // the whole recompute: during the rebuild of its graph
  int64_t rebuilt_usage = 0;   // when its graph was rebuilt
  int64_t gradient_peak = 0;   // during the gradient through it
  int64_t after_bwd_peak = 0;  // from its backward's end to the next boundary
};

/// A call's hold on its ticket, owned by what owns the call's graph (its autograd node, or a kept
/// graph's marks): a call whose graph is dropped without a backward releases its ticket, and
/// the plan counts it as done.
struct PlanLease {
  std::shared_ptr<PlanTicket> ticket;
  ~PlanLease();
};

}  // namespace detail

/// A byte budget for one training step, planned across every Gradient::Anode call whose options
/// hold it (`ODEBlockOptions::memory_plan`). See the top of this file.
class MemoryPlan {
 public:
  explicit MemoryPlan(int64_t budget_bytes) : budget_(budget_bytes) {
    TORCH_CHECK(budget_bytes > 0, "anode::MemoryPlan: the budget must be > 0 bytes, got ",
                budget_bytes);
    slot_ = memory::detail::acquire_trough_slot();
    TORCH_CHECK(slot_ >= 0, "anode::MemoryPlan: at most ", memory::detail::kTroughSlots,
                " memory plans can exist at once; share one plan between the blocks of a model");
  }
  ~MemoryPlan() {
    // The calls of an unfinished step (a graph still alive, or dropped with the plan) must not
    // report to a plan being destroyed.
    alive_.reset();
    step_.tickets.clear();
    memory::detail::release_trough_slot(slot_);
  }
  MemoryPlan(const MemoryPlan&) = delete;
  MemoryPlan& operator=(const MemoryPlan&) = delete;

  /// The budget, in bytes.
  int64_t budget_bytes() const { return budget_; }

  /// Steps begun so far, and how many of them calibrated.
  int64_t steps() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return steps_;
  }
  int64_t calibrations() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return calibrations_;
  }
  /// The measured peak of the last complete step, above its baseline (0 before one completed).
  int64_t last_step_peak() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_peak_;
  }
  /// The model's prediction for the last complete step (0 when it calibrated).
  int64_t last_predicted_peak() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_predicted_;
  }
  /// Steps whose measured peak exceeded the budget (a model error; each raised the margin).
  int64_t overshoots() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return overshoots_;
  }
  /// The least budget any plan of the last kind of step measured needs: its calibration step's
  /// peak, or the cheapest plan's predicted peak if higher (0 before a step completed).
  int64_t cheapest_peak_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (last_profile_ == nullptr) return 0;
    const int64_t usage = last_profile_->solved_for >= 0 ? last_profile_->solved_for
                                                         : last_profile_->calibration_usage;
    return solution_for(*last_profile_, usage).cheapest_peak;
  }
  /// The decisions of the last step, in forward order (the cheapest ones while calibrating).
  std::vector<plan::Decision> decisions() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_decisions_;
  }

  friend std::ostream& operator<<(std::ostream& os, const MemoryPlan& p);

  // ---- called by Gradient::Anode's forward and backward passes (gradient/checkpoint.hpp) ----

  /// A call's forward pass starts: its decision for this step. Raises, before anything is done,
  /// when the budget is too small for any plan.
  std::shared_ptr<detail::PlanTicket> begin_forward(const detail::PlanCallKey& key);
  /// Calibration: the call's step cost was measured; its own forward starts now.
  void measured(detail::PlanTicket& t, const detail::StepCost& cost);
  void end_forward(detail::PlanTicket& t);
  void begin_backward(detail::PlanTicket& t);
  /// The whole recompute rebuilt the call's graph; the gradient through it starts now.
  void rebuilt(detail::PlanTicket& t);
  void end_backward(detail::PlanTicket& t);
  /// The call's graph was dropped without its backward.
  void release(detail::PlanTicket& t);

 private:
  // The measurements of one kind of step (its calls' keys) and the plan solved from them.
  struct Profile {
    std::vector<detail::PlanCallKey> keys;
    std::vector<plan::CallProfile> calls;  // usage relative to the first call's forward start
    std::vector<detail::StepCost> costs;
    std::vector<int64_t> fwd_growth;  // calibration: bytes a call's forward left live
    std::vector<int64_t> kept_graph;  // bytes of a kept graph, 0 until measured
    std::vector<int64_t> kept_fwd;    // what its forward allocated above its start
    std::vector<int64_t> kept_bwd;    // and its backward above its start
    std::vector<int> kept_tier;       // where those come from: 0 none, 1 rebuilt, 2 kept
    std::vector<int64_t> whole;       // measured backward bytes of the whole recompute, 0 until
    // measured backward bytes of binomial checkpointing rebuilt, per call and checkpoint count
    // (0 until measured)
    std::vector<std::vector<int64_t>> binomial;
    // per call, what the calibration measured of its cheapest form
    std::vector<int64_t> cal_forward, cal_transient;
    std::vector<double> tau;        // seconds per graph-free step
    bool reverse_order = true;      // the backward passes ran in the reverse order
    int64_t solved_for = -1;        // the usage at the first call the solution is for
    int64_t margin = 0;             // added to every prediction after an overshoot
    int64_t calibration_usage = 0;  // the calibration step's usage at its first call
    int64_t calibration_peak = 0;   // and its measured peak
    plan::Solution solution;
  };
  enum class Segment { None, AfterForward, Forward, Backward, Gradient, AfterBackward };
  // The step in progress.
  struct Step {
    int64_t id = 0;
    bool open = false;
    int64_t baseline = 0;     // the meter's low point since the previous step ended
    int64_t first_usage = 0;  // absolute bytes when the first call's forward started
    bool calibrating = false;
    bool off_plan = false;       // a call did not match the profile, or had no backward
    bool cheapest_only = false;  // no plan was proven within the budget: every call cheapest
    Profile* profile = nullptr;
    std::vector<std::shared_ptr<detail::PlanTicket>> tickets;
    std::vector<std::size_t> backward_order;
    std::size_t finished = 0;
    int64_t peak = 0;  // absolute, over the segments since the first call started
    Segment segment = Segment::None;
    std::size_t segment_owner = 0;
  };

  int64_t now() const { return memory::detail::meter_current_bytes(meter_); }
  // Ends the current segment at a boundary: its peak goes to its owner, and `next` starts.
  void boundary(Segment next, std::size_t owner) {
    const int64_t p = memory::detail::take_meter_peak(meter_);
    step_.peak = std::max(step_.peak, p);
    if (step_.segment != Segment::None && step_.segment_owner < step_.tickets.size()) {
      auto& t = *step_.tickets[step_.segment_owner];
      switch (step_.segment) {
        case Segment::AfterForward:
          t.after_fwd_peak = std::max(t.after_fwd_peak, p);
          break;
        case Segment::Forward:
          t.fwd_peak = std::max(t.fwd_peak, p);
          break;
        case Segment::Backward:
          t.bwd_peak = std::max(t.bwd_peak, p);
          break;
        case Segment::Gradient:
          t.bwd_peak = std::max(t.bwd_peak, p);
          t.gradient_peak = std::max(t.gradient_peak, p);
          break;
        case Segment::AfterBackward:
          t.after_bwd_peak = std::max(t.after_bwd_peak, p);
          break;
        case Segment::None:
          break;
      }
    }
    step_.segment = next;
    step_.segment_owner = owner;
  }
  static plan::Decision cheapest(const detail::StepCost& c, int64_t steps, bool adaptive);
  std::vector<plan::Option> options_for(const Profile& p, std::size_t j) const;
  plan::Solution solution_for(const Profile& p, int64_t first_usage) const;
  void solve(Profile& p, int64_t first_usage);
  void finish_step();
  void check_device(const c10::Device& d);

  const int64_t budget_;
  int slot_ = -1;
  mutable std::mutex mutex_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
  int meter_ = memory::detail::kCpuMeter;  // the meter of device_: kCpuMeter or a CUDA index
  bool device_set_ = false;
  std::vector<std::unique_ptr<Profile>> profiles_;
  Profile* last_profile_ = nullptr;
  Step step_;
  int64_t steps_ = 0, calibrations_ = 0;
  int64_t last_peak_ = 0, last_predicted_ = 0, overshoots_ = 0;
  std::vector<plan::Decision> last_decisions_;
};

// ------------------------------------------------------------------------------------------------

namespace detail {
inline PlanLease::~PlanLease() {
  if (ticket && ticket->plan != nullptr && !ticket->done && !ticket->alive.expired())
    ticket->plan->release(*ticket);
}
}  // namespace detail

inline void MemoryPlan::check_device(const c10::Device& d) {
  if (!device_set_) {
    TORCH_CHECK(d.is_cpu() || d.is_cuda(), "anode::MemoryPlan: the blocks' state is on ", d,
                "; memory plans measure CPU and CUDA memory only");
    TORCH_CHECK(!d.is_cpu() || memory::detail::cpu_meter_installed(),
                "anode::MemoryPlan: the budget is measured with anode's CPU memory meter, which "
                "is not installed. Call anode::memory::install_cpu_meter() (#include "
                "<anode/memory.hpp>) first thing in main(), before tensors are allocated");
    TORCH_CHECK(!d.is_cuda() || memory::detail::cuda_meter_installed(),
                "anode::MemoryPlan: the blocks' state is on ", d,
                ", and the budget is measured there with anode's CUDA memory meter, which is not "
                "installed. Call anode::memory::install_cuda_meter() (#include "
                "<anode/memory.hpp>) first thing in main(), before the model is moved to the "
                "device");
    TORCH_CHECK(!d.is_cuda() || (d.has_index() && memory::detail::cuda_meter_counts(d.index())),
                "anode::MemoryPlan: the blocks' state is on ", d,
                "; the CUDA meter counts devices 0 to ", memory::detail::kMaxCudaDevices - 1);
    device_ = d;
    meter_ = d.is_cpu() ? memory::detail::kCpuMeter : static_cast<int>(d.index());
    device_set_ = true;
  }
  TORCH_CHECK(d == device_, "anode::MemoryPlan: one plan is shared by blocks on ", device_,
              " and on ", d,
              "; a plan budgets one device's memory: give the blocks on each device their own "
              "plan");
}

inline plan::Decision MemoryPlan::cheapest(const detail::StepCost& c, int64_t steps,
                                           bool adaptive) {
  if (adaptive || steps < 2) return {plan::Choice::Whole, 0};
  // The form with the least backward bytes: one checkpoint, rebuilt (its forward keeps nothing),
  // unless the whole block is no larger.
  if (detail::backward_bytes(c, steps, 0) <= detail::backward_bytes(c, steps, 1))
    return {plan::Choice::Whole, 0};
  return {plan::Choice::Binomial, 1};
}

inline std::vector<plan::Option> MemoryPlan::options_for(const Profile& p, std::size_t j) const {
  const auto& key = p.keys[j];
  const auto& c = p.costs[j];
  const int64_t n = key.steps;
  const int64_t f = p.cal_forward[j];  // the graph-free forward's own transient, measured
  const double tau = p.tau[j];
  std::vector<plan::Option> out;
  if (key.adaptive) {
    // Its steps are known once solved: recomputed whole, at the transient it was measured at.
    out.push_back({{plan::Choice::Whole, 0}, 0, f, p.cal_transient[j] + p.margin, 0.0});
    return out;
  }
  // The model's error for this call: what it gives for the calibrated form, against what that
  // form was measured to take (never below 0: the model is only ever made more conservative).
  const plan::Decision cal = cheapest(c, n, false);
  const int64_t err =
      std::max<int64_t>(0, p.cal_transient[j] - detail::backward_bytes(c, n, cal.checkpoints)) +
      p.margin;
  // A kept graph (Backprop's, run by the engine: gradient/planned_keep.hpp): measured once kept,
  // or bounded on one a whole recompute rebuilt, else estimated from one measured step. The
  // estimate: N steps' graphs (each step's output counted, which a chain may free), less what the
  // cheapest form holds too (the output, the world's snapshot); a forward peaking at N-1 steps'
  // graphs plus one step's forward peak; and a backward whose peak is at its first (the last)
  // step: the whole graph plus one step's backward as measured (its temporaries, the gradients of
  // its input and parameters), less the incoming gradient the measurement allocated (ones_like:
  // in the step the gradient reaching the block is already live when its backward starts). A
  // later step has freed at least one step's graph (its saved tensors and its output) and holds
  // the parameters' accumulated gradients beside its own contributions: only where those exceed
  // the freed graph does that step peak higher, by the difference.
  const int64_t params = std::max<int64_t>(0, (c.accumulators - c.state) / 2);
  int64_t graph = std::max<int64_t>(0, n * c.graph - p.fwd_growth[j]);
  int64_t kept_forward = (n - 1) * c.graph + c.forward_peak;
  const int64_t step_backward = std::max<int64_t>(0, c.peak - c.graph - c.incoming);
  const int64_t later_step = n > 1 ? std::max<int64_t>(0, params - (c.graph - c.incoming)) : 0;
  int64_t kept_backward = graph + step_backward + later_step + p.margin;
  if (p.kept_tier[j] > 0) {
    graph = p.kept_graph[j];
    kept_forward = p.kept_fwd[j];
    kept_backward = graph + p.kept_bwd[j] + p.margin;
  }
  out.push_back({{plan::Choice::Keep, 0}, graph, kept_forward, kept_backward, 0.0});
  // The whole recompute: measured once used, else modelled.
  const int64_t whole =
      p.whole[j] > 0 ? p.whole[j] + p.margin : detail::backward_bytes(c, n, 0) + err;
  out.push_back({{plan::Choice::Whole, 0}, 0, f, whole, tau * static_cast<double>(n)});
  // Binomial checkpoints: every k up to 16, then a geometric set, below the step count.
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < n && k <= 16; ++k) ks.push_back(k);
  for (double k = 24; k < static_cast<double>(n); k *= 1.5) ks.push_back(static_cast<int64_t>(k));
  // What a binomial schedule's backward was measured to take bounds the others': k checkpoints
  // need at most k0's measured bytes plus a slot per checkpoint more (the rest of a binomial
  // backward, one step's graph and gradients beside the current state and the accumulators, is
  // the same for every k), and no more than k0's with fewer. The model counts every checkpoint
  // live at the backward's peak; a measured schedule shows where that overestimates.
  const auto& measured = p.binomial[j];
  const auto measured_bound = [&](int64_t k) {
    int64_t bound = std::numeric_limits<int64_t>::max();
    for (std::size_t k0 = 1; k0 < measured.size(); ++k0) {
      if (measured[k0] <= 0) continue;
      bound = std::min(
          bound,
          measured[k0] + std::max<int64_t>(0, k - static_cast<int64_t>(k0)) * c.slot + p.margin);
    }
    return bound;
  };
  for (int64_t k : ks) {
    const int64_t t = std::min(detail::backward_bytes(c, n, k) + err, measured_bound(k));
    // The backward's re-runs: one taped run per step plus the schedule's advances.
    const auto reruns = static_cast<double>(schedule::backward_rhs_steps(n, k));
    const auto sched = schedule::binomial_schedule(n, k);
    int64_t sweep = 0, run = 0;  // the rebuild's advances, up to the last stored checkpoint
    for (const auto& a : sched.forward) {
      if (a.kind == schedule::ActionKind::Advance) run += a.arg;
      if (a.kind == schedule::ActionKind::Store) sweep = run;
    }
    out.push_back(
        {{plan::Choice::Binomial, k}, 0, f, t, tau * (reruns + static_cast<double>(sweep))});
    out.push_back({{plan::Choice::BinomialKept, k}, k * c.slot, k * c.slot + f, t, tau * reruns});
  }
  return out;
}

inline plan::Solution MemoryPlan::solution_for(const Profile& p, int64_t first_usage) const {
  std::vector<plan::CallProfile> calls = p.calls;
  for (std::size_t j = 0; j < calls.size(); ++j) {
    auto& c = calls[j];
    c.fwd += first_usage;
    c.after_fwd += first_usage + p.margin;
    c.bwd += first_usage;
    c.after_bwd += first_usage + p.margin;
    c.options = options_for(p, j);
  }
  plan::Solution sol = plan::solve(calls, budget_, p.reverse_order);
  // The calibration step itself (the cheapest form of every call, plus the measurement of a step
  // in each forward) is a plan the budget must allow, at this step's usage.
  const int64_t calibration = p.calibration_peak - p.calibration_usage + first_usage;
  sol.cheapest_peak = std::max(sol.cheapest_peak, calibration);
  return sol;
}

inline void MemoryPlan::solve(Profile& p, int64_t first_usage) {
  p.solution = solution_for(p, first_usage);
  p.solved_for = first_usage;
}

inline std::shared_ptr<detail::PlanTicket> MemoryPlan::begin_forward(
    const detail::PlanCallKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  check_device(key.device);
  if (!step_.open) {
    // A new step. Its baseline is the least the meter held since the previous step ended (at
    // most what was live when this step started: the plan then errs on the safe side).
    const int64_t first = now();
    const int64_t baseline = std::min(memory::detail::trough_bytes(slot_, meter_), first);
    const int64_t usage = first - baseline;
    Profile* found = nullptr;
    for (auto& pr : profiles_) {
      if (pr->keys.front() == key) found = pr.get();
    }
    if (found != nullptr && found->solved_for != usage) solve(*found, usage);
    // No plan the model can prove within the budget: if the calibration step, every call in its
    // cheapest form, was measured within it, this step runs that way again (the model errs on
    // the safe side, e.g. on a step whose baseline missed state allocated just after the previous
    // step); if not, nothing fits.
    const bool cheapest_only = found != nullptr && !found->solution.feasible;
    TORCH_CHECK(!cheapest_only || found->calibration_peak <= budget_,
                "anode::MemoryPlan: the budget of ", budget_,
                " bytes is too small for this training step: measured, its cheapest plan needs ",
                found ? std::max(found->solution.cheapest_peak, found->calibration_peak) : 0,
                " bytes (every ODE block recomputed with one checkpoint, around the ", usage,
                " bytes the step had allocated when its first ODE block started). Raise the "
                "budget to at least that, or reduce the batch");
    Step s;
    s.id = ++steps_;
    s.open = true;
    s.baseline = baseline;
    s.first_usage = first;
    s.peak = first;
    s.profile = found;
    s.calibrating = found == nullptr;
    s.cheapest_only = cheapest_only;
    if (s.calibrating) ++calibrations_;
    step_ = std::move(s);
    (void)memory::detail::take_meter_peak(meter_);  // the segments of this step start here
  }
  auto t = std::make_shared<detail::PlanTicket>();
  t->plan = this;
  t->alive = alive_;
  t->step = step_.id;
  t->index = step_.tickets.size();
  t->key = key;
  const Profile* p = step_.profile;
  if (!step_.calibrating && !step_.off_plan &&
      (t->index >= p->keys.size() || p->keys[t->index] != key)) {
    // Not the step that was measured (another set of blocks, or a block changed): the rest of
    // it runs cheapest and is measured, and the next step calibrates.
    step_.off_plan = true;
  }
  t->calibrating = step_.calibrating || step_.off_plan;
  t->timed = t->calibrating || meter_ == memory::detail::kCpuMeter;
  if (!t->calibrating) {
    t->decision = step_.cheapest_only ? cheapest(p->costs[t->index], key.steps, key.adaptive)
                                      : p->solution.decisions[t->index];
  }
  step_.tickets.push_back(t);
  boundary(Segment::Forward, t->index);
  t->fwd_usage = now();
  if (t->timed) memory::detail::synchronize_meter_device(meter_);
  t->forward_started = std::chrono::steady_clock::now();
  // The call's handle: the ticket, owned through a lease (the plan's own reference is the step's).
  auto lease = std::make_shared<detail::PlanLease>();
  lease->ticket = t;
  return std::shared_ptr<detail::PlanTicket>(lease, t.get());
}

inline void MemoryPlan::measured(detail::PlanTicket& t, const detail::StepCost& cost) {
  std::lock_guard<std::mutex> lock(mutex_);
  t.cost = cost;
  t.decision = cheapest(cost, t.key.steps, t.key.adaptive);
  if (t.step != step_.id) return;
  // The measurement's own peak counts in the step, not in the call's forward.
  boundary(Segment::Forward, t.index);
  t.fwd_peak = 0;
  if (t.timed) memory::detail::synchronize_meter_device(meter_);
  t.forward_started = std::chrono::steady_clock::now();
}

inline void MemoryPlan::end_forward(detail::PlanTicket& t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (t.step != step_.id) return;
  if (t.timed) {
    memory::detail::synchronize_meter_device(meter_);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t.forward_started).count();
    t.seconds_per_step = t.key.steps > 0 ? s / static_cast<double>(t.key.steps) : s;
  }
  boundary(Segment::AfterForward, t.index);
  t.fwd_end = now();
}

inline void MemoryPlan::begin_backward(detail::PlanTicket& t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (t.step != step_.id || t.done || t.backward_started) return;
  t.backward_started = true;
  boundary(Segment::Backward, t.index);
  t.bwd_usage = now();
  step_.backward_order.push_back(t.index);
}

inline void MemoryPlan::rebuilt(detail::PlanTicket& t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (t.step != step_.id || t.done || !t.backward_started) return;
  boundary(Segment::Gradient, t.index);
  t.rebuild_peak = t.bwd_peak;
  t.rebuilt_usage = now();
}

inline void MemoryPlan::end_backward(detail::PlanTicket& t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (t.step != step_.id || t.done) return;
  boundary(Segment::AfterBackward, t.index);
  t.done = true;
  if (++step_.finished == step_.tickets.size()) finish_step();
}

inline void MemoryPlan::release(detail::PlanTicket& t) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (t.step != step_.id || t.done) return;
  t.done = true;
  step_.off_plan = true;  // a call without a backward: not a training step to learn from
  if (++step_.finished == step_.tickets.size()) finish_step();
}

inline void MemoryPlan::finish_step() {
  boundary(Segment::None, 0);
  Step& s = step_;
  s.open = false;
  const auto& ts = s.tickets;
  // A step none of whose calls reached its backward (an evaluation with autograd on, its graph
  // dropped) is not a training step: nothing to report or learn, and the profile stands.
  if (std::none_of(ts.begin(), ts.end(), [](const auto& t) { return t->backward_started; })) {
    s.profile = nullptr;
    s.tickets.clear();
    memory::detail::reset_trough(slot_, meter_);
    return;
  }
  last_decisions_.clear();
  for (const auto& t : ts) last_decisions_.push_back(t->decision);
  last_peak_ = s.peak - s.baseline;
  last_predicted_ = 0;
  const std::size_t n = ts.size();
  bool reverse = s.backward_order.size() == n;
  for (std::size_t i = 0; reverse && i < n; ++i) reverse = s.backward_order[i] == n - 1 - i;
  if (s.calibrating && !s.off_plan) {
    // Learn this kind of step: its profile, relative to the first call's forward start.
    auto p = std::make_unique<Profile>();
    const int64_t o = s.first_usage;
    for (const auto& t : ts) {
      plan::CallProfile c;
      c.fwd = t->fwd_usage - o;
      c.after_fwd = std::max(t->fwd_end, t->after_fwd_peak) - o;
      c.bwd = t->bwd_usage - o;
      c.after_bwd = t->after_bwd_peak > 0 ? t->after_bwd_peak - o : 0;
      p->keys.push_back(t->key);
      p->calls.push_back(c);
      p->costs.push_back(t->cost);
      p->fwd_growth.push_back(t->fwd_end - t->fwd_usage);
      p->kept_graph.push_back(0);
      p->kept_fwd.push_back(0);
      p->kept_bwd.push_back(0);
      p->kept_tier.push_back(0);
      p->whole.push_back(0);
      p->binomial.emplace_back(static_cast<std::size_t>(std::max<int64_t>(t->key.steps, 1)), 0);
      // The calibration's own backward, when it was binomial, is a measured schedule too.
      if (t->decision.choice == plan::Choice::Binomial && t->decision.checkpoints > 0 &&
          t->decision.checkpoints < t->key.steps && !t->key.adaptive)
        p->binomial.back()[static_cast<std::size_t>(t->decision.checkpoints)] =
            std::max<int64_t>(0, t->bwd_peak - t->bwd_usage);
      p->cal_forward.push_back(std::max<int64_t>(0, t->fwd_peak - t->fwd_usage));
      p->cal_transient.push_back(std::max<int64_t>(0, t->bwd_peak - t->bwd_usage));
      p->tau.push_back(t->seconds_per_step);
    }
    p->reverse_order = reverse;
    p->calibration_usage = s.first_usage - s.baseline;
    p->calibration_peak = last_peak_;
    for (auto it = profiles_.begin(); it != profiles_.end(); ++it) {
      if ((*it)->keys == p->keys) {
        profiles_.erase(it);
        break;
      }
    }
    last_profile_ = p.get();
    profiles_.push_back(std::move(p));
  } else if (!s.calibrating && !s.off_plan && s.profile != nullptr) {
    Profile& p = *s.profile;
    last_profile_ = &p;
    last_predicted_ = s.cheapest_only ? 0 : p.solution.peak;
    if (last_peak_ > budget_) {
      ++overshoots_;
      if (s.cheapest_only) {
        // Even the cheapest forms did not fit this time: the next step says the budget is too
        // small.
        p.calibration_peak = std::max(p.calibration_peak, last_peak_);
      } else {
        // The model underestimated: raise its margin by the excess, and re-solve next step.
        p.margin += last_peak_ - std::max(p.solution.peak, int64_t{0});
        p.solved_for = -1;
      }
    }
    // What a planned step measured replaces the model's estimate: a kept graph's size, and the
    // whole recompute's backward bytes. Calls of the same kind (the same key and the same measured
    // step) share what one of them measured, the largest if several did.
    const auto same_kind = [&p](std::size_t a, std::size_t b) {
      return p.keys[a] == p.keys[b] && p.costs[a].graph == p.costs[b].graph &&
             p.costs[a].peak == p.costs[b].peak;
    };
    // `entry(i)`: call i's figure in the table being learned (nullptr where it has none).
    const auto learn_each = [&](std::size_t j, int64_t bytes, const auto& entry) {
      if (bytes <= 0) return;
      for (std::size_t i = 0; i < p.keys.size(); ++i) {
        if (i != j && !same_kind(i, j)) continue;
        int64_t* e = entry(i);
        if (e == nullptr) continue;
        if (i != j && *e >= bytes) continue;  // another's own, larger, measurement stands
        if (*e != bytes) {
          *e = bytes;
          p.solved_for = -1;
        }
      }
    };
    const auto learn = [&](std::vector<int64_t>& table, std::size_t j, int64_t bytes) {
      learn_each(j, bytes, [&](std::size_t i) { return i < table.size() ? &table[i] : nullptr; });
    };
    // A kept graph's bytes (its size, its forward's and its backward's allocations) come from
    // two sources: measured on the kept graph itself (tier 2), or bounded from above on the graph
    // a whole recompute rebuilt (tier 1: the Function holds the incoming gradient throughout,
    // and the rebuild's snapshot of the world adds to it). A tier-2 figure replaces a tier-1
    // one, shared by calls of the same kind as above.
    const auto learn_kept = [&](std::size_t j, int tier, int64_t graph, int64_t fwd, int64_t bwd) {
      if (graph <= 0 || fwd <= 0 || bwd <= 0) return;
      for (std::size_t i = 0; i < p.kept_graph.size(); ++i) {
        if (i != j && !same_kind(i, j)) continue;
        if (p.kept_tier[i] > tier) continue;
        const bool replace = p.kept_tier[i] < tier || i == j;
        const int64_t g = replace ? graph : std::max(graph, p.kept_graph[i]);
        const int64_t f = replace ? fwd : std::max(fwd, p.kept_fwd[i]);
        const int64_t b = replace ? bwd : std::max(bwd, p.kept_bwd[i]);
        if (g != p.kept_graph[i] || f != p.kept_fwd[i] || b != p.kept_bwd[i]) p.solved_for = -1;
        p.kept_graph[i] = g;
        p.kept_fwd[i] = f;
        p.kept_bwd[i] = b;
        p.kept_tier[i] = tier;
      }
    };
    for (std::size_t j = 0; j < n && j < p.keys.size(); ++j) {
      const auto& t = *ts[j];
      if (t.decision.choice == plan::Choice::Keep) {
        learn_kept(j, 2, (t.fwd_end - t.fwd_usage) - p.fwd_growth[j], t.fwd_peak - t.fwd_usage,
                   t.bwd_peak - t.bwd_usage);
      }
      if (t.decision.choice == plan::Choice::Binomial && !t.key.adaptive &&
          t.decision.checkpoints > 0) {
        const auto k = static_cast<std::size_t>(t.decision.checkpoints);
        learn_each(j, t.bwd_peak - t.bwd_usage, [&](std::size_t i) -> int64_t* {
          return i < p.binomial.size() && k < p.binomial[i].size() ? &p.binomial[i][k] : nullptr;
        });
      }
      if (t.decision.choice == plan::Choice::Whole && !t.key.adaptive) {
        learn(p.whole, j, t.bwd_peak - t.bwd_usage);
        // The rebuilt graph less its output (which the call's cheapest form holds too).
        if (t.rebuilt_usage > 0) {
          learn_kept(j, 1, t.rebuilt_usage - t.bwd_usage - p.costs[j].state,
                     t.rebuild_peak - t.bwd_usage, t.gradient_peak - t.rebuilt_usage);
        }
      }
    }
    // Step times are noisy (a loaded machine, a first call's warm-up): each call's time per
    // graph-free step is the least seen, which a re-plan follows when it moved by a fifth.
    for (std::size_t j = 0; j < n && j < p.tau.size(); ++j) {
      if (ts[j]->decision.choice == plan::Choice::Keep) continue;  // its forward builds a graph
      const double seen = ts[j]->seconds_per_step;
      if (seen > 0 && seen < p.tau[j]) {
        if (seen < 0.8 * p.tau[j]) p.solved_for = -1;
        p.tau[j] = seen;
      }
    }
    if (!reverse && p.reverse_order) {
      p.reverse_order = false;
      p.solved_for = -1;
    }
  } else if (s.off_plan && s.profile != nullptr) {
    // The step changed under the plan: let the next step of this kind calibrate again.
    for (auto it = profiles_.begin(); it != profiles_.end(); ++it) {
      if (it->get() == s.profile) {
        if (last_profile_ == s.profile) last_profile_ = nullptr;
        profiles_.erase(it);
        break;
      }
    }
  }
  s.profile = nullptr;
  s.tickets.clear();
  memory::detail::reset_trough(slot_, meter_);
}

inline std::ostream& operator<<(std::ostream& os, const MemoryPlan& p) {
  std::lock_guard<std::mutex> lock(p.mutex_);
  const auto mib = [](int64_t b) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(2) << static_cast<double>(b) / (1 << 20) << " MiB";
    return s.str();
  };
  os << "anode::MemoryPlan(budget " << mib(p.budget_) << ", " << p.steps_ << " steps, "
     << p.calibrations_ << " calibrating";
  if (p.last_peak_ > 0) os << ", last step peak " << mib(p.last_peak_);
  if (p.last_predicted_ > 0) os << " (predicted " << mib(p.last_predicted_) << ")";
  if (p.overshoots_ > 0) os << ", " << p.overshoots_ << " steps above the budget";
  os << ")";
  const auto* prof = p.last_profile_;
  if (prof == nullptr) return os;
  if (!prof->solution.feasible && prof->solved_for >= 0) {
    os << "\n  no plan fits: the cheapest needs " << mib(prof->solution.cheapest_peak);
  }
  if (!prof->reverse_order) {
    os << "\n  (backward passes not in reverse order: nothing is kept across blocks)";
  }
  for (std::size_t j = 0; j < prof->keys.size(); ++j) {
    const auto& k = prof->keys[j];
    const auto& c = prof->costs[j];
    os << "\n  block " << j << ": " << k.method << " x" << k.steps << " "
       << c10::IntArrayRef(k.sizes) << ": ";
    if (j < prof->solution.decisions.size())
      os << plan::to_string(prof->solution.decisions[j]);
    else
      os << "calibrated";
    if (k.adaptive) {
      os << " (adaptive: recomputed whole, the only choice it supports under a plan)";
    } else {
      const int tier = prof->kept_tier[j];
      const int64_t graph = tier > 0
                                ? prof->kept_graph[j]
                                : std::max<int64_t>(0, k.steps * c.graph - prof->fwd_growth[j]);
      os << "; graph " << mib(graph)
         << (tier == 2   ? " (measured)"
             : tier == 1 ? " (bounded on a rebuilt one)"
                         : " (estimated)")
         << ", step " << mib(c.peak) << ", state " << mib(c.state) << ", recompute "
         << std::setprecision(3) << prof->tau[j] * 1e3 << " ms/step";
    }
  }
  return os;
}

}  // namespace anode
