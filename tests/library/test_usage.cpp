// Ordinary LibTorch use of ODE blocks: optimizers and zero_grad, inference under
// NoGradGuard and in eval(), BatchNorm buffers in train(), save/load, inputs without grad, frozen
// parameters, composition (register_module, Sequential, .to, clone), printing, time-dependent
// right-hand sides, higher-order gradients, the caller's RNG stream, and CUDA where there is one.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace test_usage {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

using MLPBlock = anode::ODEBlock<MLPImpl>;
using ConvBlock = anode::ODEBlock<ConvRHSImpl>;

// A float64 MLP block built from `seed`: two calls with the same seed give identical twins.
MLPBlock mlp_block(uint64_t seed, const anode::ODEBlockOptions& o, int64_t dim = 3,
                   int64_t hidden = 8) {
  torch::manual_seed(seed);
  MLPBlock block(MLP(dim, hidden), o);
  block->to(torch::kDouble);
  return block;
}

// A float64 conv-BN-ReLU(-dropout)-conv block with 3 channels, built from `seed`.
ConvBlock conv_block(uint64_t seed, const anode::ODEBlockOptions& o, double dropout = 0.0) {
  torch::manual_seed(seed);
  ConvBlock block(ConvRHS(3, dropout), o);
  block->to(torch::kDouble);
  return block;
}

// The block's parameters' .grad, in parameters() order.
std::vector<torch::Tensor> param_grads(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.grad());
  return out;
}

