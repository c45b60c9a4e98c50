// keep_latest_graph (Gradient::Anode): the forward pass keeps the graph of the latest block until
// the next block's forward pass releases it, so the block differentiated first needs no
// recompute. The gradient must be Backprop's bit for bit whether the kept graph or the recompute
// is used, the recompute must take over wherever the graph was released or already used, and
// memory must stay at Anode's O(L) inputs + one block's graph.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace test_keep_latest {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

using ConvBlock = anode::ODEBlock<ConvRHSImpl>;

/// The options of a solve, with or without keep_latest_graph.
anode::ODEBlockOptions latest(Method m, int64_t steps, Gradient g, bool keep = false) {
  return opts(m, steps, g).keep_latest_graph(keep);
}

/// Three float64 conv-BN-ReLU-dropout-conv blocks in a row; the same seed gives the same weights.
struct ChainImpl : torch::nn::Module {
  ChainImpl(const anode::ODEBlockOptions& o, double dropout) {
    for (int i = 0; i < 3; ++i)
      blocks.push_back(register_module("b" + std::to_string(i), ConvBlock(ConvRHS(3, dropout), o)));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& b : blocks) x = b->forward(x);
    return x;
  }
  std::vector<ConvBlock> blocks;
};
TORCH_MODULE(Chain);

Chain chain(const anode::ODEBlockOptions& o, double dropout = 0.3) {
  torch::manual_seed(4);
  Chain c(o, dropout);
  c->to(torch::kDouble);
  return c;
}

/// Output, input gradient, parameter gradients and buffers after one forward and backward.
std::vector<torch::Tensor> pass(Chain& net, const torch::Tensor& x0) {
  auto x = x0.clone().requires_grad_(true);
  torch::manual_seed(9);
  auto y = net->forward(x);
  (y * y).sum().backward();
  std::vector<torch::Tensor> out{y.detach(), x.grad()};
  for (const auto& p : net->parameters()) out.push_back(p.grad());
  for (const auto& b : net->buffers()) out.push_back(b.clone());
  return out;
}

/// What one odeint solve of `f` from `z0` gave: the gradients of the loss with respect to f's
/// parameters and z0, and the solve's statistics. The loss is sum(z(t1)^2) for a lone solve and
/// sum_i i * z(t_i)^2 for a trajectory (`t` defined).
struct Solved {
  std::vector<torch::Tensor> grads;
  anode::SolveStats stats;
};
Solved solve(MLP& f, const torch::Tensor& z0, const anode::ODEBlockOptions& o,
             const torch::Tensor& t = {}) {
  auto z = z0.clone().requires_grad_(true);
  auto stats = std::make_shared<anode::SolveStats>();
  std::vector<torch::Tensor> inputs = f->parameters();
  inputs.push_back(z);
  torch::Tensor loss;
  if (t.defined()) {
    auto out = anode::odeint(f, z, t, o, stats);
    auto w = torch::arange(1, out.size(0) + 1, out.options()).view({-1, 1, 1});
    loss = (out * out * w).sum();
  } else {
    loss = anode::odeint(f, z, o, stats).pow(2).sum();
  }
  Solved r;
  r.grads = grads_of(loss, inputs);
  r.stats = *stats;
  return r;
}

anode::ODEBlockOptions dopri5(Gradient g, bool keep) {
  return anode::ODEBlockOptions()
      .method(Method::Dopri5)
      .rtol(1e-6)
      .atol(1e-8)
      .gradient(g)
      .keep_latest_graph(keep);
}

class KeepLatest : public Seeded {};

