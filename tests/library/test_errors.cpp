// Bad input gets a clear error that names the option and the value, never a crash, and the
// library is usable right after every error.

#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace test_errors {

using namespace anode_test;
using anode::Gradient;
using anode::Method;

using MLPBlock = anode::ODEBlock<MLPImpl>;

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

const std::vector<Gradient>& all_gradients() {
  static const std::vector<Gradient> g{Gradient::Backprop, Gradient::Anode, Gradient::Adjoint};
  return g;
}

MLPBlock mlp_block(uint64_t seed, const anode::ODEBlockOptions& o) {
  torch::manual_seed(seed);
  MLPBlock block(MLP(3, 5), o);
  block->to(torch::kDouble);
  return block;
}

// A valid call right after an error: grad mode is on, and a fresh Anode block's gradients equal
// Backprop's.
void expect_usable() {
  SCOPED_TRACE("valid call after the error");
  EXPECT_TRUE(torch::GradMode::is_enabled());
  auto a = mlp_block(100, opts(Method::RK2, 3, Gradient::Anode));
  auto b = mlp_block(100, opts(Method::RK2, 3, Gradient::Backprop));
  auto x = torch::randn({4, 3}, torch::kDouble);
  std::vector<std::vector<torch::Tensor>> g;
  for (auto* block : {&a, &b}) g.push_back(input_and_parameter_grads(*block, x));
  EXPECT_LT(max_rel_err(g[0], g[1]), 1e-12);
}

// dz/dt = tanh(z) W, a closure with one parameter.
struct Closure {
  torch::Tensor W = torch::eye(3, torch::kDouble).requires_grad_(true);
  torch::Tensor operator()(double, const torch::Tensor& z) const { return torch::tanh(z).mm(W); }
};

// ---------------------------------------------------------------------------------------------
// Invalid options: every entry point reports them, naming the option and the value.

struct BadOption {
  std::string label;
  anode::ODEBlockOptions options;
  std::vector<std::string> mentions;
};
void PrintTo(const BadOption& b, std::ostream* os) {
  *os << b.label;
}

class InvalidOption : public Seeded, public ::testing::WithParamInterface<BadOption> {};

TEST_P(InvalidOption, IsReportedByEveryEntryPoint) {
  const auto& bad = GetParam();
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);

  EXPECT_TRUE(throws_mentioning([&] { bad.options.validate(); }, bad.mentions));
  // At construction, from a holder and from a shared_ptr.
  EXPECT_TRUE(throws_mentioning([&] { MLPBlock block(MLP(3, 5), bad.options); }, bad.mentions));
  EXPECT_TRUE(throws_mentioning(
      [&] { MLPBlock block(std::make_shared<MLPImpl>(3, 5), bad.options); }, bad.mentions));
  // In the functional forms, with and without grad.
  Closure f;
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(f, x, bad.options, {f.W}); }, bad.mentions));
  EXPECT_TRUE(throws_mentioning(
      [&] {
        torch::NoGradGuard no_grad;
        anode::odeint(f, x, bad.options);
      },
      bad.mentions));
  auto module = std::make_shared<MLPImpl>(3, 5);
  module->to(torch::kDouble);
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(module, x, bad.options); }, bad.mentions));
  // A valid block whose public options are changed: forward reports them; the block recovers.
  auto block = mlp_block(1, opts(Method::RK2, 2));
  const auto good = block->options;
  const auto y = block->forward(x).detach();
  block->options = bad.options;
  EXPECT_TRUE(throws_mentioning([&] { block->forward(x); }, bad.mentions));
  block->options = good;
  EXPECT_TRUE(torch::equal(block->forward(x), y));
  expect_usable();
}

INSTANTIATE_TEST_SUITE_P(
    Options, InvalidOption,
    ::testing::Values(
        BadOption{"steps_0", anode::ODEBlockOptions().steps(0), {"steps", "got 0"}},
        BadOption{"steps_minus_3", anode::ODEBlockOptions().steps(-3), {"steps", "got -3"}},
        BadOption{"t1_equals_t0", anode::ODEBlockOptions().t0(0.5).t1(0.5), {"t1", "t0", "0.5"}},
        BadOption{"t0_nan", anode::ODEBlockOptions().t0(kNaN), {"t0", "nan"}},
        BadOption{"t1_nan", anode::ODEBlockOptions().t1(kNaN), {"t1", "nan"}},
        BadOption{"t1_inf", anode::ODEBlockOptions().t1(kInf), {"t1", "inf"}},
        BadOption{"t0_minus_inf", anode::ODEBlockOptions().t0(-kInf), {"t0", "-inf"}},
        BadOption{"checkpoints_minus_1",
                  anode::ODEBlockOptions().checkpoints(-1),
                  {"checkpoints", "got -1"}},
        BadOption{"memory_budget_minus_5",
                  anode::ODEBlockOptions().memory_budget(-5),
                  {"memory_budget", "got -5"}},
        BadOption{
            "method_9", anode::ODEBlockOptions().method(static_cast<Method>(9)), {"method", "9"}},
        BadOption{"gradient_7",
                  anode::ODEBlockOptions().gradient(static_cast<Gradient>(7)),
                  {"gradient", "7"}}),
    [](const ::testing::TestParamInfo<BadOption>& info) { return info.param.label; });