// SGD (momentum 0.9, zero_grad every step) on an MSE regression; returns the loss of each step.
// The RNG is seeded first, so twins draw the same dropout masks.
template <typename Block>
std::vector<double> sgd_steps(Block& block, const torch::Tensor& x, const torch::Tensor& target,
                              int n, uint64_t seed) {
  torch::optim::SGD opt(block->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::manual_seed(seed);
  std::vector<double> losses;
  for (int i = 0; i < n; ++i) {
    opt.zero_grad();
    torch::Tensor loss = torch::mse_loss(block->forward(x), target);
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

// ---------------------------------------------------------------------------------------------
// Optimizers.

TEST_F(Seeded, SGDStepsMatchBackpropTwin) {
  auto x = torch::randn({16, 3}, torch::kDouble);
  auto target = torch::sin(x).flip(1);
  for (auto m : all_methods()) {
    auto a = mlp_block(1, opts(m, 4, Gradient::Anode));
    auto b = mlp_block(1, opts(m, 4, Gradient::Backprop));
    auto untrained = mlp_block(1, opts(m, 4));
    ASSERT_TRUE(same_state(*a, *b));
    const auto la = sgd_steps(a, x, target, 3, 5);
    const auto lb = sgd_steps(b, x, target, 3, 5);
    EXPECT_TRUE(same_state(*a, *b, 1e-12)) << anode::to_string(m);
    EXPECT_FALSE(same_state(*a, *untrained, 1e-6)) << "the steps changed nothing";
    for (std::size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-12 * lb[i]);
    EXPECT_LT(la[1], la[0]) << anode::to_string(m);
    EXPECT_LT(la[2], la[1]) << anode::to_string(m);
  }
}

// The same with BatchNorm and dropout in training mode: parameters and every buffer match.
TEST_F(Seeded, SGDStepsWithBatchNormAndDropoutMatchBackpropTwin) {
  auto x = torch::randn({4, 3, 5, 5}, torch::kDouble);
  auto target = torch::randn({4, 3, 5, 5}, torch::kDouble);
  for (auto m : {Method::Euler, Method::RK2}) {
    auto a = conv_block(2, opts(m, 2, Gradient::Anode), 0.3);
    auto b = conv_block(2, opts(m, 2, Gradient::Backprop), 0.3);
    const auto la = sgd_steps(a, x, target, 3, 9);
    const auto lb = sgd_steps(b, x, target, 3, 9);
    EXPECT_TRUE(same_state(*a, *b, 1e-12)) << anode::to_string(m);
    for (std::size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-12 * lb[i]);
    EXPECT_LT(la[2], la[0]);
  }
}

// backward() accumulates into .grad like any module's, and zero_grad clears it.
TEST_F(Seeded, GradientsAccumulateAndZeroGradClears) {
  auto a = mlp_block(3, opts(Method::RK2, 3, Gradient::Anode));
  auto b = mlp_block(3, opts(Method::RK2, 3, Gradient::Backprop));
  auto x = torch::randn({5, 3}, torch::kDouble);
  auto step = [&](MLPBlock& block) { block->forward(x).pow(2).sum().backward(); };
  step(a);
  step(a);
  step(b);
  auto ga = param_grads(*a), gb = param_grads(*b);
  for (auto& g : gb) g = g * 2;
  EXPECT_LT(max_rel_err(ga, gb), 1e-12);
  torch::optim::SGD opt(a->parameters(), torch::optim::SGDOptions(0.1));
  opt.zero_grad();
  step(a);
  EXPECT_LT(max_rel_err(param_grads(*a), param_grads(*b)), 1e-12);
}

// backward(retain_graph=true) then backward() again: twice the gradient, buffers as Backprop's.
// With binomial checkpoints the first backward consumes the stored states; the second rebuilds
// them from the block input and must still replay dropout and leave the buffers alone.
TEST_F(Seeded, RetainGraphBackwardTwice) {
  for (int64_t k : {0, 1, 2}) {
    SCOPED_TRACE("checkpoints " + std::to_string(k));
    auto a = conv_block(4, opts(Method::RK2, 4, Gradient::Anode).checkpoints(k), 0.2);
    auto b = conv_block(4, opts(Method::RK2, 4, Gradient::Backprop), 0.2);
    auto x = torch::randn({3, 3, 4, 4}, torch::kDouble);
    for (auto* block : {&a, &b}) {
      torch::manual_seed(8);
      auto loss = (*block)->forward(x).pow(2).sum();
      loss.backward({}, /*retain_graph=*/true);
      loss.backward();
    }
    EXPECT_LT(max_rel_err(param_grads(*a), param_grads(*b)), 1e-12);
    EXPECT_TRUE(same_state(*a, *b, 1e-12));
    EXPECT_EQ(a->func()->bn->num_batches_tracked.item<int64_t>(), 8);  // 4 steps x 2 stages
  }
}

// One block used twice in a graph (shared weights): gradients sum over both uses as in Backprop.
TEST_F(Seeded, BlockUsedTwiceInOneGraph) {
  auto a = conv_block(5, opts(Method::Euler, 3, Gradient::Anode), 0.2);
  auto b = conv_block(5, opts(Method::Euler, 3, Gradient::Backprop), 0.2);
  auto x = torch::randn({2, 3, 4, 4}, torch::kDouble);
  std::vector<std::vector<torch::Tensor>> g;
  for (auto* block : {&a, &b}) {
    torch::manual_seed(8);
    auto xin = x.clone().requires_grad_(true);
    auto loss = (*block)->forward(torch::tanh((*block)->forward(xin))).pow(2).sum();
    std::vector<torch::Tensor> inputs{xin};
    for (const auto& p : (*block)->parameters()) inputs.push_back(p);
    g.push_back(grads_of(loss, inputs));
  }
  EXPECT_LT(max_rel_err(g[0], g[1]), 1e-12);
  EXPECT_TRUE(same_state(*a, *b, 1e-12));
  EXPECT_EQ(a->func()->bn->num_batches_tracked.item<int64_t>(), 6);
}

// The options are public and may change between calls: a graph already built keeps its own.
TEST_F(Seeded, OptionsChangedBetweenForwardAndBackward) {
  auto a = mlp_block(6, opts(Method::RK4, 4, Gradient::Anode));
  auto b = mlp_block(6, opts(Method::RK4, 4, Gradient::Backprop));
  auto x = torch::randn({4, 3}, torch::kDouble);
  auto loss_a = a->forward(x).pow(2).sum();
  a->options.steps(1).method(Method::Euler).t1(3.0);
  loss_a.backward();
  b->forward(x).pow(2).sum().backward();
  EXPECT_LT(max_rel_err(param_grads(*a), param_grads(*b)), 1e-12);
}

// Changing a parameter in place between forward and backward makes Backprop's gradient wrong, and
// autograd says so; the checkpointed modes must not silently return a gradient for other weights.
TEST_F(Seeded, InPlaceParameterChangeBeforeBackwardIsReported) {
  auto x = torch::randn({4, 3}, torch::kDouble);
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    auto block = mlp_block(7, opts(Method::RK2, 2, g));
    auto loss = block->forward(x).pow(2).sum();
    {
      torch::NoGradGuard no_grad;
      block->func()->fc1->weight.add_(0.5);
    }
    EXPECT_TRUE(throws_mentioning([&] { loss.backward(); }, {"modified by an inplace operation"}))
        << anode::to_string(g);
  }
}

// ---------------------------------------------------------------------------------------------
// Inference.

TEST_F(Seeded, NoGradInferenceHasNoGraphAndSameValues) {
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    for (auto m : all_methods()) {
      auto block = mlp_block(8, opts(m, 3, g));
      auto with_grad = block->forward(x);
      ASSERT_TRUE(with_grad.grad_fn() != nullptr);
      torch::Tensor y;
      {
        torch::NoGradGuard no_grad;
        y = block->forward(x);
      }
      EXPECT_TRUE(y.grad_fn() == nullptr);
      EXPECT_FALSE(y.requires_grad());
      EXPECT_TRUE(torch::equal(y, with_grad.detach())) << anode::to_string(g);
      {
        c10::InferenceMode inference;
        auto z = block->forward(x.detach());
        EXPECT_FALSE(z.requires_grad());
        EXPECT_TRUE(torch::equal(z, y));
      }
    }
  }
}

// Inference keeps nothing but the output alive, whatever N_t; Anode keeps O(1) (no trajectory)
// even with a graph; Backprop keeps its trajectory, which shows the measurement can see a graph.
TEST_F(Seeded, InferenceAndAnodeStoreNothingPerStep) {
  anode::memory::install_cpu_meter();
  auto x = torch::randn({64, 32}, torch::kDouble);
  const int64_t out_bytes = x.numel() * 8;
  auto live_bytes = [&](Gradient g, int64_t steps, bool no_grad, bool eval) {
    auto block = mlp_block(9, opts(Method::RK2, steps, g), 32, 64);
    if (eval) block->eval();
    const int64_t before = anode::memory::cpu_current_bytes();
    torch::Tensor y;
    if (no_grad) {
      torch::NoGradGuard guard;
      y = block->forward(x);
    } else {
      y = block->forward(x);
    }
    return anode::memory::cpu_current_bytes() - before;
  };
  for (int64_t steps : {2, 16}) {
    for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
      EXPECT_LE(live_bytes(g, steps, /*no_grad=*/true, false), out_bytes + 1024)
          << anode::to_string(g) << " steps " << steps;
    }
  }
  // Anode in eval with grad on: the output plus a fixed amount (RNG state), not growing with N_t.
  const int64_t anode2 = live_bytes(Gradient::Anode, 2, false, true);
  const int64_t anode16 = live_bytes(Gradient::Anode, 16, false, true);
  EXPECT_LE(anode2, out_bytes + 16 * 1024);
  EXPECT_LE(anode16, anode2 + 1024);
  EXPECT_GT(live_bytes(Gradient::Backprop, 16, false, true), 16 * out_bytes);
}

