// CUDA, where users train: the exactness contract, the memory bounds and the absence of
// host-device synchronisation hold on the device as they do on the CPU.
//
//  1. Anode == Backprop on CUDA in float64 and float32, BatchNorm and dropout in the right-hand
//     side (the CUDA generator is replayed: the same masks), whole-block and binomial.
//  2. Under CUDA autocast (fp16 and bf16), Anode == Backprop run under the same autocast.
//  3. The CUDA peak-memory meter (the caching allocator's statistics) shows Backprop's O(L * N_t)
//     and Anode's O(L) + O(N_t).
//  4. No host-device sync in the graph-free step loop or in Anode's forward pass: checked with
//     c10's sync debug mode (a synchronising call raises) and by capturing the graph-free forward
//     in a CUDA graph (capture fails on a sync).
//
// Every test skips (GTEST_SKIP) without a CUDA device, so the program builds and passes on the
// CPU-only LibTorch of CI. The sync and graph checks need CUDA headers and also skip in a build
// without ANODE_WITH_CUDA. Run on a GPU with scripts/gpu_check.sh (docs/gpu.md).

#include "support/testing.hpp"

#include <anode/memory.hpp>

#if defined(ANODE_WITH_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstdlib>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

using namespace anode_test;
using anode::Gradient;
using anode::Method;

namespace {

/// Skips without a CUDA device; seeds every generator (torch::manual_seed seeds the CUDA ones
/// too) and makes cuDNN pick the same deterministic kernels in every run, so two runs of the same
/// computation are comparable bit for bit.
class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    // Initialise CUDA and its caching allocator first: the memory meter reads its statistics.
    (void)torch::zeros({1}, torch::device(torch::kCUDA));
    torch::manual_seed(0);
    deterministic_.emplace();
  }
  void TearDown() override { deterministic_.reset(); }

  const torch::Device device{torch::kCUDA, 0};

 private:
  std::optional<anode_test::DeterministicCudnn> deterministic_;
};

/// Two ODE blocks in sequence, each with a conv-BN-ReLU-dropout-conv right-hand side.
struct TwoBlocksImpl : torch::nn::Module {
  TwoBlocksImpl(int64_t channels, double dropout, const anode::ODEBlockOptions& o)
      : a(register_module("a", anode::ODEBlock<ConvRHSImpl>(ConvRHS(channels, dropout), o))),
        b(register_module("b", anode::ODEBlock<ConvRHSImpl>(ConvRHS(channels, dropout), o))) {}
  torch::Tensor forward(torch::Tensor x) { return b->forward(a->forward(x)); }
  anode::ODEBlock<ConvRHSImpl> a, b;
};
TORCH_MODULE(TwoBlocks);

/// Twins: the same seed gives the same weights (initialised on the CPU, then moved).
TwoBlocks two_blocks(const anode::ODEBlockOptions& o, torch::Device device, c10::ScalarType dtype,
                     double dropout = 0.3) {
  torch::manual_seed(11);
  TwoBlocks net(4, dropout, o);
  net->to(device, dtype);
  return net;
}

/// One training-like pass: forward (dropout drawing from the CUDA generator), a weighted loss,
/// the gradients of the input and every parameter, and the generator's next draws afterwards.
struct Pass {
  torch::Tensor y;
  std::vector<torch::Tensor> grads;
  torch::Tensor after;  // the caller's CUDA random stream after backward
};