TEST_F(KeepLatest, ChainEqualsBackpropBitForBitAndOnlyTheLastBlockSkipsItsRecompute) {
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  for (auto m : all_methods()) {
    auto ref = chain(latest(m, 3, Gradient::Backprop));
    auto kept = chain(latest(m, 3, Gradient::Anode, true));
    EXPECT_TRUE(all_equal(pass(kept, x), pass(ref, x))) << anode::to_string(m);
    // Blocks 0 and 1 were released by the next block's forward and recomputed; block 2 kept its
    // graph until its backward.
    const auto stages = anode::tableau(m).stages();
    EXPECT_EQ(kept->blocks[0]->stats().backward_evaluations, 3 * stages);
    EXPECT_EQ(kept->blocks[1]->stats().backward_evaluations, 3 * stages);
    EXPECT_EQ(kept->blocks[2]->stats().backward_evaluations, 0);
    EXPECT_EQ(kept->blocks[2]->stats().forward_evaluations, 3 * stages);
  }
}

TEST_F(KeepLatest, LoneSolveCostsWhatBackpropCosts) {
  // One odeint solve, as a time-series or spiral model has: its forward pass is Backprop's and
  // its backward recomputes nothing.
  torch::manual_seed(1);
  MLP f(3, 16);
  f->to(torch::kDouble);
  auto z0 = torch::randn({8, 3}, torch::kDouble);
  const auto kept = solve(f, z0, latest(Method::RK4, 10, Gradient::Anode, true));
  const auto exact = solve(f, z0, latest(Method::RK4, 10, Gradient::Backprop));
  const auto recomputed = solve(f, z0, latest(Method::RK4, 10, Gradient::Anode));
  EXPECT_TRUE(all_equal(kept.grads, exact.grads));
  EXPECT_TRUE(all_equal(recomputed.grads, exact.grads));
  EXPECT_EQ(kept.stats.forward_evaluations, 40);
  EXPECT_EQ(kept.stats.backward_evaluations, 0);
  EXPECT_EQ(recomputed.stats.backward_evaluations, 40);
}

TEST_F(KeepLatest, TrajectoryKeepsOnlyTheLastInterval) {
  torch::manual_seed(2);
  MLP f(2, 8);
  f->to(torch::kDouble);
  auto z0 = torch::randn({4, 2}, torch::kDouble);
  auto t = torch::tensor({0.0, 0.4, 0.7, 1.5}, torch::kDouble);
  const auto kept = solve(f, z0, latest(Method::RK2, 5, Gradient::Anode, true), t);
  const auto exact = solve(f, z0, latest(Method::RK2, 5, Gradient::Backprop), t);
  // Each interval is its own autograd node, so the parameter gradients are summed over the
  // intervals in another order than Backprop's one graph sums them: equal to round-off (as plain
  // Anode's are), not bit for bit.
  EXPECT_LT(max_rel_err(kept.grads, exact.grads), 1e-13);
  // 3 intervals of 5 RK2 steps: the last interval's graph was kept, the first two recomputed.
  EXPECT_EQ(kept.stats.forward_evaluations, 30);
  EXPECT_EQ(kept.stats.backward_evaluations, 20);
}

TEST_F(KeepLatest, SecondBackwardThroughARetainedGraphRecomputes) {
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  auto twice = [&](Chain& net) {
    torch::manual_seed(9);
    auto xi = x.clone().requires_grad_(true);
    auto loss = net->forward(xi).pow(2).sum();
    loss.backward({}, /*retain_graph=*/true);
    loss.backward();
    std::vector<torch::Tensor> out{xi.grad()};
    for (const auto& p : net->parameters()) out.push_back(p.grad());
    return out;
  };
  auto ref = chain(latest(Method::RK2, 2, Gradient::Backprop), 0.0);
  auto kept = chain(latest(Method::RK2, 2, Gradient::Anode, true), 0.0);
  EXPECT_TRUE(all_equal(twice(kept), twice(ref)));
  // The last block used its kept graph once, then recomputed for the second backward.
  EXPECT_EQ(kept->blocks[2]->stats().backward_evaluations, 2 * 2);
}

