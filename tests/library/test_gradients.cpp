// Gradient::Anode equals Gradient::Backprop to round-off and matches finite
// differences.

#include "support/testing.hpp"

namespace test_gradients {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

// A network of L ODE blocks with other layers in between: conv stem -> [ODE block -> BN/ReLU
// or 1x1 conv] x L -> pooled linear head. Built twice from the same seed so two gradient modes can
// be compared parameter by parameter.
struct NetImpl : torch::nn::Module {
  NetImpl(int64_t blocks, int64_t channels, anode::ODEBlockOptions opts, double dropout) {
    stem = register_module("stem",
                           torch::nn::Conv2d(torch::nn::Conv2dOptions(3, channels, 3).padding(1)));
    for (int64_t i = 0; i < blocks; ++i) {
      auto block = anode::ODEBlock<ConvRHSImpl>(ConvRHS(channels, dropout), opts);
      odes.push_back(register_module("ode" + std::to_string(i), block));
      mids.push_back(
          register_module("mid" + std::to_string(i),
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1))));
    }
    head = register_module("head", torch::nn::Linear(channels, 5));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = stem(x);
    for (std::size_t i = 0; i < odes.size(); ++i) x = torch::relu(mids[i](odes[i](x)));
    return head(x.mean({2, 3}));
  }
  void set_gradient(Gradient g) {
    for (auto& b : odes) b->options.gradient(g);
  }
  torch::nn::Conv2d stem{nullptr};
  std::vector<anode::ODEBlock<ConvRHSImpl>> odes;
  std::vector<torch::nn::Conv2d> mids;
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Net);

struct Result {
  std::vector<torch::Tensor> grads;  // input first, then every parameter
  torch::Tensor output;
};

// One forward/backward of `net` with the RNG seeded identically, gradients of input and params.
Result run(Net& net, const torch::Tensor& x, Gradient g, uint64_t seed = 7) {
  net->set_gradient(g);
  torch::manual_seed(seed);
  auto xin = x.detach().clone().requires_grad_(true);
  auto y = net->forward(xin);
  auto loss = (y * y).sum() + y.sum();
  std::vector<torch::Tensor> inputs{xin};
  for (auto& p : net->parameters()) inputs.push_back(p);
  return {grads_of(loss, inputs), y.detach()};
}

class AnodeMatchesBackprop : public Seeded,
                             public ::testing::WithParamInterface<std::tuple<Method, bool>> {};

// Conv RHS with ReLU + BatchNorm + dropout, L = 3 blocks with layers between, float64 and float32.
TEST_P(AnodeMatchesBackprop, ConvBatchNormDropoutThreeBlocks) {
  const auto [method, float32] = GetParam();
  const auto dtype = float32 ? torch::kFloat : torch::kDouble;
  auto opts = anode::ODEBlockOptions().method(method).steps(3);
  torch::manual_seed(1);
  Net net(3, 4, opts, /*dropout=*/0.3);
  torch::manual_seed(1);
  Net ref(3, 4, opts, /*dropout=*/0.3);
  net->to(dtype);
  ref->to(dtype);
  auto x = torch::randn({2, 3, 6, 6}, dtype);
  auto a = run(net, x, Gradient::Anode);
  auto b = run(ref, x, Gradient::Backprop);
  const double tol = float32 ? 1e-5 : 1e-12;
  EXPECT_LT(rel_err(a.output, b.output), tol);
  EXPECT_LT(max_rel_err(a.grads, b.grads), tol);
  // Every parameter got a gradient (they are all used).
  for (std::size_t i = 0; i < a.grads.size(); ++i) EXPECT_TRUE(a.grads[i].defined()) << i;
}

INSTANTIATE_TEST_SUITE_P(AllMethods, AnodeMatchesBackprop,
                         ::testing::Combine(::testing::Values(Method::Euler, Method::RK2,
                                                              Method::RK4),
                                            ::testing::Bool()));

// A time-dependent RHS f(t, z) on a nonstandard interval, each method.
TEST_F(Seeded, AnodeMatchesBackpropTimeDependent) {
  for (auto method : all_methods()) {
    auto opts = anode::ODEBlockOptions().method(method).steps(5).t0(0.3).t1(1.7);
    anode::ODEBlock<TimeMLPImpl> block(TimeMLP(4), opts);
    block->to(torch::kDouble);
    auto x = torch::randn({3, 4}, torch::kDouble);
    std::vector<torch::Tensor> ga, gb;
    for (auto g : {Gradient::Anode, Gradient::Backprop}) {
      block->options.gradient(g);
      auto xin = x.clone().requires_grad_(true);
      auto loss = block->forward(xin).pow(3).sum();
      std::vector<torch::Tensor> in{xin};
      for (auto& p : block->parameters()) in.push_back(p);
      (g == Gradient::Anode ? ga : gb) = grads_of(loss, in);
    }
    EXPECT_LT(max_rel_err(ga, gb), 1e-12) << anode::to_string(method);
  }
}