Pass run_pass(TwoBlocks& net, const torch::Tensor& x0, const torch::Tensor& weight) {
  Pass p;
  auto x = x0.clone().requires_grad_(true);
  torch::manual_seed(5);
  p.y = net->forward(x);
  std::vector<torch::Tensor> inputs = net->parameters();
  inputs.push_back(x);
  p.grads = grads_of((p.y * weight).sum(), inputs);
  p.after = torch::rand({8}, torch::dtype(torch::kDouble).device(x0.device()));
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Exactness on the device: BatchNorm and dropout, float64 and float32, whole block and binomial.

struct ExactCase {
  c10::ScalarType dtype;
  Method method;
  int64_t checkpoints;
  bool keep_forward;
};
void PrintTo(const ExactCase& c, std::ostream* os) {
  *os << c.dtype << " " << c.method << " k=" << c.checkpoints << (c.keep_forward ? " kept" : "");
}
class CudaExact : public Cuda, public ::testing::WithParamInterface<ExactCase> {};

TEST_P(CudaExact, AnodeEqualsBackpropWithBatchNormAndDropout) {
  const auto c = GetParam();
  const double tol = c.dtype == torch::kFloat64 ? 1e-10 : 1e-5;
  auto ref = two_blocks(opts(c.method, 4, Gradient::Backprop), device, c.dtype);
  auto net = two_blocks(
      opts(c.method, 4).checkpoints(c.checkpoints).keep_forward_checkpoints(c.keep_forward), device,
      c.dtype);
  torch::manual_seed(1);
  auto x = torch::randn({3, 4, 8, 8}, torch::dtype(c.dtype).device(device));
  auto w = torch::randn({3, 4, 8, 8}, torch::dtype(c.dtype).device(device));
  const Pass want = run_pass(ref, x, w);
  const Pass got = run_pass(net, x, w);
  ASSERT_EQ(got.y.device(), device);
  ASSERT_EQ(got.y.scalar_type(), c.dtype);
  EXPECT_LE(rel_err(got.y, want.y), tol);
  const double err = max_rel_err(got.grads, want.grads);
  EXPECT_LE(err, tol);
  for (const auto& g : got.grads) EXPECT_EQ(g.device(), device);
  // BatchNorm's running statistics: updated once per RHS evaluation of the forward pass, as
  // Backprop does, never by the recomputation.
  EXPECT_TRUE(same_state(*net, *ref, tol));
  // The caller's CUDA random stream continues as after Backprop: the replay left it alone.
  EXPECT_TRUE(torch::equal(got.after, want.after));
  std::cout << "dtype " << c.dtype << " " << c.method << " k " << c.checkpoints
            << (c.keep_forward ? " (kept)" : "") << ": max rel. gradient error " << err << "\n";
}

INSTANTIATE_TEST_SUITE_P(DtypesMethodsCheckpoints, CudaExact,
                         ::testing::Values(ExactCase{torch::kFloat64, Method::RK2, 0, false},
                                           ExactCase{torch::kFloat64, Method::RK4, 0, false},
                                           ExactCase{torch::kFloat64, Method::RK2, 2, false},
                                           ExactCase{torch::kFloat64, Method::RK2, 2, true},
                                           ExactCase{torch::kFloat32, Method::RK2, 0, false},
                                           ExactCase{torch::kFloat32, Method::Euler, 1, false},
                                           ExactCase{torch::kFloat32, Method::RK4, 2, false},
                                           ExactCase{torch::kFloat32, Method::RK2, 2, true}),
                         [](const ::testing::TestParamInfo<ExactCase>& i) {
                           return std::string(i.param.dtype == torch::kFloat64 ? "f64_" : "f32_") +
                                  anode::to_string(i.param.method) + "_k" +
                                  std::to_string(i.param.checkpoints) +
                                  (i.param.keep_forward ? "_kept" : "");
                         });

// The Adjoint on the device: the same gradient as on the CPU (to round-off), and, as there, not the
// discrete gradient but converging to it on a smooth right-hand side.
namespace {

std::vector<torch::Tensor> mlp_grads(torch::Device device, Method m, int64_t steps, Gradient g) {
  torch::manual_seed(21);
  anode::ODEBlock<MLPImpl> block(MLP(4, 16, "tanh"),
                                 anode::ODEBlockOptions().method(m).steps(steps).gradient(g));
  block->to(device, torch::kDouble);
  auto x = torch::randn({8, 4}, torch::kDouble).to(device).requires_grad_(true);
  std::vector<torch::Tensor> in{x};
  for (const auto& p : block->parameters()) in.push_back(p);
  auto g_out = grads_of(block->forward(x).pow(2).sum(), in);
  for (auto& t : g_out) t = t.to(torch::kCPU);
  return g_out;
}

}  // namespace

TEST_F(Cuda, AdjointMatchesTheCpuAndConvergesOnSmoothRhs) {
  EXPECT_LE(max_rel_err(mlp_grads(device, Method::RK4, 8, Gradient::Adjoint),
                        mlp_grads(torch::kCPU, Method::RK4, 8, Gradient::Adjoint)),
            1e-10);
  std::vector<double> errors;
  for (int64_t steps : {2, 8, 32}) {
    errors.push_back(max_rel_err(mlp_grads(device, Method::RK2, steps, Gradient::Adjoint),
                                 mlp_grads(device, Method::RK2, steps, Gradient::Backprop)));
  }
  std::cout << "Adjoint vs Backprop on CUDA, RK2, N_t 2/8/32: " << errors[0] << " " << errors[1]
            << " " << errors[2] << "\n";
  EXPECT_GT(errors[0], 1e-12);          // not the discrete gradient...
  EXPECT_LT(errors[1], errors[0] / 3);  // ...but it converges to it
  EXPECT_LT(errors[2], errors[1] / 3);
  EXPECT_LT(errors[2], 5e-2);
}

// ---------------------------------------------------------------------------------------------
// 2. CUDA autocast (fp16, bf16): Anode gives Backprop's gradient under the same autocast.

namespace {

/// A user's CUDA autocast region.
struct CudaAutocast : ScopedAutocast {
  explicit CudaAutocast(c10::ScalarType dtype) : ScopedAutocast(c10::DeviceType::CUDA, dtype) {}
};

/// conv-BN-ReLU-conv on an fp32 state: under autocast the convs run in fp16/bf16 and return it.
struct AmpConvImpl : torch::nn::Module {
  explicit AmpConvImpl(bool cast_back = false)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).padding(1)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(4))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).padding(1)))),
        cast_back(cast_back) {}
  torch::Tensor forward(torch::Tensor x) {
    autocast_seen.push_back(anode::detail::AutocastState::capture().cuda_enabled);
    auto y = conv2(torch::relu(bn(conv1(x))));
    return cast_back ? y.to(x.scalar_type()) : y;
  }
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn;
  torch::nn::Conv2d conv2;
  bool cast_back;
  std::vector<bool> autocast_seen;
};
TORCH_MODULE(AmpConv);