// ---------------------------------------------------------------------------------------------
// Invalid states.

TEST_F(Seeded, NonFloatingInputNamesTheDtype) {
  const std::vector<std::pair<torch::Tensor, std::string>> inputs{
      {torch::arange(12).view({4, 3}), "Long"},
      {torch::arange(12, torch::kInt).view({4, 3}), "Int"},
      {torch::ones({4, 3}, torch::kBool), "Bool"},
      {torch::ones({4, 3}, torch::kComplexDouble), "ComplexDouble"}};
  for (const auto& [x, name] : inputs) {
    for (auto g : all_gradients()) {
      auto block = mlp_block(2, opts(Method::RK2, 2, g));
      EXPECT_TRUE(throws_mentioning([&] { block->forward(x); }, {"dtype", name}))
          << anode::to_string(g);
      EXPECT_TRUE(throws_mentioning([&] { anode::odeint(Closure(), x, opts(Method::Euler, 1, g)); },
                                    {"dtype", name}));
    }
  }
  expect_usable();
}

TEST_F(Seeded, UndefinedInput) {
  for (auto g : all_gradients()) {
    auto block = mlp_block(3, opts(Method::RK4, 2, g));
    EXPECT_TRUE(throws_mentioning([&] { block->forward(torch::Tensor()); }, {"undefined"}));
    EXPECT_TRUE(
        throws_mentioning([&] { anode::odeint(Closure(), torch::Tensor()); }, {"undefined"}));
  }
  expect_usable();
}

// ---------------------------------------------------------------------------------------------
// Right-hand sides that return the wrong thing.

// Returns dz/dt with the wrong shape, dtype, or not at all, depending on `mode`.
struct BadRHSImpl : torch::nn::Module {
  explicit BadRHSImpl(std::string m)
      : fc(register_module("fc", torch::nn::Linear(3, 3))), mode(std::move(m)) {}
  torch::Tensor forward(torch::Tensor x) {
    auto y = fc(x);
    if (mode == "shape") return y.sum(-1, /*keepdim=*/true);
    if (mode == "dtype") return y.to(torch::kDouble);
    if (mode == "undefined") return torch::Tensor();
    return y;
  }
  torch::nn::Linear fc;
  std::string mode;
};
TORCH_MODULE(BadRHS);

TEST_F(Seeded, RHSReturningAnotherShapeOrDtype) {
  // Float state: a dtype change to double is a mistake the solver must not paper over.
  auto x = torch::randn({4, 3});
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"shape", {"shape", "[4, 1]", "[4, 3]"}},
      {"dtype", {"dtype", "Double", "Float"}},
      {"undefined", {"undefined"}}};
  for (const auto& [mode, mentions] : cases) {
    for (auto g : all_gradients()) {
      for (auto m : all_methods()) {
        anode::ODEBlock<BadRHSImpl> block(BadRHS(mode), opts(m, 3, g));
        const auto where = mode + " " + anode::to_string(g) + " " + anode::to_string(m);
        EXPECT_TRUE(throws_mentioning([&] { block->forward(x); }, mentions)) << where;
        EXPECT_TRUE(
            throws_mentioning([&] { block->forward(x.clone().requires_grad_(true)); }, mentions))
            << where;
        EXPECT_TRUE(throws_mentioning(
            [&] {
              torch::NoGradGuard no_grad;
              block->forward(x);
            },
            mentions))
            << where;
      }
    }
  }
  // The same through odeint with closures.
  auto xr = x.clone().requires_grad_(true);
  for (auto g : all_gradients()) {
    const auto o = opts(Method::RK2, 2, g);
    EXPECT_TRUE(throws_mentioning(
        [&] { anode::odeint([](const torch::Tensor& z) { return z.narrow(1, 0, 2); }, xr, o); },
        {"shape", "[4, 2]", "[4, 3]"}));
    EXPECT_TRUE(throws_mentioning(
        [&] { anode::odeint([](const torch::Tensor& z) { return z.to(torch::kDouble); }, xr, o); },
        {"dtype", "Double", "Float"}));
  }
  expect_usable();
}