// eval(): BatchNorm uses its running statistics (outputs are independent of the rest of the
// batch) and no buffer changes in forward or backward.
TEST_F(Seeded, EvalUsesRunningStatsAndLeavesBuffersUnchanged) {
  auto x = torch::randn({4, 3, 5, 5}, torch::kDouble);
  for (auto g : {Gradient::Backprop, Gradient::Anode, Gradient::Adjoint}) {
    auto block = conv_block(10, opts(Method::RK2, 2, g), 0.5);
    {
      torch::NoGradGuard no_grad;
      block->func()->bn->running_mean.copy_(torch::randn({3}, torch::kDouble));
      block->func()->bn->running_var.copy_(torch::rand({3}, torch::kDouble) + 0.5);
    }
    block->eval();
    std::vector<torch::Tensor> before;
    for (const auto& b : block->buffers()) before.push_back(b.clone());
    auto xin = x.clone().requires_grad_(true);
    auto y = block->forward(xin);
    y.pow(2).sum().backward();
    EXPECT_TRUE(xin.grad().defined());
    const auto after = block->buffers();
    ASSERT_EQ(after.size(), 3u);
    for (std::size_t i = 0; i < after.size(); ++i) {
      EXPECT_TRUE(torch::equal(after[i], before[i])) << anode::to_string(g) << " buffer " << i;
    }
    auto y0 = block->forward(x.narrow(0, 0, 1));
    EXPECT_LT(rel_err(y0, y.narrow(0, 0, 1)), 1e-12);
    // In train() the same comparison differs (batch statistics), so the check above means
    // something.
    block->train();
    torch::NoGradGuard no_grad;
    block->func()->p = 0.0;
    EXPECT_GT(rel_err(block->forward(x.narrow(0, 0, 2)).narrow(0, 0, 1),
                      block->forward(x).narrow(0, 0, 1)),
              1e-6);
  }
}

// ---------------------------------------------------------------------------------------------
// train(): one step updates BatchNorm exactly as Backprop does, once per RHS evaluation of the
// forward solve (N_t * stages), not again in the recomputation.

struct BufferCase {
  Method method;
  int64_t steps;
  Gradient gradient;
  int64_t checkpoints;
  int64_t batches_tracked;
};
// Printed by GoogleTest in the case's description (instead of the struct's raw bytes).
void PrintTo(const BufferCase& c, std::ostream* os) {
  *os << anode::to_string(c.gradient) << ' ' << anode::to_string(c.method) << " N_t " << c.steps
      << " k " << c.checkpoints;
}