anode::ODEBlock<AmpConvImpl> amp_block(const anode::ODEBlockOptions& o, torch::Device device,
                                       bool cast_back = false) {
  torch::manual_seed(3);
  anode::ODEBlock<AmpConvImpl> block(AmpConv(cast_back), o);
  block->to(device);
  return block;
}

// Gradients of a block's parameters and input for a sum-of-squares loss, forward under CUDA
// autocast in `dtype` and backward outside it (as a training loop does with a GradScaler).
std::vector<torch::Tensor> amp_grads(anode::ODEBlock<AmpConvImpl>& block, const torch::Tensor& x0,
                                     c10::ScalarType dtype) {
  auto x = x0.clone().requires_grad_(true);
  torch::Tensor y;
  {
    CudaAutocast amp(dtype);
    y = block->forward(x);
  }
  EXPECT_EQ(y.scalar_type(), torch::kFloat);  // the state keeps its dtype
  std::vector<torch::Tensor> inputs = block->parameters();
  inputs.push_back(x);
  return grads_of((y * y).sum(), inputs);
}

}  // namespace

struct AmpCase {
  c10::ScalarType dtype;
  Method method;
  int64_t checkpoints;
  bool cast_back;
};
void PrintTo(const AmpCase& c, std::ostream* os) {
  *os << c.dtype << " " << c.method << " k=" << c.checkpoints << (c.cast_back ? " cast back" : "");
}
class CudaAutocastExact : public Cuda, public ::testing::WithParamInterface<AmpCase> {};

TEST_P(CudaAutocastExact, AnodeEqualsBackpropUnderTheSameAutocast) {
  const auto c = GetParam();
  torch::manual_seed(0);
  auto x = torch::randn({2, 4, 8, 8}, torch::dtype(torch::kFloat).device(device));
  auto ref = amp_block(opts(c.method, 4, Gradient::Backprop), device, c.cast_back);
  auto blk = amp_block(opts(c.method, 4).checkpoints(c.checkpoints), device, c.cast_back);
  const auto want = amp_grads(ref, x, c.dtype);
  const auto got = amp_grads(blk, x, c.dtype);
  for (const auto& g : got) ASSERT_TRUE(g.defined());
  const double err = max_rel_err(got, want);
  EXPECT_LE(err, 1e-6);
  // Every evaluation, forward and recompute, ran under CUDA autocast; it is off again afterwards.
  ASSERT_FALSE(blk->func()->autocast_seen.empty());
  for (bool on : blk->func()->autocast_seen) EXPECT_TRUE(on);
  EXPECT_FALSE(anode::detail::AutocastState::capture().cuda_enabled);
  EXPECT_TRUE(same_state(*blk, *ref, 1e-6));
  std::cout << c.dtype << " " << c.method << " k " << c.checkpoints << ": max rel. error " << err
            << "\n";
}

INSTANTIATE_TEST_SUITE_P(HalfAndBFloat16, CudaAutocastExact,
                         ::testing::Values(AmpCase{torch::kHalf, Method::RK2, 0, false},
                                           AmpCase{torch::kHalf, Method::RK4, 0, false},
                                           AmpCase{torch::kHalf, Method::RK2, 2, false},
                                           AmpCase{torch::kHalf, Method::RK2, 0, true},
                                           AmpCase{torch::kBFloat16, Method::RK2, 0, false},
                                           AmpCase{torch::kBFloat16, Method::Euler, 1, false},
                                           AmpCase{torch::kBFloat16, Method::RK4, 2, false},
                                           AmpCase{torch::kBFloat16, Method::RK2, 2, true}),
                         [](const ::testing::TestParamInfo<AmpCase>& i) {
                           return std::string(i.param.dtype == torch::kHalf ? "fp16_" : "bf16_") +
                                  anode::to_string(i.param.method) + "_k" +
                                  std::to_string(i.param.checkpoints) +
                                  (i.param.cast_back ? "_castback" : "");
                         });