// ---------------------------------------------------------------------------------------------
// check_finite.

// dz/dt = -z until evaluation number `first_bad` (0-based), then z * poison.
struct PoisonImpl : torch::nn::Module {
  PoisonImpl(int64_t first_bad_eval, double poison_value)
      : w(register_parameter("w", torch::ones({1}, torch::kDouble))),
        first_bad(first_bad_eval),
        poison(poison_value) {}
  torch::Tensor forward(torch::Tensor x) { return calls++ >= first_bad ? x * poison : -w * x; }
  torch::Tensor w;
  int64_t first_bad;
  double poison;
  int64_t calls = 0;
};
TORCH_MODULE(Poison);

TEST_F(Seeded, CheckFiniteNamesTheStep) {
  auto x = torch::randn({2, 3}, torch::kDouble) + 3.0;
  for (double poison : {kNaN, kInf}) {
    for (auto m : all_methods()) {
      // The first evaluation of step 3 (of 4) returns NaN or Inf, so z_3 is the first bad state.
      const int64_t first_bad = 2 * anode::tableau(m).stages();
      for (auto g : all_gradients()) {
        const auto where =
            std::to_string(poison) + " " + anode::to_string(m) + " " + anode::to_string(g);
        anode::ODEBlock<PoisonImpl> checked(Poison(first_bad, poison),
                                            opts(m, 4, g).check_finite(true));
        EXPECT_TRUE(throws_mentioning([&] { checked->forward(x.clone().requires_grad_(true)); },
                                      {"NaN or Inf", "after step 3 of 4", "t = 0.75"}))
            << where;
        // Off (the default): no error, the non-finite values come out.
        anode::ODEBlock<PoisonImpl> unchecked(Poison(first_bad, poison), opts(m, 4, g));
        torch::Tensor y;
        EXPECT_NO_THROW(y = unchecked->forward(x.clone().requires_grad_(true))) << where;
        ASSERT_TRUE(y.defined());
        EXPECT_FALSE(torch::isfinite(y).all().item<bool>()) << where;
      }
    }
  }
  // With finite values check_finite changes nothing.
  for (auto g : all_gradients()) {
    auto a = mlp_block(4, opts(Method::RK4, 3, g).check_finite(true));
    auto b = mlp_block(4, opts(Method::RK4, 3, g));
    auto x2 = torch::randn({4, 3}, torch::kDouble);
    auto ga = grads_of(a->forward(x2).pow(2).sum(), a->parameters());
    auto gb = grads_of(b->forward(x2).pow(2).sum(), b->parameters());
    EXPECT_EQ(max_rel_err(ga, gb), 0.0) << anode::to_string(g);
  }
  expect_usable();
}

// The adjoint's reverse solve checks its own state and names the reverse step.
TEST_F(Seeded, CheckFiniteInTheAdjointReverseSolve) {
  auto block = mlp_block(5, opts(Method::RK2, 4, Gradient::Adjoint).check_finite(true));
  auto x = torch::randn({2, 3}, torch::kDouble).requires_grad_(true);
  auto y = block->forward(x);
  auto bad_grad = torch::full_like(y, kNaN);
  EXPECT_TRUE(throws_mentioning([&] { y.backward(bad_grad); },
                                {"adjoint", "NaN or Inf", "reverse solve at step 4 of 4"}));
  expect_usable();
}

// ---------------------------------------------------------------------------------------------
// Names, null modules, memory budgets.

TEST(Names, BadNamesAreQuoted) {
  EXPECT_TRUE(throws_mentioning([] { anode::method_from_string("rk3"); }, {"method", "'rk3'"}));
  EXPECT_TRUE(throws_mentioning([] { anode::method_from_string(""); }, {"method", "''"}));
  EXPECT_TRUE(throws_mentioning([] { anode::gradient_from_string("foo"); }, {"gradient", "'foo'"}));
  // The value is quoted as given, not as normalised.
  EXPECT_TRUE(throws_mentioning([] { anode::method_from_string("RK3"); }, {"'RK3'"}));
  EXPECT_TRUE(throws_mentioning([] { anode::gradient_from_string("AutoDiff"); }, {"'AutoDiff'"}));
  // Good names, in any case, round-trip through to_string.
  for (auto m : all_methods()) EXPECT_EQ(anode::method_from_string(anode::to_string(m)), m);
  for (auto g : all_gradients()) EXPECT_EQ(anode::gradient_from_string(anode::to_string(g)), g);
  EXPECT_EQ(anode::method_from_string("Midpoint"), Method::RK2);
  EXPECT_EQ(anode::gradient_from_string("ANODE"), Gradient::Anode);
}