TEST_F(KeepLatest, ForwardWithoutBackwardReleasesAtTheNextBlock) {
  // A forward pass whose graph is dropped (an evaluation with grad on, say) frees everything,
  // and a kept graph released by a later unrelated forward pass is simply recomputed.
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  auto ref = chain(latest(Method::RK2, 2, Gradient::Backprop), 0.0);
  auto kept = chain(latest(Method::RK2, 2, Gradient::Anode, true), 0.0);
  torch::manual_seed(9);
  auto xi = x.clone().requires_grad_(true);
  auto loss = kept->forward(xi).pow(2).sum();
  (void)kept->forward(x.clone().requires_grad_(true));  // releases the first pass's kept graph
  const int64_t before = rhs_evaluations();
  loss.backward();
  // All three blocks of the first pass recomputed: 3 blocks x 2 RK2 steps x 2 stages.
  EXPECT_EQ(rhs_evaluations() - before, 12);
  torch::manual_seed(9);
  auto xr = x.clone().requires_grad_(true);
  ref->forward(xr).pow(2).sum().backward();
  EXPECT_TRUE(torch::equal(xi.grad(), xr.grad()));
}

TEST_F(KeepLatest, AClosuresUnlistedWeightIsStillAnError) {
  auto w = torch::randn({2, 2}, torch::kDouble).requires_grad_(true);
  auto f = [w](const torch::Tensor& z) { return torch::tanh(z).matmul(w); };
  auto z = torch::randn({3, 2}, torch::kDouble).requires_grad_(true);
  auto out = anode::odeint(f, z, latest(Method::RK2, 3, Gradient::Anode, true));
  EXPECT_TRUE(throws_mentioning([&] { out.sum().backward(); },
                                {"not a parameter of the solve", "Gradient::Anode"}));
}

TEST_F(KeepLatest, CpuAutocastGivesBackpropsBits) {
  torch::manual_seed(3);
  MLP f(4, 32);  // float32 weights: autocast runs the linear layers in bfloat16
  auto z0 = torch::randn({16, 4});
  auto grads = [&](const anode::ODEBlockOptions& o) {
    auto z = z0.clone().requires_grad_(true);
    std::vector<torch::Tensor> inputs = f->parameters();
    inputs.push_back(z);
    const auto saved = anode::detail::AutocastState::capture();
    auto on = saved;
    on.cpu_enabled = true;
    on.cpu_dtype = torch::kBFloat16;
    on.apply();
    torch::Tensor loss;
    try {
      loss = anode::odeint(f, z, o).pow(2).sum();
    } catch (...) {
      saved.apply();
      throw;
    }
    saved.apply();
    return grads_of(loss, inputs);
  };
  const auto kept = grads(latest(Method::RK2, 4, Gradient::Anode, true));
  const auto exact = grads(latest(Method::RK2, 4, Gradient::Backprop));
  EXPECT_TRUE(all_equal(kept, exact));
}

TEST_F(KeepLatest, MemoryStaysAtOneBlockGraph) {
  anode::memory::install_cpu_meter();
  torch::set_num_threads(1);
  auto peak = [](const anode::ODEBlockOptions& o) {
    auto net = chain(o, 0.0);
    auto x = torch::randn({4, 3, 16, 16}, torch::kDouble);
    anode::memory::PeakScope scope;
    net->forward(x).sum().backward();
    return scope.peak_bytes();
  };
  const auto backprop = peak(latest(Method::RK2, 8, Gradient::Backprop));
  const auto anode_peak = peak(latest(Method::RK2, 8, Gradient::Anode));
  const auto kept = peak(latest(Method::RK2, 8, Gradient::Anode, true));
  // Anode: the 3 block inputs + one block's graph; kept: the same, at the end of the forward pass.
  EXPECT_LE(kept, anode_peak + anode_peak / 10) << kept << " vs " << anode_peak;
  EXPECT_LT(kept, backprop / 2) << kept << " vs " << backprop;
}

