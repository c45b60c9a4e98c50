// ODEBlockOptions::memory_budget and the CPU memory meter (include/anode/gradient/budget.hpp): the
// budget measures a step with the meter, which only the program installs. Without it, a forward
// pass with a budget on a CPU tensor raises an error saying what to call, and installs nothing:
// the process-wide CPU allocator stays the one the program chose.
//
// BudgetWithoutMeter needs a process in which the meter was never installed: in the whole
// program's run it skips once an earlier case has installed it; its own CTest entry,
// test_library_gradient.without_meter (test_budget.cmake), runs it in a fresh process.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <c10/core/CPUAllocator.h>

namespace test_budget {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

using MLPBlock = anode::ODEBlock<MLPImpl>;

MLPBlock mlp_block(const anode::ODEBlockOptions& o) {
  torch::manual_seed(3);
  MLPBlock block(MLP(3, 5), o);
  block->to(torch::kDouble);
  return block;
}

anode::ODEBlockOptions budget_options(int64_t budget) {
  return anode::ODEBlockOptions().method(Method::RK2).steps(8).memory_budget(budget);
}

// A budget any backward of this block fits in: the forward never refuses it as too small.
constexpr int64_t kPlenty = int64_t{1} << 30;

TEST(BudgetWithoutMeter, ForwardRaisesAndInstallsNothing) {
  if (anode::memory::cpu_meter_installed()) {
    GTEST_SKIP() << "the meter is installed in this process already; run "
                    "test_library_gradient.without_meter";
  }
  c10::Allocator* const allocator = c10::GetCPUAllocator();
  auto block = mlp_block(budget_options(kPlenty));
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  EXPECT_TRUE(throws_mentioning(
      [&] { block->forward(x); },
      {"memory_budget(" + std::to_string(kPlenty) + ")", "anode::memory::install_cpu_meter()",
       "first thing in main()", "checkpoints(k)"}));
  EXPECT_FALSE(anode::memory::cpu_meter_installed());
  EXPECT_EQ(c10::GetCPUAllocator(), allocator);

  // Without a graph to build nothing is measured, so nothing needs the meter.
  {
    torch::NoGradGuard no_grad;
    EXPECT_NO_THROW(block->forward(x));
  }
  // Explicit checkpoints need no measurement either.
  block->options.memory_budget(0).checkpoints(3);
  auto got = grads_of(block->forward(x).pow(2).sum(), block->parameters());
  auto ref = mlp_block(budget_options(0).gradient(Gradient::Backprop));
  auto want = grads_of(ref->forward(x).pow(2).sum(), ref->parameters());
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  EXPECT_FALSE(anode::memory::cpu_meter_installed());
  EXPECT_EQ(c10::GetCPUAllocator(), allocator);
}

TEST(BudgetWithMeter, ChoosesCheckpointsOnceTheProgramInstallsIt) {
  anode::memory::install_cpu_meter();
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  auto ref = mlp_block(budget_options(0).gradient(Gradient::Backprop));
  auto want = grads_of(ref->forward(x).pow(2).sum(), ref->parameters());
  auto block = mlp_block(budget_options(kPlenty));
  auto got = grads_of(block->forward(x).pow(2).sum(), block->parameters());
  EXPECT_LT(max_rel_err(got, want), 1e-12);
  // (Budgets that force binomial checkpoints: test_binomial and test_memory.)
}

}  // namespace test_budget
