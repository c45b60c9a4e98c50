// anode::MemoryPlan: one byte budget for a whole training step. For every budget from the smallest
// feasible to above Backprop's peak, every step (the calibrating first one too) stays within it on
// the CPU meter, the gradient is Backprop's to round-off, and with room for Backprop's graph
// nothing is recomputed; a changed batch re-plans; the errors name what is wrong.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace test_memory_plan {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

/// stem -> L ODE blocks -> head, a squared-output loss: the layers around the blocks allocate
/// too, and the plan must budget them.
struct NetImpl : torch::nn::Module {
  NetImpl(bool conv, int64_t blocks, const anode::ODEBlockOptions& o) : conv(conv) {
    if (conv) {
      stem =
          register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)));
      head = register_module("head", torch::nn::Linear(4 * 8 * 8, 3));
    } else {
      stem = register_module("stem", torch::nn::Linear(5, 16));
      head = register_module("head", torch::nn::Linear(16, 3));
    }
    for (int64_t i = 0; i < blocks; ++i) {
      const auto name = "block" + std::to_string(i);
      if (conv)
        conv_blocks.push_back(register_module(name, anode::ODEBlock<ConvRHSImpl>(ConvRHS(4), o)));
      else
        mlp_blocks.push_back(register_module(name, anode::ODEBlock<MLPImpl>(MLP(16, 48), o)));
    }
    to(torch::kDouble);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = stem.forward(x);
    for (auto& b : conv_blocks) h = b->forward(h);
    for (auto& b : mlp_blocks) h = b->forward(h);
    return head.forward(h.flatten(1)).pow(2).mean();
  }
  bool conv;
  torch::nn::AnyModule stem, head;
  std::vector<anode::ODEBlock<ConvRHSImpl>> conv_blocks;
  std::vector<anode::ODEBlock<MLPImpl>> mlp_blocks;
};
TORCH_MODULE(Net);

struct Case {
  bool conv;
  int64_t blocks;
  Method method;
  int64_t steps;
};

std::string name(const Case& c) {
  return std::string(c.conv ? "conv" : "mlp") + "_L" + std::to_string(c.blocks) + "_" +
         anode::to_string(c.method) + "_N" + std::to_string(c.steps);
}

torch::Tensor input(const Case& c, int64_t batch, int64_t seed) {
  torch::manual_seed(100 + seed);
  return c.conv ? torch::randn({batch, 3, 8, 8}, torch::kDouble)
                : torch::randn({batch, 5}, torch::kDouble);
}

/// `n` batches made before any step, as in a loaded dataset: a batch made just before a step
/// counts in the plan's reading of the step (its baseline is the low point before the batch was
/// made), not in a peak measured from the step's start.
std::vector<torch::Tensor> premade_batches(const Case& c, int n) {
  std::vector<torch::Tensor> out;
  for (int s = 0; s < n; ++s) out.push_back(input(c, c.conv ? 2 : 128, s));
  return out;
}

Net make_net(const Case& c, const anode::ODEBlockOptions& o) {
  torch::manual_seed(7);
  return Net(c.conv, c.blocks, o);
}