class TrainStepBuffers : public Seeded, public ::testing::WithParamInterface<BufferCase> {};

TEST_P(TrainStepBuffers, MatchBackpropTwin) {
  const auto c = GetParam();
  auto a = conv_block(11, opts(c.method, c.steps, c.gradient).checkpoints(c.checkpoints), 0.3);
  auto b = conv_block(11, opts(c.method, c.steps, Gradient::Backprop), 0.3);
  auto x = torch::randn({4, 3, 5, 5}, torch::kDouble);
  for (auto* block : {&a, &b}) {
    torch::optim::SGD opt((*block)->parameters(), torch::optim::SGDOptions(0.1));
    torch::manual_seed(3);
    opt.zero_grad();
    (*block)->forward(x).pow(2).mean().backward();
    opt.step();
  }
  auto& bn_a = *a->func()->bn;
  auto& bn_b = *b->func()->bn;
  EXPECT_EQ(bn_a.num_batches_tracked.item<int64_t>(), c.batches_tracked);
  EXPECT_EQ(bn_b.num_batches_tracked.item<int64_t>(), c.batches_tracked);
  EXPECT_LT(rel_err(bn_a.running_mean, bn_b.running_mean), 1e-12);
  EXPECT_LT(rel_err(bn_a.running_var, bn_b.running_var), 1e-12);
  if (c.gradient == Gradient::Anode) {
    EXPECT_TRUE(same_state(*a, *b, 1e-12));
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, TrainStepBuffers,
                         ::testing::Values(BufferCase{Method::Euler, 2, Gradient::Anode, 0, 2},
                                           BufferCase{Method::RK2, 2, Gradient::Anode, 0, 4},
                                           BufferCase{Method::RK4, 2, Gradient::Anode, 0, 8},
                                           BufferCase{Method::RK2, 4, Gradient::Anode, 1, 8},
                                           BufferCase{Method::Euler, 2, Gradient::Adjoint, 0, 2},
                                           BufferCase{Method::RK2, 2, Gradient::Adjoint, 0, 4}),
                         [](const ::testing::TestParamInfo<BufferCase>& info) {
                           const auto& c = info.param;
                           return std::string(anode::to_string(c.gradient)) + "_" +
                                  anode::to_string(c.method) + "_steps" + std::to_string(c.steps) +
                                  "_checkpoints" + std::to_string(c.checkpoints);
                         });

// Only a submodule in train() (the RHS root in eval): its statistics still update once per
// evaluation, as in Backprop, and the recomputation must not update them again.
TEST_F(Seeded, TrainingSubmoduleUnderEvalRootIsUpdatedOnce) {
  auto a = conv_block(12, opts(Method::RK2, 2, Gradient::Anode));
  auto b = conv_block(12, opts(Method::RK2, 2, Gradient::Backprop));
  auto x = torch::randn({4, 3, 5, 5}, torch::kDouble);
  for (auto* block : {&a, &b}) {
    (*block)->eval();
    (*block)->func()->bn->train();
    (*block)->forward(x).pow(2).mean().backward();
  }
  EXPECT_EQ(b->func()->bn->num_batches_tracked.item<int64_t>(), 4);
  EXPECT_EQ(a->func()->bn->num_batches_tracked.item<int64_t>(), 4);
  EXPECT_TRUE(same_state(*a, *b, 1e-12));
  EXPECT_LT(max_rel_err(param_grads(*a), param_grads(*b)), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Serialization.

TEST_F(Seeded, SaveLoadRoundTripOfABlock) {
  auto block = conv_block(13, opts(Method::RK2, 3));
  auto x = torch::randn({2, 3, 4, 4}, torch::kDouble);
  sgd_steps(block, x, torch::zeros_like(x), 1, 1);  // non-trivial parameters and buffers
  block->eval();
  const std::string path = ::testing::TempDir() + "anode_test_usage_block.pt";
  torch::save(block, path);
  auto loaded = conv_block(99, opts(Method::RK2, 3));
  ASSERT_FALSE(same_state(*block, *loaded));
  torch::load(loaded, path);
  std::remove(path.c_str());
  loaded->eval();
  EXPECT_TRUE(same_state(*block, *loaded));
  EXPECT_EQ(loaded->func()->bn->num_batches_tracked.item<int64_t>(), 6);  // 3 steps x 2 stages
  EXPECT_TRUE(torch::equal(block->forward(x), loaded->forward(x)));
}

TEST_F(Seeded, SaveLoadRoundTripInsideSequential) {
  auto make = [](uint64_t seed) {
    torch::manual_seed(seed);
    torch::nn::Sequential seq(torch::nn::Linear(4, 3), MLPBlock(MLP(3, 6), opts(Method::RK4, 2)),
                              torch::nn::Functional([](torch::Tensor t) { return torch::tanh(t); }),
                              torch::nn::Linear(3, 2));
    seq->to(torch::kDouble);
    return seq;
  };
  auto seq = make(14);
  auto other = make(15);
  auto x = torch::randn({5, 4}, torch::kDouble);
  ASSERT_FALSE(torch::equal(seq->forward(x), other->forward(x)));
  std::stringstream stream;
  torch::save(seq, stream);
  torch::load(other, stream);
  EXPECT_TRUE(same_state(*seq, *other));
  EXPECT_TRUE(torch::equal(seq->forward(x), other->forward(x)));
  // The loaded model trains: Anode gradients match Backprop's.
  auto loss = other->forward(x).sum();
  auto g_anode = grads_of(loss, other->parameters());
  other[1]->as<anode::ODEBlockImpl<MLPImpl>>()->options.gradient(Gradient::Backprop);
  auto g_backprop = grads_of(other->forward(x).sum(), other->parameters());
  EXPECT_LT(max_rel_err(g_anode, g_backprop), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Inputs without grad and frozen parameters.

TEST_F(Seeded, InputWithoutGradStillTrainsParameters) {
  auto x = torch::randn({6, 3}, torch::kDouble);
  auto loss_of = [&](MLPBlock& block, const torch::Tensor& xin) {
    return block->forward(xin).pow(2).sum();
  };
  auto a = mlp_block(16, opts(Method::RK4, 8, Gradient::Anode));
  auto b = mlp_block(16, opts(Method::RK4, 8, Gradient::Backprop));
  auto adj = mlp_block(16, opts(Method::RK4, 8, Gradient::Adjoint));
  ASSERT_FALSE(x.requires_grad());
  auto ga = grads_of(loss_of(a, x), a->parameters());
  auto gb = grads_of(loss_of(b, x), b->parameters());
  EXPECT_LT(max_rel_err(ga, gb), 1e-12);
  // Adjoint: the same parameter gradients as with an input that requires grad, and close to the
  // exact ones on this smooth problem.
  auto g_adj = grads_of(loss_of(adj, x), adj->parameters());
  auto x_req = x.clone().requires_grad_(true);
  std::vector<torch::Tensor> inputs = adj->parameters();
  inputs.push_back(x_req);
  auto g_adj_req = grads_of(loss_of(adj, x_req), inputs);
  g_adj_req.pop_back();
  EXPECT_LT(max_rel_err(g_adj, g_adj_req), 1e-12);
  EXPECT_LT(max_rel_err(g_adj, gb), 1e-4);
}

// requires_grad(false) on one submodule: after backward() its .grad stays undefined; every other
// gradient is unchanged.
TEST_F(Seeded, FrozenSubmoduleGetsNoGradient) {
  auto x = torch::randn({5, 3}, torch::kDouble);
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    // Anode is compared with Backprop, Adjoint with itself unfrozen (its gradient is not exact).
    const Gradient ref_mode = g == Gradient::Anode ? Gradient::Backprop : Gradient::Adjoint;
    auto frozen = mlp_block(17, opts(Method::RK2, 4, g));
    auto ref = mlp_block(17, opts(Method::RK2, 4, ref_mode));
    for (auto& p : frozen->func()->fc1->parameters()) p.requires_grad_(false);
    auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
    frozen->forward(xa).pow(2).sum().backward();
    ref->forward(xb).pow(2).sum().backward();
    for (const auto& p : frozen->func()->fc1->parameters()) {
      EXPECT_FALSE(p.grad().defined()) << anode::to_string(g);
    }
    std::vector<torch::Tensor> got{xa.grad()}, want{xb.grad()};
    for (const auto& p : frozen->func()->fc2->parameters()) got.push_back(p.grad());
    for (const auto& p : ref->func()->fc2->parameters()) want.push_back(p.grad());
    EXPECT_LT(max_rel_err(got, want), 1e-12) << anode::to_string(g);

    // Everything frozen: only the input gets a gradient.
    auto all_frozen = mlp_block(17, opts(Method::RK2, 4, g));
    for (auto& p : all_frozen->parameters()) p.requires_grad_(false);
    auto xc = x.clone().requires_grad_(true);
    all_frozen->forward(xc).pow(2).sum().backward();
    EXPECT_LT(rel_err(xc.grad(), xb.grad()), 1e-12) << anode::to_string(g);
    for (const auto& p : all_frozen->parameters()) EXPECT_FALSE(p.grad().defined());
  }
}

// ---------------------------------------------------------------------------------------------
// Composition: register_module, .to(dtype), clone(), printing.

struct ClassifierImpl : torch::nn::Module {
  ClassifierImpl()
      : stem(register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 3, 3)))),
        ode(register_module("ode", ConvBlock(ConvRHS(3), opts(Method::RK2, 2)))),
        head(register_module("head", torch::nn::Linear(3, 2))) {}
  torch::Tensor forward(torch::Tensor x) { return head(ode(stem(x)).mean({2, 3})); }
  torch::nn::Conv2d stem;
  ConvBlock ode;
  torch::nn::Linear head;
};
TORCH_MODULE(Classifier);

TEST_F(Seeded, RegisteredInsideAUserModule) {
  Classifier net;
  // stem (2) + conv1, conv2, bn (6) + head (2); BatchNorm's three buffers.
  EXPECT_EQ(net->parameters().size(), 10u);
  EXPECT_EQ(net->buffers().size(), 3u);
  EXPECT_NE(net->named_parameters().find("ode.func.conv1.weight"), nullptr);
  EXPECT_NE(net->named_buffers().find("ode.func.bn.running_mean"), nullptr);
  net->to(torch::kDouble);
  for (const auto& p : net->parameters()) EXPECT_EQ(p.scalar_type(), torch::kDouble);
  auto x = torch::randn({2, 1, 6, 6}, torch::kDouble);
  net->forward(x).sum().backward();
  for (const auto& p : net->named_parameters()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
  net->eval();
  EXPECT_FALSE(net->ode->func()->bn->is_training());
}

TEST_F(Seeded, ToDoubleConvertsTheWrappedModule) {
  torch::manual_seed(18);
  MLPBlock a(MLP(3, 5), opts(Method::RK4, 3));
  torch::manual_seed(18);
  MLPBlock b(MLP(3, 5), opts(Method::RK4, 3, Gradient::Backprop));
  EXPECT_EQ(a->func()->fc1->weight.scalar_type(), torch::kFloat);
  a->to(torch::kDouble);
  b->to(torch::kDouble);
  for (const auto& p : a->parameters()) EXPECT_EQ(p.scalar_type(), torch::kDouble);
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  auto y = a->forward(x);
  EXPECT_EQ(y.scalar_type(), torch::kDouble);
  std::vector<torch::Tensor> in{x};
  for (const auto& p : a->parameters()) in.push_back(p);
  auto ga = grads_of(y.pow(2).sum(), in);
  in = {x};
  for (const auto& p : b->parameters()) in.push_back(p);
  auto gb = grads_of(b->forward(x).pow(2).sum(), in);
  EXPECT_LT(max_rel_err(ga, gb), 1e-12);
}

TEST_F(Seeded, CloneIsADeepCopy) {
  using LinearBlock = anode::ODEBlock<torch::nn::LinearImpl>;
  LinearBlock block(torch::nn::Linear(3, 3), opts(Method::RK2, 5).t1(0.5));
  block->eval();
  auto x = torch::randn({4, 3});
  auto y = block->forward(x).detach();
  auto copy = std::dynamic_pointer_cast<LinearBlock::Impl>(block->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_NE(copy->func(), block->func());
  EXPECT_FALSE(copy->is_training());
  EXPECT_EQ(copy->options.steps(), 5);
  EXPECT_EQ(copy->options.method(), Method::RK2);
  EXPECT_EQ(copy->options.t1(), 0.5);
  EXPECT_TRUE(torch::equal(copy->forward(x), y));
  {
    torch::NoGradGuard no_grad;
    copy->func()->weight.add_(1.0);
  }
  EXPECT_TRUE(torch::equal(block->forward(x), y));
  EXPECT_FALSE(torch::equal(copy->forward(x), y));

  // Sequential::clone clones the block through its override.
  torch::nn::Sequential seq(LinearBlock(torch::nn::Linear(3, 3), opts(Method::Euler, 2)));
  auto seq_y = seq->forward(x).detach();
  auto seq_copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(seq->clone());
  ASSERT_NE(seq_copy, nullptr);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : seq_copy->parameters()) p.mul_(2.0);
  }
  EXPECT_TRUE(torch::equal(seq->forward(x), seq_y));
  EXPECT_FALSE(torch::equal(seq_copy->forward(x), seq_y));

  // A wrapped module that is not Cloneable: a clear error, not a shallow copy.
  MLPBlock mlp(MLP(3, 4), opts(Method::Euler, 1));
  EXPECT_TRUE(throws_mentioning([&] { mlp->clone(); }, {"clone"}));
}

TEST_F(Seeded, PrintsItsOptions) {
  MLPBlock block(MLP(3, 4), opts(Method::RK2, 4));
  std::ostringstream out;
  out << block;
  EXPECT_NE(out.str().find("anode::ODEBlock(method=RK2, steps=4"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("gradient=Anode"), std::string::npos) << out.str();
  torch::nn::Sequential seq(MLPBlock(MLP(3, 4), opts(Method::RK4, 2, Gradient::Adjoint)));
  std::ostringstream seq_out;
  seq_out << *seq;
  EXPECT_NE(seq_out.str().find("anode::ODEBlock(method=RK4, steps=2"), std::string::npos)
      << seq_out.str();
  EXPECT_NE(seq_out.str().find("gradient=Adjoint"), std::string::npos) << seq_out.str();
}

// ---------------------------------------------------------------------------------------------
// Time-dependent right-hand sides: forward(double t, Tensor x) is detected and sees the right t.

// f(t, z) = -w (1 + t) z, recording every t it is called with.
struct ClockImpl : torch::nn::Module {
  ClockImpl() : w(register_parameter("w", torch::ones({1}, torch::kDouble))) {}
  torch::Tensor forward(double t, torch::Tensor x) {
    times.push_back(t);
    return -w * (1.0 + t) * x;
  }
  torch::Tensor w;
  std::vector<double> times;
};
TORCH_MODULE(Clock);

TEST_F(Seeded, TimeDependentRHSSeesTheGridTimes) {
  auto x = torch::randn({2, 2}, torch::kDouble);
  const std::vector<double> euler4{0.0, 0.25, 0.5, 0.75};
  {
    anode::ODEBlock<ClockImpl> block(Clock(), opts(Method::Euler, 4));
    torch::NoGradGuard no_grad;
    auto y = block->forward(x);
    EXPECT_EQ(block->func()->times, euler4);
    // z_N = z_0 prod_n (1 - h (1 + t_n)): the times were used, not only recorded.
    double factor = 1.0;
    for (double t : euler4) factor *= 1.0 - 0.25 * (1.0 + t);
    EXPECT_LT(rel_err(y, x * factor), 1e-15);
  }
  {
    anode::ODEBlock<ClockImpl> block(Clock(), opts(Method::RK2, 2));
    torch::NoGradGuard no_grad;
    block->forward(x);
    EXPECT_EQ(block->func()->times, (std::vector<double>{0.0, 0.25, 0.5, 0.75}));
  }
  {
    anode::ODEBlock<ClockImpl> block(Clock(), opts(Method::RK4, 1));
    torch::NoGradGuard no_grad;
    block->forward(x);
    EXPECT_EQ(block->func()->times, (std::vector<double>{0.0, 0.5, 0.5, 1.0}));
  }
  {
    anode::ODEBlock<ClockImpl> block(Clock(), opts(Method::Euler, 4).t0(1.0).t1(2.0));
    torch::NoGradGuard no_grad;
    block->forward(x);
    EXPECT_EQ(block->func()->times, (std::vector<double>{1.0, 1.25, 1.5, 1.75}));
  }
}

// In training: Anode's backward replays the forward's times once; Adjoint runs back from t1.
TEST_F(Seeded, TimesSeenDuringBackward) {
  auto x = torch::randn({2, 2}, torch::kDouble);
  const std::vector<double> fwd{0.0, 0.25, 0.5, 0.75};
  auto times_of = [&](Gradient g) {
    anode::ODEBlock<ClockImpl> block(Clock(), opts(Method::Euler, 4, g));
    block->forward(x).sum().backward();
    EXPECT_TRUE(block->func()->w.grad().defined());
    return block->func()->times;
  };
  EXPECT_EQ(times_of(Gradient::Backprop), fwd);
  EXPECT_EQ(times_of(Gradient::Anode),
            (std::vector<double>{0, 0.25, 0.5, 0.75, 0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(times_of(Gradient::Adjoint),
            (std::vector<double>{0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25}));
  // A module with forward(x) only is called once per stage, too: one extra forward for Anode.
  for (auto [g, expected] : {std::pair<Gradient, int64_t>{Gradient::Backprop, 8},
                             std::pair<Gradient, int64_t>{Gradient::Anode, 16}}) {
    auto block = mlp_block(19, opts(Method::RK2, 4, g));
    const int64_t before = rhs_evaluations();
    block->forward(torch::randn({2, 3}, torch::kDouble)).sum().backward();
    EXPECT_EQ(rhs_evaluations() - before, expected) << anode::to_string(g);
  }
}

// ---------------------------------------------------------------------------------------------
// Higher-order gradients and the RNG stream.

TEST_F(Seeded, CreateGraphIsRejectedByCheckpointedModes) {
  auto x = torch::randn({3, 3}, torch::kDouble);
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    auto block = mlp_block(20, opts(Method::RK2, 2, g));
    auto xin = x.clone().requires_grad_(true);
    auto loss = block->forward(xin).pow(2).sum();
    EXPECT_TRUE(throws_mentioning(
        [&] {
          torch::autograd::grad({loss}, {xin}, {}, /*retain_graph=*/true, /*create_graph=*/true);
        },
        {"higher-order", "create_graph", "Backprop"}))
        << anode::to_string(g);
    EXPECT_TRUE(torch::GradMode::is_enabled());
    // The same graph still gives first-order gradients.
    auto g1 = torch::autograd::grad({loss}, {xin});
    EXPECT_TRUE(g1[0].defined());
  }
  // Backprop supports them: a second derivative exists.
  auto block = mlp_block(20, opts(Method::RK2, 2, Gradient::Backprop));
  auto xin = x.clone().requires_grad_(true);
  auto g1 = torch::autograd::grad({block->forward(xin).pow(2).sum()}, {xin}, {}, true, true);
  auto g2 = torch::autograd::grad({g1[0].sum()}, {xin});
  EXPECT_TRUE(g2[0].defined());
}

// torch::rand after forward, a draw, and backward with dropout in the RHS: the same numbers as
// with Backprop, so neither the recomputation nor the reverse solve touches the caller's stream.
TEST_F(Seeded, OuterRandomStreamIsUndisturbed) {
  auto x = torch::randn({2, 3, 4, 4}, torch::kDouble);
  auto stream_after = [&](Gradient g) {
    auto block = conv_block(21, opts(Method::RK2, 2, g), 0.5);
    torch::manual_seed(22);
    auto y = block->forward(x);
    auto between = torch::rand({4}, torch::kDouble);
    y.pow(2).sum().backward();
    auto after = torch::rand({4}, torch::kDouble);
    return torch::cat({between, after});
  };
  const auto reference = stream_after(Gradient::Backprop);
  EXPECT_TRUE(torch::equal(stream_after(Gradient::Anode), reference));
  EXPECT_TRUE(torch::equal(stream_after(Gradient::Adjoint), reference));
}

// ---------------------------------------------------------------------------------------------
// CUDA (skipped where there is none).

TEST_F(Seeded, CudaMatchesBackprop) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device device(torch::kCUDA, 0);
  const DeterministicCudnn deterministic;
  {
    auto a = mlp_block(23, opts(Method::RK4, 3, Gradient::Anode));
    auto b = mlp_block(23, opts(Method::RK4, 3, Gradient::Backprop));
    a->to(device);
    b->to(device);
    auto x = torch::randn({8, 3}, torch::dtype(torch::kDouble).device(device));
    std::vector<std::vector<torch::Tensor>> g;
    for (auto* block : {&a, &b}) g.push_back(input_and_parameter_grads(*block, x));
    EXPECT_EQ(g[0][0].device(), device);
    EXPECT_LT(max_rel_err(g[0], g[1]), 1e-12);
  }
  {
    // BatchNorm and dropout on the device: the CUDA generator is replayed, buffers match.
    auto a = conv_block(24, opts(Method::RK2, 2, Gradient::Anode), 0.5);
    auto b = conv_block(24, opts(Method::RK2, 2, Gradient::Backprop), 0.5);
    a->to(device);
    b->to(device);
    auto x = torch::randn({4, 3, 6, 6}, torch::dtype(torch::kDouble).device(device));
    for (auto* block : {&a, &b}) {
      torch::manual_seed(25);
      (*block)->forward(x).pow(2).sum().backward();
    }
    EXPECT_LT(max_rel_err(param_grads(*a), param_grads(*b)), 1e-10);
    EXPECT_TRUE(same_state(*a, *b, 1e-10));
  }
  anode::memory::reset_cuda_peak(0);
  anode::memory::PeakScope scope(device);
  auto block = mlp_block(26, opts(Method::RK2, 4));
  block->to(device);
  block->forward(torch::randn({256, 3}, torch::dtype(torch::kDouble).device(device)))
      .sum()
      .backward();
  EXPECT_GT(scope.peak_bytes(), 0);
  // The device's peak since the reset counts what was live before the scope too.
  EXPECT_GE(anode::memory::cuda_peak_bytes(0), scope.peak_bytes());
}

}  // namespace test_usage