// Backward inside the autocast region (C++ loops often switch autocast on for the whole step):
// the graph-free forward must leave no cast without a graph in the weight cache.
TEST_F(Cuda, AutocastBackwardInsideTheRegionStillTrainsWeights) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 4, 8, 8}, torch::dtype(torch::kFloat).device(device));
  for (int64_t k : {0, 2}) {
    auto ref = amp_block(opts(Method::RK2, 4, Gradient::Backprop), device);
    auto blk = amp_block(opts(Method::RK2, 4).checkpoints(k), device);
    std::vector<std::vector<torch::Tensor>> g;
    for (auto* b : {&ref, &blk}) {
      CudaAutocast amp(torch::kHalf);
      auto y = (*b)->forward(x);
      g.push_back(grads_of((y * y).sum(), (*b)->parameters()));
    }
    for (const auto& t : g[1]) ASSERT_TRUE(t.defined()) << "k " << k;
    EXPECT_LE(max_rel_err(g[1], g[0]), 1e-6) << "k " << k;
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Peak memory on the device (the CUDA caching allocator's statistics, through PeakScope):
// Backprop grows with L * N_t; Anode with N_t by one block's trajectory and with L only by the
// stored block inputs; binomial checkpointing is flat in N_t; inference stores nothing per step.

namespace {

constexpr int64_t kBatch = 8, kChannels = 16, kSize = 32;
constexpr int64_t kStateBytes = kBatch * kChannels * kSize * kSize * 4;  // float32: 512 KiB

struct ChainImpl : torch::nn::Module {
  ChainImpl(int64_t blocks, const anode::ODEBlockOptions& o) {
    for (int64_t i = 0; i < blocks; ++i) {
      odes.push_back(register_module(
          "ode" + std::to_string(i),
          anode::ODEBlock<ConvRHSImpl>(ConvRHS(kChannels, 0.0, /*batchnorm=*/false), o)));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& b : odes) x = b->forward(x);
    return x;
  }
  std::vector<anode::ODEBlock<ConvRHSImpl>> odes;
};
TORCH_MODULE(Chain);

/// Peak CUDA bytes above the baseline of one training step (forward + backward) of L blocks.
int64_t cuda_step_peak(torch::Device device, int64_t blocks, int64_t steps, Gradient g,
                       int64_t k = 0, bool grad = true) {
  torch::manual_seed(0);
  Chain net(blocks, opts(Method::Euler, steps, g).checkpoints(g == Gradient::Anode ? k : 0));
  net->to(device);
  auto x = torch::randn({kBatch, kChannels, kSize, kSize}, torch::device(device));
  // One untimed step first: cuDNN's lazy initialisation is not the step's memory.
  net->forward(x).sum().backward();
  net->zero_grad();
  torch::cuda::synchronize();
  anode::memory::PeakScope scope(device);
  if (grad) {
    net->forward(x).sum().backward();
  } else {
    torch::NoGradGuard no_grad;
    auto y = net->forward(x);
  }
  torch::cuda::synchronize();
  return scope.peak_bytes();
}

}  // namespace

TEST_F(Cuda, PeakScopeMeasuresDeviceTensors) {
  // The caching allocator counts whole blocks: 4 MiB, or a little more if it hands out a cached
  // block without splitting it (less than 1 MiB more, by its splitting rule).
  constexpr int64_t kMiB = 1 << 20;
  anode::memory::PeakScope scope(device);
  {
    auto t = torch::empty({kMiB}, torch::dtype(torch::kFloat).device(device));  // 4 MiB
    EXPECT_GE(scope.current_bytes(), 4 * kMiB);
    EXPECT_LT(scope.current_bytes(), 5 * kMiB);
  }
  EXPECT_EQ(scope.current_bytes(), 0);
  EXPECT_GE(scope.peak_bytes(), 4 * kMiB);
  EXPECT_LT(scope.peak_bytes(), 5 * kMiB);
  EXPECT_GE(anode::memory::cuda_peak_bytes(0), 4 * kMiB);
}

TEST_F(Cuda, BackpropMemoryGrowsWithBlocksTimesSteps) {
  const int64_t p1_4 = cuda_step_peak(device, 1, 4, Gradient::Backprop);
  const int64_t p1_16 = cuda_step_peak(device, 1, 16, Gradient::Backprop);
  const int64_t p4_16 = cuda_step_peak(device, 4, 16, Gradient::Backprop);
  std::cout << "Backprop: L 1 N_t 4 " << p1_4 << " B, L 1 N_t 16 " << p1_16 << " B, L 4 N_t 16 "
            << p4_16 << " B; state " << kStateBytes << " B\n";
  EXPECT_GE(p1_16 - p1_4, 12 * 2 * kStateBytes);  // >= 2 states per step (ReLU out, new z)
  EXPECT_GT(static_cast<double>(p4_16) / p1_16, 3.0);
}

TEST_F(Cuda, AnodeMemoryIsBlockInputsPlusOneTrajectory) {
  for (int64_t steps : {4, 16}) {
    const int64_t backprop_one_block = cuda_step_peak(device, 1, steps, Gradient::Backprop);
    for (int64_t blocks : {1, 2, 4}) {
      const int64_t anode_peak = cuda_step_peak(device, blocks, steps, Gradient::Anode);
      const int64_t backprop_peak = cuda_step_peak(device, blocks, steps, Gradient::Backprop);
      SCOPED_TRACE("L " + std::to_string(blocks) + " N_t " + std::to_string(steps));
      std::cout << "L " << blocks << " N_t " << steps << ": anode " << anode_peak << " B, backprop "
                << backprop_peak << " B, state " << kStateBytes << " B\n";
      // O(L) + O(N_t): the stored block inputs plus one block's trajectory (Backprop's peak for
      // a single block), within 1.2x.
      EXPECT_LE(anode_peak, 1.2 * (blocks * kStateBytes + backprop_one_block));
      if (blocks == 4 && steps == 16) {
        EXPECT_LT(anode_peak, 0.4 * backprop_peak);
      }
    }
  }
  // Adding blocks costs Anode about one state each, not a trajectory.
  const int64_t a1 = cuda_step_peak(device, 1, 16, Gradient::Anode);
  const int64_t a4 = cuda_step_peak(device, 4, 16, Gradient::Anode);
  EXPECT_LE(a4 - a1, 3 * 3 * kStateBytes);
}

TEST_F(Cuda, BinomialMemoryIsFlatInStepsAndInferenceStoresNothing) {
  const int64_t p8 = cuda_step_peak(device, 2, 8, Gradient::Anode, 4);
  const int64_t p64 = cuda_step_peak(device, 2, 64, Gradient::Anode, 4);
  const int64_t whole64 = cuda_step_peak(device, 2, 64, Gradient::Anode, 0);
  std::cout << "k 4: N_t 8 " << p8 << " B, N_t 64 " << p64 << " B; whole block N_t 64 " << whole64
            << " B\n";
  EXPECT_LE(p64, 1.2 * p8);
  EXPECT_LT(p64, 0.5 * whole64);
  const int64_t inf2 = cuda_step_peak(device, 4, 2, Gradient::Anode, 0, /*grad=*/false);
  const int64_t inf32 = cuda_step_peak(device, 4, 32, Gradient::Anode, 0, /*grad=*/false);
  EXPECT_LE(inf32, inf2 + kStateBytes);
}

// ---------------------------------------------------------------------------------------------
// 4. No host-device synchronisation in the step loop (docs/design.md: "only check_finite(true)
// syncs").
// Two mechanical checks, both needing CUDA headers:
//  - c10's sync debug mode set to error: every synchronising call LibTorch makes (.item(), a
//    blocking device-to-host copy, a stream or device synchronize) raises;
//  - CUDA graph capture of the graph-free forward: any synchronisation during a capture fails it.

#if defined(ANODE_WITH_CUDA)
namespace {

/// RAII: synchronising CUDA calls raise while it lives (torch.cuda.set_sync_debug_mode("error")).
class SyncsAreErrors {
 public:
  SyncsAreErrors() : saved_(c10::cuda::warning_state().get_sync_debug_mode()) {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  }
  ~SyncsAreErrors() { c10::cuda::warning_state().set_sync_debug_mode(saved_); }
  SyncsAreErrors(const SyncsAreErrors&) = delete;
  SyncsAreErrors& operator=(const SyncsAreErrors&) = delete;

 private:
  c10::cuda::SyncDebugMode saved_;
};

/// The message of the error a synchronising call raised inside `f`; empty when none did.
template <typename F>
std::string sync_error(F&& f) {
  SyncsAreErrors guard;
  return error_message(std::forward<F>(f));
}

anode::ODEBlock<ConvRHSImpl> conv_block(const anode::ODEBlockOptions& o, torch::Device device,
                                        double dropout) {
  torch::manual_seed(7);
  anode::ODEBlock<ConvRHSImpl> block(ConvRHS(8, dropout), o);
  block->to(device);
  return block;
}

}  // namespace

TEST_F(Cuda, SyncDebugModeCatchesASync) {
  // The detector works: a .item() and check_finite(true) (one sync per step, documented) raise.
  auto x = torch::randn({16}, torch::device(device));
  EXPECT_FALSE(sync_error([&] { (void)x.sum().item<float>(); }).empty());
  auto block = conv_block(opts(Method::RK2, 2).check_finite(true), device, 0.0);
  auto z = torch::randn({2, 8, 8, 8}, torch::device(device));
  torch::NoGradGuard no_grad;
  (void)block->forward(z);  // warm-up outside the guard
  EXPECT_FALSE(sync_error([&] { (void)block->forward(z); }).empty());
}

TEST_F(Cuda, GraphFreeStepLoopMakesNoHostSync) {
  for (auto m : all_methods()) {
    auto block = conv_block(opts(m, 8), device, 0.2);  // BatchNorm in train(), dropout
    auto z = torch::randn({4, 8, 16, 16}, torch::device(device));
    torch::NoGradGuard no_grad;
    (void)block->forward(z);  // warm-up: cuDNN's lazy initialisation is allowed to sync
    EXPECT_EQ(sync_error([&] { (void)block->forward(z); }), "") << anode::to_string(m);
    // The Stepper's integrate itself, the loop every gradient strategy calls.
    const anode::Stepper stepper(anode::System::of_module(block->func()).rhs, anode::tableau(m),
                                 anode::TimeGrid{0.0, 1.0, 8});
    EXPECT_EQ(sync_error([&] { (void)stepper.integrate(z, 0, 8); }), "") << anode::to_string(m);
  }
}

TEST_F(Cuda, AnodeForwardPassMakesNoHostSync) {
  // With autograd on, Anode's forward runs the block graph-free and saves the input, the CUDA
  // generator's state, the BatchNorm buffers and the output's fingerprint: all on the device or
  // host-side bookkeeping, no synchronisation. (Its backward syncs once per block, to compare the
  // recompute's fingerprint with the forward's: verify_recompute.)
  struct Case {
    int64_t k;
    bool keep;
  };
  for (const Case c : {Case{0, false}, Case{2, false}, Case{2, true}}) {
    auto block = conv_block(opts(Method::RK2, 8).checkpoints(c.k).keep_forward_checkpoints(c.keep),
                            device, 0.2);
    auto x = torch::randn({4, 8, 16, 16}, torch::device(device)).requires_grad_(true);
    block->forward(x).sum().backward();  // warm-up
    torch::Tensor y;
    EXPECT_EQ(sync_error([&] { y = block->forward(x); }), "") << "k " << c.k << " kept " << c.keep;
    ASSERT_TRUE(y.defined());
    y.sum().backward();  // the gradient still comes out (outside the guard)
    EXPECT_TRUE(x.grad().defined());
  }
}

TEST_F(Cuda, AnodeTrainingStepWithoutVerifyMakesNoHostSync) {
  // With verify_recompute(false) the backward has no reason to sync either.
  for (int64_t k : {0, 2}) {
    auto block =
        conv_block(opts(Method::RK2, 8).checkpoints(k).verify_recompute(false), device, 0.2);
    auto x = torch::randn({4, 8, 16, 16}, torch::device(device)).requires_grad_(true);
    block->forward(x).sum().backward();  // warm-up
    EXPECT_EQ(sync_error([&] { block->forward(x).sum().backward(); }), "") << "k " << k;
  }
}

TEST_F(Cuda, GraphFreeForwardCapturesInACudaGraph) {
  // Eval mode and no dropout: a deterministic forward, so the replay must equal the eager run.
  auto block = conv_block(opts(Method::RK4, 8), device, 0.0);
  block->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({4, 8, 16, 16}, torch::device(device));
  const torch::Tensor eager = block->forward(x);
  auto x2 = torch::randn({4, 8, 16, 16}, torch::device(device));
  const torch::Tensor eager2 = block->forward(x2);
  torch::cuda::synchronize();

  at::cuda::CUDAGraph graph;
  torch::Tensor captured;
  std::string failure;
  {
    // Capture needs a side stream; warm up on it first (cuDNN handles and workspaces).
    c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard on_stream(stream);
    for (int i = 0; i < 3; ++i) (void)block->forward(x);
    stream.synchronize();
    graph.capture_begin();
    failure = error_message([&] { captured = block->forward(x); });
    const std::string end_failure = error_message([&] { graph.capture_end(); });
    if (failure.empty()) failure = end_failure;
  }
  ASSERT_EQ(failure, "") << "capturing the graph-free forward failed: a host sync in the loop?";
  graph.replay();
  torch::cuda::synchronize();
  EXPECT_LE(rel_err(captured, eager), 1e-6);
  // The graph is the computation, not its result: new input, new output.
  x.copy_(x2);
  graph.replay();
  torch::cuda::synchronize();
  EXPECT_LE(rel_err(captured, eager2), 1e-6);
}

#else  // a LibTorch without CUDA: the checks above cannot even be compiled

TEST_F(Cuda, SyncChecksNeedACudaBuild) {
  GTEST_SKIP() << "LibTorch has no CUDA (ANODE_WITH_CUDA undefined): sync and graph checks off";
}

#endif

// ------------------------------------------------------------------------------------------------
// The counting CUDA meter and anode::MemoryPlan on the device: the budget is measured on the meter
// (the tensors' bytes, as on the CPU), every step stays within it, the gradient is Backprop's.
// Installing the meter is process-wide and cannot be undone: the tests above that read the
// allocator's statistics run first, and the error for a plan without the meter is checked only
// while it is not installed.

#if defined(ANODE_CUDA_METER)

TEST_F(Cuda, MemoryPlanWithoutTheCudaMeterSaysWhatToCall) {
  if (anode::memory::cuda_meter_installed()) GTEST_SKIP() << "the CUDA meter is installed already";
  auto plan = std::make_shared<anode::MemoryPlan>(int64_t{1} << 30);
  auto block =
      anode::ODEBlock<MLPImpl>(MLP(4, 8), anode::ODEBlockOptions().steps(2).memory_plan(plan));
  block->to(device);
  const auto x = torch::randn({3, 4}, torch::device(device));
  EXPECT_TRUE(throws_mentioning([&] { block->forward(x).sum().backward(); },
                                {"install_cuda_meter", "cuda"}));
}

TEST_F(Cuda, CudaMeterCountsTensorBytes) {
  namespace mem = anode::memory;
  ASSERT_NO_THROW(mem::install_cuda_meter());
  ASSERT_TRUE(mem::cuda_meter_installed());
  ASSERT_NO_THROW(mem::install_cuda_meter());  // once per process: again is a no-op
  const int dev = 0;
  const int64_t before = mem::cuda_meter_current_bytes(dev);
  mem::reset_cuda_meter_peak(dev);
  {
    auto a = torch::empty({1000}, torch::device(device).dtype(torch::kFloat));   // 4000 bytes
    auto b = torch::empty({3, 5}, torch::device(device).dtype(torch::kDouble));  // 120 bytes
    EXPECT_EQ(mem::cuda_meter_current_bytes(dev) - before, 4120);
    a.reset();
    EXPECT_EQ(mem::cuda_meter_current_bytes(dev) - before, 120);
  }
  EXPECT_EQ(mem::cuda_meter_current_bytes(dev), before);
  EXPECT_EQ(mem::cuda_meter_peak_bytes(dev) - before, 4120);
  // A PeakScope opened now reads the meter; its peak is the tensors' bytes, not the blocks'.
  mem::PeakScope scope(device);
  EXPECT_TRUE(scope.counted());
  { auto c = torch::empty({256 + 1}, torch::device(device).dtype(torch::kFloat)); }
  EXPECT_EQ(scope.peak_bytes(), 4 * 257);
  EXPECT_EQ(scope.current_bytes(), 0);
}

namespace {

/// stem -> 4 ODE blocks (conv-BN-ReLU-conv, RK2, 4 steps) -> head, in float64 on the device.
struct PlannedNetImpl : torch::nn::Module {
  explicit PlannedNetImpl(const anode::ODEBlockOptions& o) {
    stem = register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    head = register_module("head", torch::nn::Linear(8 * 8 * 8, 10));
    for (int i = 0; i < 4; ++i)
      blocks.push_back(register_module("block" + std::to_string(i),
                                       anode::ODEBlock<ConvRHSImpl>(ConvRHS(8), o)));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = stem(x);
    for (auto& b : blocks) x = b->forward(x);
    return head(x.flatten(1)).pow(2).mean();
  }
  torch::nn::Conv2d stem{nullptr};
  torch::nn::Linear head{nullptr};
  std::vector<anode::ODEBlock<ConvRHSImpl>> blocks;
};
TORCH_MODULE(PlannedNet);

PlannedNet planned_net(const anode::ODEBlockOptions& o, const torch::Device& device) {
  torch::manual_seed(11);
  PlannedNet net(o);
  net->to(device, torch::kDouble);
  return net;
}

struct PlannedStep {
  int64_t peak = 0;
  std::vector<torch::Tensor> grads;
};
PlannedStep planned_step(PlannedNet& net, const torch::Tensor& x, const torch::Device& device) {
  net->zero_grad();
  PlannedStep r;
  {
    anode::memory::PeakScope scope(device);
    torch::manual_seed(5);
    net->forward(x).backward();
    r.peak = scope.peak_bytes();
  }
  for (const auto& p : net->parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

}  // namespace

TEST_F(Cuda, MemoryPlanStaysWithinEveryBudgetAndIsExact) {
  anode::memory::install_cuda_meter();
  const auto base = anode::ODEBlockOptions().method(Method::RK2).steps(4);
  constexpr int kSteps = 4;
  std::vector<torch::Tensor> batches;  // made before any step, as a loaded dataset's
  for (int s = 0; s < kSteps; ++s)
    batches.push_back(torch::randn({4, 3, 8, 8}, torch::device(device).dtype(torch::kDouble)));
  auto ref = planned_net(base.with_gradient(Gradient::Backprop), device);
  std::vector<PlannedStep> want;
  int64_t backprop_peak = 0;
  for (int s = 0; s < kSteps; ++s) {
    want.push_back(planned_step(ref, batches[static_cast<std::size_t>(s)], device));
    backprop_peak = std::max(backprop_peak, want.back().peak);
  }
  int64_t smallest = 0;
  {
    auto probe = std::make_shared<anode::MemoryPlan>(int64_t{1} << 40);
    auto net = planned_net(anode::ODEBlockOptions(base).memory_plan(probe), device);
    planned_step(net, batches[0], device);
    smallest = probe->cheapest_peak_bytes();
    std::cout << "[ CUDA plan ] Backprop's peak " << backprop_peak << " bytes, the cheapest plan's "
              << smallest << "\n";
  }
  ASSERT_GT(smallest, 0);
  ASSERT_LT(smallest, backprop_peak);
  for (const int64_t budget : {smallest, (smallest + backprop_peak) / 2, backprop_peak}) {
    auto plan = std::make_shared<anode::MemoryPlan>(budget);
    auto net = planned_net(anode::ODEBlockOptions(base).memory_plan(plan), device);
    for (int s = 0; s < kSteps; ++s) {
      PlannedStep got;
      ASSERT_NO_THROW(got = planned_step(net, batches[static_cast<std::size_t>(s)], device))
          << "budget " << budget << ", step " << s << "\n"
          << *plan;
      EXPECT_LE(got.peak, budget) << "budget " << budget << ", step " << s << "\n" << *plan;
      EXPECT_LT(max_rel_err(got.grads, want[static_cast<std::size_t>(s)].grads), 1e-12)
          << "budget " << budget << ", step " << s;
    }
    std::cout << "[ CUDA plan ] budget " << budget << ":\n" << *plan << "\n";
    EXPECT_EQ(plan->calibrations(), 1) << *plan;
    EXPECT_EQ(plan->overshoots(), 0) << *plan;
    if (budget == backprop_peak) {
      for (const auto& d : plan->decisions())
        EXPECT_EQ(d.choice, anode::plan::Choice::Keep) << *plan;
    }
  }
  // Too small for any plan: a clear error naming the bytes needed, and the next step with a larger
  // plan works.
  auto tiny = std::make_shared<anode::MemoryPlan>(smallest / 2);
  auto net = planned_net(anode::ODEBlockOptions(base).memory_plan(tiny), device);
  planned_step(net, batches[0], device);  // the calibration step measures
  EXPECT_TRUE(throws_mentioning([&] { planned_step(net, batches[1], device); },
                                {std::to_string(smallest / 2), "too small"}));
}

TEST_F(Cuda, MemoryPlanSharedByCpuAndCudaBlocksIsAnError) {
  anode::memory::install_cpu_meter();
  anode::memory::install_cuda_meter();
  auto plan = std::make_shared<anode::MemoryPlan>(int64_t{1} << 30);
  const auto o = anode::ODEBlockOptions().steps(2).memory_plan(plan);
  auto on_cpu = anode::ODEBlock<MLPImpl>(MLP(4, 8), o);
  auto on_gpu = anode::ODEBlock<MLPImpl>(MLP(4, 8), o);
  on_gpu->to(device);
  on_cpu->forward(torch::randn({3, 4})).sum().backward();
  EXPECT_TRUE(throws_mentioning(
      [&] {
        on_gpu->forward(torch::randn({3, 4}, torch::device(device))).sum().backward();
      },
      {"one plan is shared by blocks on", "cuda"}));
}

#else

TEST_F(Cuda, MemoryPlanNeedsTheCudaMeter) {
  GTEST_SKIP() << "the CUDA meter needs LibTorch 2.1+ with CUDA (ANODE_CUDA_METER undefined)";
}

#endif
