// Binomial checkpointing inside a block: exact gradients for every k, the optimal number
// of recomputed steps, statistics and RNG replayed however often a step is re-run, and memory
// flat in N_t for fixed k.

#include "support/testing.hpp"

#include <anode/memory.hpp>

namespace test_binomial {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

struct StepResult {
  std::vector<torch::Tensor> grads;  // input, then every parameter
  std::vector<torch::Tensor> buffers;
  int64_t forward_evals = 0;
  int64_t backward_evals = 0;
};

// One training step of a ConvRHS block (BatchNorm + dropout) in float64.
StepResult train_step(Method method, int64_t steps, Gradient g, int64_t k,
                      bool keep_forward = false, double dropout = 0.25) {
  torch::manual_seed(3);
  auto opts = anode::ODEBlockOptions()
                  .method(method)
                  .steps(steps)
                  .gradient(g)
                  .checkpoints(g == Gradient::Anode ? k : 0)
                  .keep_forward_checkpoints(keep_forward);
  anode::ODEBlock<ConvRHSImpl> block(ConvRHS(3, dropout), opts);
  block->to(torch::kDouble);
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble).requires_grad_(true);
  torch::manual_seed(11);
  StepResult r;
  rhs_evaluations() = 0;
  auto y = block->forward(x);
  r.forward_evals = rhs_evaluations();
  auto loss = (y * y.sin()).sum();
  std::vector<torch::Tensor> inputs{x};
  for (auto& p : block->parameters()) inputs.push_back(p);
  rhs_evaluations() = 0;
  r.grads = grads_of(loss, inputs);
  r.backward_evals = rhs_evaluations();
  for (auto& b : block->buffers()) r.buffers.push_back(b.clone());
  return r;
}

// Steps of the binomial schedule's first sweep up to its last checkpoint: what a backward that
// rebuilds the checkpoints (keep_forward_checkpoints false) runs before the schedule proper.
int64_t sweep_steps(int64_t steps, int64_t k) {
  const auto plan = anode::schedule::binomial_schedule(steps, k);
  int64_t pos = 0, last_store = 0;
  for (const auto& a : plan.forward) {
    if (a.kind == anode::schedule::ActionKind::Advance) pos += a.arg;
    if (a.kind == anode::schedule::ActionKind::Store) last_store = pos;
  }
  return last_store;
}

class BinomialExact : public Seeded, public ::testing::WithParamInterface<Method> {};