/// One training step: its peak above what was live when it started, and the gradients.
struct StepResult {
  int64_t peak = 0;
  std::vector<torch::Tensor> grads;
};
StepResult step(Net& net, const torch::Tensor& x) {
  net->zero_grad();
  StepResult r;
  {
    anode::memory::PeakScope scope;
    torch::manual_seed(3);
    net->forward(x).backward();
    r.peak = scope.peak_bytes();
  }
  for (const auto& p : net->parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

int64_t backward_evaluations(Net& net) {
  int64_t n = 0;
  for (auto& b : anode::ode_blocks(*net)) n += b->stats().backward_evaluations;
  return n;
}

class MemoryPlanBudgets : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { anode::memory::install_cpu_meter(); }
};

TEST_P(MemoryPlanBudgets, EveryStepWithinBudgetAndExact) {
  const Case c = GetParam();
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  const int64_t batch = c.conv ? 2 : 128;
  constexpr int kSteps = 4;
  // Backprop: the reference gradients and the peak a plan with room for its graph must match.
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  std::vector<StepResult> want;
  int64_t backprop_peak = 0;
  for (int s = 0; s < kSteps; ++s) {
    want.push_back(step(ref, input(c, batch, s)));
    backprop_peak = std::max(backprop_peak, want.back().peak);
  }
  // The smallest feasible budget, as a calibration step measures it.
  int64_t smallest = 0;
  {
    auto probe = std::make_shared<anode::MemoryPlan>(int64_t{1} << 40);
    auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(probe));
    step(net, input(c, batch, 0));
    smallest = probe->cheapest_peak_bytes();
    ASSERT_GT(smallest, 0);
  }
  ASSERT_LT(smallest, backprop_peak)
      << "the test needs room between the cheapest plan and Backprop";
  std::vector<int64_t> budgets;
  const int64_t top = backprop_peak + backprop_peak / 4;
  for (int i = 0; i <= 5; ++i) budgets.push_back(smallest + (top - smallest) * i / 5);
  for (const int64_t budget : budgets) {
    auto plan = std::make_shared<anode::MemoryPlan>(budget);
    auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
    for (int s = 0; s < kSteps; ++s) {
      const auto got = step(net, input(c, batch, s));
      EXPECT_LE(got.peak, budget) << "budget " << budget << ", step " << s << "\n" << *plan;
      EXPECT_LT(max_rel_err(got.grads, want[static_cast<std::size_t>(s)].grads), 1e-12)
          << "budget " << budget << ", step " << s;
    }
    if (std::getenv("ANODE_TEST_VERBOSE"))
      std::cout << "budget " << budget << " backprop " << backprop_peak << " recompute evals "
                << backward_evaluations(net) << "\n"
                << *plan << "\n";
    EXPECT_EQ(plan->calibrations(), 1) << *plan;
    EXPECT_EQ(plan->overshoots(), 0) << *plan;
    if (budget == budgets.back()) {
      // Room for Backprop's graph: every block keeps its graph, nothing is recomputed.
      for (const auto& d : plan->decisions())
        EXPECT_EQ(d.choice, anode::plan::Choice::Keep) << *plan;
      EXPECT_EQ(backward_evaluations(net), 0) << *plan;
    }
  }
}

// The smallest feasible budget is what the calibration step (every block with one checkpoint,
// rebuilt, plus one measured step in each forward) was measured to take: its backward's measured
// bytes bound the plan's binomial schedules from then on, so the model's own, more conservative
// figure for them does not raise the least budget. A plan at exactly that budget trains within it.
TEST_P(MemoryPlanBudgets, TheSmallestFeasibleBudgetIsTheCalibrationsPeak) {
  const Case c = GetParam();
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  constexpr int kSteps = 6;
  const auto batches = premade_batches(c, kSteps);
  int64_t smallest = 0;
  {
    auto probe = std::make_shared<anode::MemoryPlan>(int64_t{1} << 40);
    auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(probe));
    step(net, batches[0]);
    smallest = probe->cheapest_peak_bytes();
    EXPECT_EQ(smallest, probe->last_step_peak()) << *probe;
  }
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  auto plan = std::make_shared<anode::MemoryPlan>(smallest);
  auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
  for (int s = 0; s < kSteps; ++s) {
    const auto& x = batches[static_cast<std::size_t>(s)];
    StepResult got;
    ASSERT_NO_THROW(got = step(net, x)) << "step " << s << "\n" << *plan;
    EXPECT_LE(got.peak, smallest) << "step " << s << "\n" << *plan;
    EXPECT_LT(max_rel_err(got.grads, step(ref, x).grads), 1e-12) << "step " << s;
  }
  EXPECT_EQ(plan->overshoots(), 0) << *plan;
}

