// Peak memory, measured by anode's counting CPU allocator:
// Backprop grows with L * N_t; Anode grows with N_t by one block's trajectory and with L only by
// the stored block inputs; binomial checkpointing is flat in N_t; inference stores nothing.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <thread>

namespace test_memory {

using namespace anode_test;
using anode::Gradient;

constexpr int64_t kBatch = 2, kChannels = 4, kSize = 16;
constexpr int64_t kStateBytes = kBatch * kChannels * kSize * kSize * 4;  // float32

struct ChainImpl : torch::nn::Module {
  ChainImpl(int64_t blocks, anode::ODEBlockOptions opts) {
    for (int64_t i = 0; i < blocks; ++i) {
      odes.push_back(
          register_module("ode" + std::to_string(i),
                          anode::ODEBlock<ConvRHSImpl>(ConvRHS(kChannels, 0.0, false), opts)));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& b : odes) x = b->forward(x);
    return x;
  }
  std::vector<anode::ODEBlock<ConvRHSImpl>> odes;
};
TORCH_MODULE(Chain);

// Peak bytes above the baseline of one training step (forward + backward) of L blocks.
int64_t step_peak(int64_t blocks, int64_t steps, Gradient g, int64_t k = 0, bool grad = true,
                  bool keep_forward = false) {
  torch::manual_seed(0);
  Chain net(blocks, anode::ODEBlockOptions()
                        .method(anode::Method::Euler)
                        .steps(steps)
                        .gradient(g)
                        .checkpoints(g == Gradient::Anode ? k : 0)
                        .keep_forward_checkpoints(keep_forward));
  auto x = torch::randn({kBatch, kChannels, kSize, kSize});
  anode::memory::PeakScope scope;
  if (grad) {
    auto loss = net->forward(x).sum();
    loss.backward();
  } else {
    torch::NoGradGuard no_grad;
    auto y = net->forward(x);
  }
  return scope.peak_bytes();
}

class Memory : public Seeded {
 protected:
  void SetUp() override {
    Seeded::SetUp();
    anode::memory::install_cpu_meter();
    torch::set_num_threads(1);  // oneDNN scratch buffers depend on the thread count
  }
};

TEST_F(Memory, MeterCountsTensorStorage) {
  const int64_t before = anode::memory::cpu_current_bytes();
  anode::memory::PeakScope scope;
  {
    auto t = torch::empty({1000}, torch::kDouble);
    EXPECT_EQ(anode::memory::cpu_current_bytes() - before, 8000);
  }
  EXPECT_EQ(anode::memory::cpu_current_bytes(), before);
  EXPECT_EQ(scope.peak_bytes(), 8000);
}

TEST_F(Memory, BackpropGrowsWithBlocksTimesSteps) {
  const int64_t p1_4 = step_peak(1, 4, Gradient::Backprop);
  const int64_t p1_16 = step_peak(1, 16, Gradient::Backprop);
  const int64_t p4_16 = step_peak(4, 16, Gradient::Backprop);
  // Each step stores the stage's activations: many states per step.
  EXPECT_GE(p1_16 - p1_4, 12 * 2 * kStateBytes);       // >= 2 states per step (ReLU out, new z)
  EXPECT_GT(static_cast<double>(p4_16) / p1_16, 3.0);  // ~L
}

TEST_F(Memory, AnodeGrowsWithStepsByOneBlockAndWithBlocksByInputs) {
  for (int64_t steps : {4, 16}) {
    const int64_t backprop_one_block = step_peak(1, steps, Gradient::Backprop);
    for (int64_t blocks : {1, 2, 4}) {
      const int64_t anode_peak = step_peak(blocks, steps, Gradient::Anode);
      const int64_t backprop_peak = step_peak(blocks, steps, Gradient::Backprop);
      SCOPED_TRACE("L " + std::to_string(blocks) + " N_t " + std::to_string(steps));
      // O(L) + O(N_t): the stored block inputs plus one block's trajectory (measured as Backprop's
      // peak for a single block), within 1.2x.
      EXPECT_LE(anode_peak, 1.2 * (blocks * kStateBytes + backprop_one_block));
      if (blocks == 4 && steps == 16) {
        EXPECT_LT(anode_peak, 0.4 * backprop_peak);
      }
      std::cout << "L " << blocks << " N_t " << steps << ": anode " << anode_peak << " B, backprop "
                << backprop_peak << " B, state " << kStateBytes << " B\n";
    }
  }
  // Adding blocks costs Anode about one state each, not a trajectory.
  const int64_t a1 = step_peak(1, 16, Gradient::Anode);
  const int64_t a4 = step_peak(4, 16, Gradient::Anode);
  EXPECT_LE(a4 - a1, 3 * 3 * kStateBytes);
}

TEST_F(Memory, InferenceStoresNothingPerStep) {
  const int64_t p2 = step_peak(4, 2, Gradient::Anode, 0, /*grad=*/false);
  const int64_t p32 = step_peak(4, 32, Gradient::Anode, 0, /*grad=*/false);
  EXPECT_LE(p32, p2 + kStateBytes);
}

TEST_F(Memory, BinomialCheckpointingIsFlatInSteps) {
  const int64_t p8 = step_peak(2, 8, Gradient::Anode, 4);
  const int64_t p64 = step_peak(2, 64, Gradient::Anode, 4);
  const int64_t whole64 = step_peak(2, 64, Gradient::Anode, 0);
  EXPECT_LE(p64, 1.2 * p8);
  EXPECT_LT(p64, 0.5 * whole64);
}

// O(L) + O(k): by default only each block's input outlives the forward pass, so more blocks cost
// one state each; keeping the checkpoints from the forward pass costs k + 1 states per block.
TEST_F(Memory, BinomialCheckpointsAreHeldForOneBlockAtATime) {
  const int64_t k = 4;
  const int64_t rebuilt1 = step_peak(1, 32, Gradient::Anode, k);
  const int64_t rebuilt4 = step_peak(4, 32, Gradient::Anode, k);
  const int64_t kept1 = step_peak(1, 32, Gradient::Anode, k, true, /*keep_forward=*/true);
  const int64_t kept4 = step_peak(4, 32, Gradient::Anode, k, true, /*keep_forward=*/true);
  std::cout << "k 4, N_t 32: rebuilt L1 " << rebuilt1 << " B, L4 " << rebuilt4 << " B; kept L1 "
            << kept1 << " B, L4 " << kept4 << " B; state " << kStateBytes << " B\n";
  EXPECT_LE(rebuilt4 - rebuilt1, 3 * 2 * kStateBytes);  // three more inputs (plus slack)
  EXPECT_GE(kept4 - kept1, 3 * k * kStateBytes);        // three more inputs and 3k checkpoints
  EXPECT_LT(rebuilt4, kept4);
}

// memory_budget is a budget: for every budget, from too small to plenty, the block's
// backward either stays within it or the forward raises an error naming the budget and the bytes
// it needs. The cost of a step is measured, so it holds for a conv-BN-ReLU-conv RHS (about eight
// states per RK2 step) as for an MLP (a few hidden layers).

struct BudgetMLPImpl : torch::nn::Module {
  BudgetMLPImpl()
      : fc1(register_module("fc1", torch::nn::Linear(16, 64))),
        fc2(register_module("fc2", torch::nn::Linear(64, 16))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(BudgetMLP);

// Backward peak of one block under `budget`; -1 when the forward refused the budget.
template <typename Func, typename Holder>
int64_t budget_backward_peak(Holder rhs, const torch::Tensor& x0, int64_t budget) {
  anode::ODEBlock<Func> block(
      rhs, anode::ODEBlockOptions().method(anode::Method::RK2).steps(16).memory_budget(budget));
  auto x = x0.clone().requires_grad_(true);
  torch::Tensor y;
  const std::string message = error_message([&] { y = block->forward(x); });
  if (!message.empty()) {
    EXPECT_NE(message.find("memory_budget of " + std::to_string(budget) + " bytes"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("at least"), std::string::npos) << message;
    return -1;
  }
  auto g = torch::randn_like(y);
  anode::memory::PeakScope scope;
  y.backward(g);
  return scope.peak_bytes();
}

TEST_F(Memory, BudgetHoldsForConvAndMlp) {
  for (const std::string rhs : {"conv", "mlp"}) {
    torch::manual_seed(0);
    const bool conv = rhs == "conv";
    auto x = conv ? torch::randn({kBatch, kChannels, kSize, kSize}) : torch::randn({64, 16});
    const int64_t state = x.numel() * 4;
    int64_t within = 0, refused = 0;
    for (int64_t states : {2, 6, 12, 16, 24, 32, 48, 64, 128, 512}) {
      const int64_t budget = states * state;
      torch::manual_seed(1);
      const int64_t peak = conv ? budget_backward_peak<ConvRHSImpl>(ConvRHS(kChannels), x, budget)
                                : budget_backward_peak<BudgetMLPImpl>(BudgetMLP(), x, budget);
      std::cout << rhs << ": budget " << states << " states (" << budget
                << " B): " << (peak < 0 ? std::string("refused") : std::to_string(peak) + " B")
                << "\n";
      if (peak < 0) {
        ++refused;
        continue;
      }
      ++within;
      EXPECT_LE(peak, budget) << rhs << " budget " << states << " states";
    }
    EXPECT_GE(within, 3) << rhs;  // the range covers binomial budgets and the whole block
    EXPECT_GE(refused, 1) << rhs;
  }
}

TEST(PeakScopeContract, NestedScopeKeepsTheOuterPeak) {
  anode::memory::install_cpu_meter();
  anode::memory::PeakScope outer;
  {
    auto big = torch::empty({1 << 18});  // 1 MiB, freed before the inner scope opens
  }
  {
    anode::memory::PeakScope inner;
    auto small = torch::empty({1 << 10});
    EXPECT_GE(inner.peak_bytes(), 4 << 10);
    EXPECT_LT(inner.peak_bytes(), 1 << 20);
  }
  EXPECT_GE(outer.peak_bytes(), 1 << 20);
}

// An inner scope on another thread (autograd's device thread runs a CUDA backward, and with it a
// memory plan's and a recompute's readings) must not lose the peak of a scope open on this one.
TEST(PeakScopeContract, AScopeOnAnotherThreadKeepsThisThreadsPeak) {
  anode::memory::install_cpu_meter();
  anode::memory::PeakScope outer;
  std::thread other([] {
    {
      auto big = torch::empty({1 << 18});  // 1 MiB, freed before the inner scope resets the peak
    }
    anode::memory::PeakScope inner;
    (void)anode::memory::detail::take_cpu_peak();  // as a plan's segment boundary does
  });
  other.join();
  EXPECT_GE(outer.peak_bytes(), 1 << 20);
}

#if !defined(ANODE_WITH_CUDA)
TEST(PeakScopeContract, CudaScopeInACpuBuildIsAnError) {
  EXPECT_TRUE(throws_mentioning([] { anode::memory::PeakScope s(torch::Device(torch::kCUDA, 0)); },
                                {"ANODE_WITH_CUDA"}));
}
#endif

// The CUDA meter's counting, fed by hand for a device index no machine has (the allocator's trace
// feeds it on a GPU: test_cuda checks that end to end): current, peak, the low point a memory
// plan's trough slot sees, and take_meter_peak handing the peak over and resetting it.
TEST(CudaMeterCounting, CurrentPeakAndTrough) {
  namespace md = anode::memory::detail;
  constexpr int kFake = md::kMaxCudaDevices - 1;
  const int64_t start = md::cuda_meter_current_bytes(kFake);
  md::cuda_meter_count(kFake, 1000);
  const int slot = md::acquire_trough_slot();  // its marks: 1000 on kFake
  ASSERT_GE(slot, 0);
  md::reset_cuda_meter_peak(kFake);
  md::cuda_meter_count(kFake, 500);   // 1500
  md::cuda_meter_count(kFake, -800);  // 700: the low point
  md::cuda_meter_count(kFake, 300);   // 1000
  EXPECT_EQ(md::cuda_meter_current_bytes(kFake) - start, 1000);
  EXPECT_EQ(md::cuda_meter_peak_bytes(kFake) - start, 1500);
  EXPECT_EQ(md::trough_bytes(slot, kFake) - start, 700);
  // The CPU meter's frees do not move the slot's mark on a CUDA device, nor the other way round.
  anode::memory::install_cpu_meter();
  const int64_t cpu_low = md::trough_bytes(slot);
  { auto t = torch::empty({1 << 16}); }
  EXPECT_EQ(md::trough_bytes(slot, kFake) - start, 700);
  EXPECT_EQ(md::trough_bytes(slot), cpu_low);  // no CPU bytes freed below it
  md::cuda_meter_count(kFake, -1);
  md::cuda_meter_count(kFake, 1);
  EXPECT_EQ(md::trough_bytes(slot), cpu_low);
  EXPECT_EQ(md::take_meter_peak(kFake) - start, 1500);
  EXPECT_EQ(md::cuda_meter_peak_bytes(kFake) - start, 1000);  // reset to what is live
  md::reset_trough(slot, kFake);
  EXPECT_EQ(md::trough_bytes(slot, kFake) - start, 1000);
  md::release_trough_slot(slot);
  md::cuda_meter_count(kFake, -1000);
  EXPECT_EQ(md::cuda_meter_current_bytes(kFake), start);
  // Out-of-range devices are ignored, not written out of bounds.
  md::cuda_meter_count(md::kMaxCudaDevices, 1 << 20);
  md::cuda_meter_count(-5, 1 << 20);
  EXPECT_EQ(md::cuda_meter_current_bytes(md::kMaxCudaDevices), 0);
}

// Installing the CUDA meter where it cannot work says why (no CUDA in the build, an old LibTorch,
// no device); on a GPU it is installed (test_cuda checks what it counts).
TEST(CudaMeterCounting, InstallSaysWhyItCannot) {
  if (torch::cuda::is_available()) {
#if defined(ANODE_CUDA_METER)
    ASSERT_NO_THROW(anode::memory::install_cuda_meter());
    EXPECT_TRUE(anode::memory::cuda_meter_installed());
#endif
    return;
  }
  EXPECT_TRUE(
      throws_mentioning([] { anode::memory::install_cuda_meter(); }, {"install_cuda_meter"}));
  EXPECT_FALSE(anode::memory::cuda_meter_installed());
}

}  // namespace test_memory