TEST_F(KeepLatest, OptionsItDoesNotCombineWithAreErrors) {
  auto z = torch::randn({2, 2}, torch::kDouble).requires_grad_(true);
  auto f = [](const torch::Tensor& x) { return -x; };
  EXPECT_TRUE(throws_mentioning(
      [&] { (void)anode::odeint(f, z, latest(Method::RK2, 4, Gradient::Backprop, true)); },
      {"keep_latest_graph(true) applies to Gradient::Anode only"}));
  EXPECT_TRUE(throws_mentioning(
      [&] {
        (void)anode::odeint(f, z, latest(Method::RK2, 4, Gradient::Anode, true).checkpoints(2));
      },
      {"keep_latest_graph(true)", "checkpoints 2"}));
}

TEST_F(KeepLatest, AdaptiveLoneSolveCostsWhatBackpropCosts) {
  torch::manual_seed(5);
  MLP f(3, 16);
  f->to(torch::kDouble);
  auto z0 = torch::randn({8, 3}, torch::kDouble);
  const auto kept = solve(f, z0, dopri5(Gradient::Anode, true).t1(2.0));
  const auto exact = solve(f, z0, dopri5(Gradient::Backprop, false).t1(2.0));
  const auto recomputed = solve(f, z0, dopri5(Gradient::Anode, false).t1(2.0));
  EXPECT_TRUE(all_equal(kept.grads, exact.grads));
  EXPECT_LT(max_rel_err(recomputed.grads, exact.grads), 1e-12);
  EXPECT_EQ(kept.stats.forward_evaluations, exact.stats.forward_evaluations);
  EXPECT_EQ(kept.stats.accepted_steps, exact.stats.accepted_steps);
  EXPECT_GT(kept.stats.accepted_steps, 2);
  EXPECT_EQ(kept.stats.backward_evaluations, 0);
  EXPECT_GT(recomputed.stats.backward_evaluations, 0);
}

TEST_F(KeepLatest, AdaptiveTrajectoryRecomputesTheIntervalsAfterTheFirst) {
  // Later intervals start from the first stage carried over (FSAL), whose graph is not theirs:
  // they are solved graph-free and recomputed; the first interval keeps its graph until the
  // second starts, so it is recomputed too. The gradient is still Backprop's to round-off.
  torch::manual_seed(6);
  MLP f(2, 8);
  f->to(torch::kDouble);
  auto z0 = torch::randn({4, 2}, torch::kDouble);
  auto t = torch::tensor({0.0, 0.5, 1.2}, torch::kDouble);
  const auto kept = solve(f, z0, dopri5(Gradient::Anode, true), t);
  const auto exact = solve(f, z0, dopri5(Gradient::Backprop, false), t);
  const auto recomputed = solve(f, z0, dopri5(Gradient::Anode, false), t);
  EXPECT_LT(max_rel_err(kept.grads, exact.grads), 1e-12);
  // Every interval recomputed: as many backward evaluations as plain Anode's.
  EXPECT_GT(kept.stats.backward_evaluations, 0);
  EXPECT_EQ(kept.stats.backward_evaluations, recomputed.stats.backward_evaluations);
}

TEST_F(KeepLatest, TrainingLoopMatchesBackprop) {
  // SGD with momentum over a few steps, dropout and BatchNorm in train(): each step's forward
  // keeps the last block's graph, its backward uses it, and the next step starts clean.
  auto x = torch::randn({2, 3, 5, 5}, torch::kDouble);
  auto target = torch::randn({2, 3, 5, 5}, torch::kDouble);
  auto train = [&](Chain& net) {
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    torch::manual_seed(21);
    std::vector<double> losses;
    for (int i = 0; i < 3; ++i) {
      opt.zero_grad();
      auto loss = torch::mse_loss(net->forward(x), target);
      loss.backward();
      opt.step();
      losses.push_back(loss.item<double>());
    }
    return losses;
  };
  auto ref = chain(latest(Method::RK2, 2, Gradient::Backprop));
  auto kept = chain(latest(Method::RK2, 2, Gradient::Anode, true));
  const auto lr = train(ref), lk = train(kept);
  EXPECT_EQ(lk, lr);
  EXPECT_LT(lk.back(), lk.front());
  EXPECT_TRUE(same_state(*kept, *ref, 0.0));
}

}  // namespace test_keep_latest