// A budget of exactly Backprop's peak: a kept graph is Backprop's (the engine differentiates it, as
// it does Backprop's), so from the first planned step on the plan keeps every graph, on one block
// as on several, and the step is Backprop's step, within the budget, with nothing recomputed.
TEST_P(MemoryPlanBudgets, AtBackpropsPeakKeepsEveryGraph) {
  const Case c = GetParam();
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  constexpr int kSteps = 8;
  const auto batches = premade_batches(c, kSteps);
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  std::vector<StepResult> want;
  int64_t backprop_peak = 0;
  for (int s = 0; s < kSteps; ++s) {
    want.push_back(step(ref, batches[static_cast<std::size_t>(s)]));
    backprop_peak = std::max(backprop_peak, want.back().peak);
  }
  auto plan = std::make_shared<anode::MemoryPlan>(backprop_peak);
  auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
  int64_t last_evals = 0;
  for (int s = 0; s < kSteps; ++s) {
    const auto got = step(net, batches[static_cast<std::size_t>(s)]);
    last_evals = backward_evaluations(net);  // the last forward's calls, after their backward
    EXPECT_LE(got.peak, backprop_peak) << "step " << s << "\n" << *plan;
    // From the first planned step on (the estimate of a graph never kept is exact enough), every
    // graph is kept and nothing is recomputed.
    if (s >= 1) {
      EXPECT_EQ(last_evals, 0) << "step " << s << "\n" << *plan;
      for (const auto& d : plan->decisions())
        EXPECT_EQ(d.choice, anode::plan::Choice::Keep) << "step " << s << "\n" << *plan;
    }
    EXPECT_LT(max_rel_err(got.grads, want[static_cast<std::size_t>(s)].grads), 1e-12)
        << "step " << s;
    if (std::getenv("ANODE_TEST_VERBOSE"))
      std::cout << "step " << s << " peak " << got.peak << " backprop " << backprop_peak
                << " recompute evals " << last_evals << "\n"
                << *plan << "\n";
  }
  EXPECT_EQ(plan->overshoots(), 0) << *plan;
  for (const auto& d : plan->decisions()) EXPECT_EQ(d.choice, anode::plan::Choice::Keep) << *plan;
  EXPECT_EQ(last_evals, 0) << *plan;
}

INSTANTIATE_TEST_SUITE_P(
    Networks, MemoryPlanBudgets,
    ::testing::Values(Case{false, 1, Method::Euler, 6}, Case{false, 4, Method::RK2, 4},
                      Case{false, 8, Method::RK4, 3}, Case{true, 1, Method::RK2, 4},
                      Case{true, 4, Method::Euler, 4}, Case{true, 4, Method::RK4, 2},
                      Case{true, 8, Method::RK2, 3}, Case{false, 4, Method::Euler, 16}),
    [](const ::testing::TestParamInfo<Case>& i) { return name(i.param); });

// A new batch size is a new kind of step: the plan calibrates again, within the budget, and the
// gradient stays Backprop's.
TEST(MemoryPlan, ReplansOnABatchSizeChange) {
  anode::memory::install_cpu_meter();
  const Case c{false, 4, Method::RK2, 4};
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  int64_t backprop_peak = 0;
  for (int64_t batch : {16, 32})
    backprop_peak = std::max(backprop_peak, step(ref, input(c, batch, 0)).peak);
  auto plan = std::make_shared<anode::MemoryPlan>(backprop_peak);
  auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
  for (int64_t batch : {16, 16, 32, 32, 16}) {
    const auto x = input(c, batch, batch);
    const auto got = step(net, x);
    const auto want = step(ref, x);
    EXPECT_LE(got.peak, plan->budget_bytes()) << "batch " << batch << "\n" << *plan;
    EXPECT_LT(max_rel_err(got.grads, want.grads), 1e-12) << "batch " << batch;
  }
  EXPECT_EQ(plan->calibrations(), 2) << *plan;  // batch 16, then 32; back to 16 is remembered
}

TEST(MemoryPlan, TooSmallABudgetRaisesNamingWhatItNeedsThenALargerOneWorks) {
  anode::memory::install_cpu_meter();
  const Case c{false, 4, Method::RK2, 4};
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  auto plan = std::make_shared<anode::MemoryPlan>(1024);
  auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
  const auto x = input(c, 16, 0);
  step(net, x);  // the calibration: it measures what the step needs
  EXPECT_TRUE(throws_mentioning([&] { step(net, x); },
                                {"MemoryPlan", "1024 bytes is too small", "cheapest plan needs"}));
  // Nothing was half-done: the same model trains with a larger plan.
  auto ok = std::make_shared<anode::MemoryPlan>(int64_t{1} << 30);
  for (auto& b : anode::ode_blocks(*net)) b->options.memory_plan(ok);
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  EXPECT_LT(max_rel_err(step(net, x).grads, step(ref, x).grads), 1e-12);
  EXPECT_LT(max_rel_err(step(net, x).grads, step(ref, x).grads), 1e-12);
}