TEST_F(Seeded, NullModule) {
  const auto o = opts(Method::RK2, 2);
  EXPECT_TRUE(throws_mentioning([&] { MLPBlock block(std::shared_ptr<MLPImpl>(), o); }, {"null"}));
  EXPECT_TRUE(throws_mentioning([&] { MLPBlock block(MLP(nullptr), o); }, {"empty"}));
  auto x = torch::randn({2, 3});
  EXPECT_TRUE(
      throws_mentioning([&] { anode::odeint(std::shared_ptr<MLPImpl>(), x, o); }, {"null"}));
  EXPECT_TRUE(throws_mentioning([&] { anode::odeint(MLP(nullptr), x, o); }, {"empty"}));
  expect_usable();
}

TEST_F(Seeded, MemoryBudgetTooSmallForOneCheckpoint) {
  anode::memory::install_cpu_meter();  // memory_budget measures a step with it
  auto x = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);  // 96-byte state
  auto block = mlp_block(6, opts(Method::RK2, 4).memory_budget(16));
  EXPECT_TRUE(throws_mentioning([&] { block->forward(x); }, {"memory_budget", "16", "too small"}));
  // Raising the budget (or dropping it) fixes the same block; its gradient is exact.
  auto ref = mlp_block(6, opts(Method::RK2, 4, Gradient::Backprop));
  auto want = grads_of(ref->forward(x).pow(2).sum(), ref->parameters());
  for (int64_t budget : {int64_t{100000}, int64_t{0}}) {
    block->options.memory_budget(budget);
    auto got = grads_of(block->forward(x).pow(2).sum(), block->parameters());
    EXPECT_LT(max_rel_err(got, want), 1e-12) << budget;
  }
  expect_usable();
}

// ---------------------------------------------------------------------------------------------
// An error in the middle of a backward pass leaves the caller's RNG stream and the BatchNorm
// buffers as they were, and the modules usable.

struct FlakyImpl : torch::nn::Module {
  FlakyImpl()
      : fc(register_module("fc", torch::nn::Linear(3, 3))),
        bn(register_module("bn", torch::nn::BatchNorm1d(3))) {}
  torch::Tensor forward(torch::Tensor x) {
    auto y = torch::dropout(torch::tanh(bn(fc(x))), 0.3, is_training());
    return fail ? y.narrow(1, 0, 2) : y;
  }
  torch::nn::Linear fc;
  torch::nn::BatchNorm1d bn;
  bool fail = false;
};
TORCH_MODULE(Flaky);

torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

TEST_F(Seeded, ErrorDuringBackwardRestoresRngAndBuffers) {
  auto x = torch::randn({5, 3}, torch::kDouble);
  for (auto g : {Gradient::Anode, Gradient::Adjoint}) {
    torch::manual_seed(7);
    anode::ODEBlock<FlakyImpl> block(Flaky(), opts(Method::RK2, 3, g));
    block->to(torch::kDouble);
    auto loss = block->forward(x).pow(2).sum();
    std::vector<torch::Tensor> buffers;
    for (const auto& b : block->buffers()) buffers.push_back(b.clone());
    const auto rng = cpu_rng_state();
    block->func()->fail = true;
    EXPECT_TRUE(throws_mentioning([&] { loss.backward(); }, {"shape", "[5, 2]", "[5, 3]"}))
        << anode::to_string(g);
    EXPECT_TRUE(torch::equal(cpu_rng_state(), rng)) << anode::to_string(g);
    const auto after = block->buffers();
    for (std::size_t i = 0; i < after.size(); ++i) {
      EXPECT_TRUE(torch::equal(after[i], buffers[i])) << anode::to_string(g) << " buffer " << i;
    }
    for (const auto& p : block->parameters()) EXPECT_FALSE(p.grad().defined());
    // The block works again once the RHS does.
    block->func()->fail = false;
    block->forward(x).pow(2).sum().backward();
    for (const auto& p : block->parameters()) EXPECT_TRUE(p.grad().defined());
  }
  expect_usable();
}

}  // namespace test_errors