// Every k in 1..N_t (and beyond) gives Backprop's gradient and Backprop's BatchNorm statistics;
// the backward evaluates the RHS exactly stages * backward_rhs_steps(N, k) times.
TEST_P(BinomialExact, EveryKMatchesBackpropWithOptimalRecomputation) {
  const Method method = GetParam();
  const int64_t stages = anode::tableau(method).stages();
  for (int64_t steps : {1, 2, 5, 9}) {
    const StepResult ref = train_step(method, steps, Gradient::Backprop, 0);
    EXPECT_EQ(ref.forward_evals, stages * steps);
    for (int64_t k = 1; k <= steps + 1; ++k) {
      SCOPED_TRACE("method " + std::string(anode::to_string(method)) + ", N_t " +
                   std::to_string(steps) + ", k " + std::to_string(k));
      for (bool keep_forward : {false, true}) {
        SCOPED_TRACE(keep_forward ? "checkpoints stored in forward" : "rebuilt in backward");
        const StepResult r = train_step(method, steps, Gradient::Anode, k, keep_forward);
        EXPECT_LT(max_rel_err(r.grads, ref.grads), 1e-12);
        ASSERT_EQ(r.buffers.size(), ref.buffers.size());
        for (std::size_t i = 0; i < r.buffers.size(); ++i) {
          EXPECT_TRUE(torch::equal(r.buffers[i], ref.buffers[i])) << "buffer " << i;
        }
        EXPECT_EQ(r.forward_evals, stages * steps);  // the forward never evaluates more
        // k >= N_t is the whole-trajectory scheme: every step re-run exactly once.
        int64_t expected_steps = steps;
        if (k < steps) {
          expected_steps = anode::schedule::backward_rhs_steps(steps, k) +
                           (keep_forward ? 0 : sweep_steps(steps, k));
        }
        EXPECT_EQ(r.backward_evals, stages * expected_steps);
        if (k >= steps - 1 && (keep_forward || k >= steps)) {
          EXPECT_EQ(r.backward_evals, stages * steps);  // nothing recomputed twice
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllMethods, BinomialExact,
                         ::testing::Values(Method::Euler, Method::RK2, Method::RK4));

// The counts the test above checks against, for a case worked by hand: N = 4, k = 1. The forward
// stores z_2 (or the best split); reversing needs the binomial optimum of backward advances.
TEST_F(Seeded, BackwardEvaluationsAreFewerWithMoreCheckpoints) {
  int64_t previous = std::numeric_limits<int64_t>::max();
  for (int64_t k = 1; k < 16; ++k) {
    const int64_t steps = anode::schedule::backward_rhs_steps(16, k);
    EXPECT_LE(steps, previous) << "k " << k;
    EXPECT_GE(steps, 16);
    previous = steps;
  }
  EXPECT_EQ(anode::schedule::backward_rhs_steps(16, 15), 16);
  // Without any checkpoint besides the input every step is recomputed from z_0: N(N+1)/2 steps.
  EXPECT_EQ(anode::schedule::backward_rhs_steps(16, 0), 16 * 17 / 2);
}

// A memory budget picks k from a measured step cost; too small a budget is a clear error.
TEST_F(Seeded, MemoryBudgetChoosesCheckpoints) {
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  const int64_t state = x.numel() * 8;
  anode::detail::StepCost c;
  c.state = state;
  c.graph = 3 * state;
  c.peak = 5 * state;
  c.accumulators = 2 * state;
  c.slot = state;
  // The whole block: 8 graphs + the backward's transient + accumulators + a world snapshot.
  const int64_t whole = 8 * 3 * state + 2 * state + 2 * state + state;
  EXPECT_EQ(anode::detail::backward_bytes(c, 8, 0), whole);
  EXPECT_EQ(anode::detail::checkpoints_within(c, 8, whole), 0);
  // k slots + current state + step peak + accumulators + world snapshot.
  EXPECT_EQ(anode::detail::backward_bytes(c, 8, 3), (3 + 1 + 5 + 2 + 1) * state);
  EXPECT_EQ(anode::detail::checkpoints_within(c, 8, whole - 1), 7);
  EXPECT_EQ(anode::detail::checkpoints_within(c, 8, 12 * state), 3);
  EXPECT_EQ(anode::detail::checkpoints_within(c, 8, 10 * state), 1);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(anode::detail::checkpoints_within(c, 8, 10 * state - 1)); },
      {"at least " + std::to_string(10 * state) + " bytes"}));
  // One step: nothing to checkpoint, the whole block must fit.
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] { (void)(anode::detail::checkpoints_within(c, 1, 7 * state)); }, {"memory_budget"}));

  // And the chosen k gives the exact gradient (memory_budget measures a step with the meter).
  anode::memory::install_cpu_meter();
  torch::manual_seed(5);
  anode::ODEBlock<ConvRHSImpl> a(ConvRHS(3),
                                 anode::ODEBlockOptions().steps(8).memory_budget(40 * state));
  torch::manual_seed(5);
  anode::ODEBlock<ConvRHSImpl> b(ConvRHS(3),
                                 anode::ODEBlockOptions().steps(8).gradient(Gradient::Backprop));
  a->to(torch::kDouble);
  b->to(torch::kDouble);
  auto ga = grads_of(a->forward(x.clone().requires_grad_()).sum(), a->parameters());
  auto gb = grads_of(b->forward(x.clone().requires_grad_()).sum(), b->parameters());
  EXPECT_LT(max_rel_err(ga, gb), 1e-12);
}

}  // namespace test_binomial