// Backward through a time-reversed interval (t1 < t0) works the same way.
TEST_F(Seeded, AnodeMatchesBackpropBackwardInterval) {
  auto opts = anode::ODEBlockOptions().method(Method::RK4).steps(4).t0(1.0).t1(0.0);
  anode::ODEBlock<TimeMLPImpl> block(TimeMLP(3), opts);
  block->to(torch::kDouble);
  auto x = torch::randn({2, 3}, torch::kDouble);
  std::vector<std::vector<torch::Tensor>> g;
  for (auto mode : {Gradient::Anode, Gradient::Backprop}) {
    block->options.gradient(mode);
    auto xin = x.clone().requires_grad_(true);
    auto loss = block->forward(xin).sin().sum();
    std::vector<torch::Tensor> in{xin};
    for (auto& p : block->parameters()) in.push_back(p);
    g.push_back(grads_of(loss, in));
  }
  EXPECT_LT(max_rel_err(g[0], g[1]), 1e-12);
}

// The discrete gradient against central finite differences (float64), input and a parameter.
TEST_F(Seeded, FiniteDifferences) {
  for (auto method : all_methods()) {
    auto opts = anode::ODEBlockOptions().method(method).steps(3);
    anode::ODEBlock<MLPImpl> block(MLP(3, 8), opts);
    block->to(torch::kDouble);
    auto x = torch::randn({2, 3}, torch::kDouble);
    auto loss_of = [&](const torch::Tensor& xin) { return block->forward(xin).pow(2).sum(); };
    auto xin = x.clone().requires_grad_(true);
    auto W = block->func()->fc1->weight;
    auto g = grads_of(loss_of(xin), {xin, W});

    const double eps = 1e-6;
    torch::NoGradGuard no_grad;
    auto fd_x = torch::zeros_like(x);
    for (int64_t i = 0; i < x.numel(); ++i) {
      auto xp = x.clone(), xm = x.clone();
      xp.view(-1)[i] += eps;
      xm.view(-1)[i] -= eps;
      fd_x.view(-1)[i] = (loss_of(xp) - loss_of(xm)) / (2 * eps);
    }
    auto fd_w = torch::zeros_like(W);
    for (int64_t i = 0; i < W.numel(); ++i) {
      const double w0 = W.view(-1)[i].item<double>();
      W.view(-1)[i] = w0 + eps;
      const double lp = loss_of(x).item<double>();
      W.view(-1)[i] = w0 - eps;
      const double lm = loss_of(x).item<double>();
      W.view(-1)[i] = w0;
      fd_w.view(-1)[i] = (lp - lm) / (2 * eps);
    }
    EXPECT_LT(rel_err(g[0], fd_x), 1e-7) << anode::to_string(method);
    EXPECT_LT(rel_err(g[1], fd_w), 1e-7) << anode::to_string(method);
  }
}

// The functional form with a closure: Anode differentiates with respect to the listed params.
TEST_F(Seeded, OdeintClosureMatchesBackprop) {
  auto W = torch::randn({3, 3}, torch::kDouble).mul_(0.5).requires_grad_(true);
  auto f = [&](double t, const torch::Tensor& z) { return torch::tanh(z.matmul(W)) * (1 + t); };
  auto x = torch::randn({4, 3}, torch::kDouble);
  std::vector<std::vector<torch::Tensor>> g;
  for (auto mode : {Gradient::Anode, Gradient::Backprop}) {
    auto opts = anode::ODEBlockOptions().method(Method::RK2).steps(6).gradient(mode);
    auto xin = x.clone().requires_grad_(true);
    auto loss = anode::odeint(f, xin, opts, {W}).sum();
    g.push_back(grads_of(loss, {xin, W}));
  }
  EXPECT_LT(max_rel_err(g[0], g[1]), 1e-12);
}

// Euler with one unit step is exactly a residual block x + f(x).
TEST_F(Seeded, OneEulerStepIsAResidualBlock) {
  anode::ODEBlock<MLPImpl> block(MLP(3, 5), anode::ODEBlockOptions());
  auto x = torch::randn({2, 3});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(block->forward(x), x + block->func()->forward(x), 0, 0));
}

}  // namespace test_gradients