TEST(MemoryPlan, BadInputIsAClearError) {
  anode::memory::install_cpu_meter();
  EXPECT_TRUE(throws_mentioning([] { anode::MemoryPlan p(0); }, {"MemoryPlan", "> 0", "0"}));
  EXPECT_TRUE(throws_mentioning([] { anode::MemoryPlan p(-5); }, {"> 0 bytes, got -5"}));
  auto plan = std::make_shared<anode::MemoryPlan>(int64_t{1} << 30);
  const auto o = anode::ODEBlockOptions().method(Method::RK2).steps(4).memory_plan(plan);
  EXPECT_NO_THROW(o.validate());
  // The plan decides what these options would: together they are an error, naming both.
  EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).checkpoints(2).validate(); },
                                {"memory_plan", "checkpoints(2)"}));
  EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).memory_budget(100).validate(); },
                                {"memory_plan", "memory_budget(100)"}));
  EXPECT_TRUE(
      throws_mentioning([&] { anode::ODEBlockOptions(o).keep_latest_graph(true).validate(); },
                        {"memory_plan", "keep_latest_graph"}));
  // A block whose gradient mode changes under the plan: the next forward says so.
  anode::ODEBlock<MLPImpl> block(MLP(3, 4), o);
  block->options.gradient(Gradient::Backprop);
  EXPECT_TRUE(throws_mentioning(
      [&] {
        block->forward(torch::randn({2, 3}));
      },
      {"memory_plan", "Gradient::Anode only", "Backprop"}));
  // with_gradient drops the plan with the other Anode-only options.
  EXPECT_EQ(o.with_gradient(Gradient::Adjoint).memory_plan(), nullptr);
  // One plan budgets one device: the second device's call is refused (this machine has one
  // device, so the call is made as a block on another device would make it).
  anode::detail::PlanCallKey cpu_key;
  cpu_key.sizes = {2, 3};
  cpu_key.dtype = torch::kFloat;
  cpu_key.steps = 4;
  auto t = plan->begin_forward(cpu_key);
  auto other = cpu_key;
  other.device = torch::Device(torch::kCUDA, 0);
  EXPECT_TRUE(throws_mentioning([&] { plan->begin_forward(other); },
                                {"one plan is shared by blocks on cpu and on cuda:0"}));
  plan->release(*t);
}

// A block on the network's raw input (which needs no gradient) keeps its graph too: the engine
// differentiates it as Backprop's, and the plan still sees where its backward ends. The
// gradients are Backprop's, with and without a gradient for the input.
TEST(MemoryPlan, KeepsABlockOnTheRawInput) {
  anode::memory::install_cpu_meter();
  const auto base = anode::ODEBlockOptions().method(Method::RK2).steps(3);
  for (bool input_grad : {false, true}) {
    torch::manual_seed(5);
    const auto x0 = torch::randn({64, 8}, torch::kDouble);
    const auto run = [&](const anode::ODEBlockOptions& o, MLP& f) {
      f->zero_grad();
      auto x = x0.clone().requires_grad_(input_grad);
      StepResult r;
      {
        anode::memory::PeakScope scope;
        auto block = anode::ODEBlock<MLPImpl>(f, o);
        block->forward(x).pow(2).mean().backward();
        r.peak = scope.peak_bytes();
      }
      if (input_grad) r.grads.push_back(x.grad().clone());
      for (const auto& p : f->parameters()) r.grads.push_back(p.grad().clone());
      return r;
    };
    torch::manual_seed(6);
    MLP f(8, 32);
    f->to(torch::kDouble);
    const auto want = run(base.with_gradient(Gradient::Backprop), f);
    auto plan = std::make_shared<anode::MemoryPlan>(want.peak * 2);
    for (int s = 0; s < 4; ++s) {
      const auto got = run(anode::ODEBlockOptions(base).memory_plan(plan), f);
      EXPECT_LE(got.peak, plan->budget_bytes()) << "step " << s << "\n" << *plan;
      EXPECT_LT(max_rel_err(got.grads, want.grads), 1e-12) << "input grad " << input_grad;
    }
    ASSERT_EQ(plan->decisions().size(), 1u);
    EXPECT_EQ(plan->decisions()[0].choice, anode::plan::Choice::Keep) << *plan;
    EXPECT_EQ(plan->steps(), 4) << *plan;
    EXPECT_EQ(plan->overshoots(), 0) << *plan;
  }
}

// A forward pass whose graph is dropped without a backward (an evaluation with autograd on)
// ends the plan's step when the graph goes: the training steps after it are planned as before.
TEST(MemoryPlan, AGraphDroppedWithoutBackwardEndsItsStep) {
  anode::memory::install_cpu_meter();
  const Case c{false, 4, Method::RK2, 4};
  const auto base = anode::ODEBlockOptions().method(c.method).steps(c.steps);
  auto ref = make_net(c, base.with_gradient(Gradient::Backprop));
  const auto x = input(c, 32, 0);
  const int64_t backprop_peak = step(ref, x).peak;
  auto plan = std::make_shared<anode::MemoryPlan>(backprop_peak * 2);
  auto net = make_net(c, anode::ODEBlockOptions(base).memory_plan(plan));
  for (int s = 0; s < 6; ++s) {
    if (s == 2 || s == 3) {
      (void)net->forward(x);  // kept graphs (step 3) and recomputed ones (step 2), dropped
      continue;
    }
    const auto got = step(net, x);
    EXPECT_LE(got.peak, plan->budget_bytes()) << "step " << s << "\n" << *plan;
    EXPECT_LT(max_rel_err(got.grads, step(ref, x).grads), 1e-12) << "step " << s;
  }
  EXPECT_EQ(plan->overshoots(), 0) << *plan;
  EXPECT_EQ(plan->steps(), 6) << *plan;
  EXPECT_EQ(plan->calibrations(), 1) << *plan;
  // The last step was planned (not run cheapest as a step that changed under the plan would be).
  EXPECT_GT(plan->last_predicted_peak(), 0) << *plan;
  for (const auto& d : plan->decisions()) EXPECT_EQ(d.choice, anode::plan::Choice::Keep) << *plan;
}

// odeint's trajectories: each output interval is a call the plan budgets, fixed-step and adaptive
// (an adaptive interval is recomputed whole, the only choice it supports under a plan).
TEST(MemoryPlan, TrajectoriesFixedAndAdaptive) {
  anode::memory::install_cpu_meter();
  for (bool adaptive : {false, true}) {
    auto base = adaptive ? anode::ODEBlockOptions().method(Method::Dopri5).rtol(1e-6).atol(1e-8)
                         : anode::ODEBlockOptions().method(Method::RK2).steps(3);
    torch::manual_seed(4);
    MLP f(8, 32);
    f->to(torch::kDouble);
    const auto t = torch::linspace(0.0, 1.0, 5, torch::kDouble);
    const auto z0 = torch::randn({64, 8}, torch::kDouble);
    const auto run = [&](const anode::ODEBlockOptions& o) {
      f->zero_grad();
      auto z = z0.clone().requires_grad_();
      StepResult r;
      {
        anode::memory::PeakScope scope;
        anode::odeint(f, z, t, o).pow(2).mean().backward();
        r.peak = scope.peak_bytes();
      }
      r.grads = {z.grad().clone()};
      for (const auto& p : f->parameters()) r.grads.push_back(p.grad().clone());
      return r;
    };
    const auto want = run(base.with_gradient(Gradient::Backprop));
    auto probe = std::make_shared<anode::MemoryPlan>(int64_t{1} << 40);
    run(anode::ODEBlockOptions(base).memory_plan(probe));
    const int64_t smallest = probe->cheapest_peak_bytes();
    ASSERT_GT(smallest, 0);
    for (int64_t budget : {smallest, std::max(smallest, want.peak) * 2}) {
      auto plan = std::make_shared<anode::MemoryPlan>(budget);
      for (int s = 0; s < 3; ++s) {
        const auto got = run(anode::ODEBlockOptions(base).memory_plan(plan));
        EXPECT_LE(got.peak, budget) << "adaptive " << adaptive << " step " << s << "\n" << *plan;
        EXPECT_LT(max_rel_err(got.grads, want.grads), 1e-12) << "adaptive " << adaptive;
      }
      EXPECT_EQ(plan->decisions().size(), 4u) << *plan;  // one call per output interval
      if (adaptive) {
        for (const auto& d : plan->decisions()) EXPECT_EQ(d.choice, anode::plan::Choice::Whole);
      }
    }
  }
}

}  // namespace test_memory_plan
