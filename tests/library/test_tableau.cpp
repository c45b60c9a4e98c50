// Butcher tableaux, the time grid and the stepper (include/anode/tableau.hpp, integrate.hpp):
// every built-in table is valid and satisfies its order conditions, bad tables are rejected with
// a clear message, each method converges at its order on problems with known solutions, the grid
// is t0 + n h with t_N = t1 exactly, and the integrator's observer sees every state in order.

#include "support/testing.hpp"

#include <cmath>
#include <string>
#include <vector>

namespace test_tableau {

using namespace anode_test;
using anode::ButcherTableau;
using anode::Method;
using anode::Stepper;
using anode::TimeGrid;

// The classical order conditions up to order 4 (explicit methods, c_i = sum_j a_ij).
std::vector<std::pair<std::string, double>> order_conditions(const ButcherTableau& t) {
  const auto s = static_cast<std::size_t>(t.stages());
  auto a = [&](std::size_t i, std::size_t j) { return j < i ? t.a[i][j] : 0.0; };
  double b1 = 0, bc = 0, bc2 = 0, bac = 0, bc3 = 0, bcac = 0, bac2 = 0, baac = 0;
  for (std::size_t i = 0; i < s; ++i) {
    b1 += t.b[i];
    bc += t.b[i] * t.c[i];
    bc2 += t.b[i] * t.c[i] * t.c[i];
    bc3 += t.b[i] * t.c[i] * t.c[i] * t.c[i];
    for (std::size_t j = 0; j < s; ++j) {
      bac += t.b[i] * a(i, j) * t.c[j];
      bcac += t.b[i] * t.c[i] * a(i, j) * t.c[j];
      bac2 += t.b[i] * a(i, j) * t.c[j] * t.c[j];
      for (std::size_t k = 0; k < s; ++k) baac += t.b[i] * a(i, j) * a(j, k) * t.c[k];
    }
  }
  // {condition, residual}; the first `order` groups must vanish.
  return {{"sum b = 1", b1 - 1.0},
          {"sum b c = 1/2", bc - 0.5},
          {"sum b c^2 = 1/3", bc2 - 1.0 / 3},
          {"sum b a c = 1/6", bac - 1.0 / 6},
          {"sum b c^3 = 1/4", bc3 - 0.25},
          {"sum b c a c = 1/8", bcac - 1.0 / 8},
          {"sum b a c^2 = 1/12", bac2 - 1.0 / 12},
          {"sum b a a c = 1/24", baac - 1.0 / 24}};
}

// How many conditions of order <= p there are (1, 2, 4, 8 for p = 1..4).
std::size_t conditions_up_to(int p) {
  return p <= 1 ? 1 : p == 2 ? 2 : p == 3 ? 4 : 8;
}

// Two problems with known solutions, float64:
//   decay:    z' = -2 t z,          z(0) = 1 on [0, 1]:   z(1) = exp(-1)   (time-dependent)
//   rotation: z' = [[0,1],[-1,0]] z, z(0) = (1, 0) on [0, 2]: z(2) = (cos 2, -sin 2)
struct Problem {
  std::string name;
  anode::RHS f;
  torch::Tensor z0;
  double t1;
  torch::Tensor exact;
};

std::vector<Problem> problems() {
  const auto d = torch::kDouble;
  auto rot = torch::tensor({{0.0, 1.0}, {-1.0, 0.0}}, d);
  return {{"decay", [](double t, const torch::Tensor& z) { return -2.0 * t * z; },
           torch::ones({1}, d), 1.0, torch::full({1}, std::exp(-1.0), d)},
          {"rotation", [rot](double, const torch::Tensor& z) { return z.matmul(rot.t()); },
           torch::tensor({1.0, 0.0}, d), 2.0, torch::tensor({std::cos(2.0), -std::sin(2.0)}, d)}};
}

// max |z_N - z(t1)| for a tableau and N steps, through the Stepper.
double error_of(const ButcherTableau& tab, const Problem& p, int64_t n) {
  torch::NoGradGuard no_grad;
  Stepper stepper(p.f, tab, TimeGrid{0.0, p.t1, n});
  auto z = stepper.integrate(p.z0, 0, n);
  return (z - p.exact).abs().max().item<double>();
}

double observed_order(const ButcherTableau& tab, const Problem& p, int64_t n) {
  return std::log2(error_of(tab, p, n) / error_of(tab, p, 2 * n));
}

// Custom tables: new methods are data.
const ButcherTableau& heun_tableau() {
  static const ButcherTableau t{"Heun", 2, {{}, {1.0}}, {0.5, 0.5}, {0.0, 1.0}};
  return t;
}
const ButcherTableau& kutta3_tableau() {
  static const ButcherTableau t{
      "Kutta3", 3, {{}, {0.5}, {-1.0, 2.0}}, {1.0 / 6, 2.0 / 3, 1.0 / 6}, {0.0, 0.5, 1.0}};
  return t;
}
const ButcherTableau& three_eighths_tableau() {
  static const ButcherTableau t{"3/8 rule",
                                4,
                                {{}, {1.0 / 3}, {-1.0 / 3, 1.0}, {1.0, -1.0, 1.0}},
                                {1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8},
                                {0.0, 1.0 / 3, 2.0 / 3, 1.0}};
  return t;
}

// ---------------------------------------------------------------------------------------------
// Tables.

TEST(Tableau, BuiltInTablesValidate) {
  struct Expect {
    Method method;
    const ButcherTableau* table;
    int order;
    int64_t stages;
  };
  for (const auto& e : {Expect{Method::Euler, &anode::euler_tableau(), 1, 1},
                        Expect{Method::RK2, &anode::midpoint_tableau(), 2, 2},
                        Expect{Method::RK4, &anode::rk4_tableau(), 4, 4}}) {
    const auto& t = anode::tableau(e.method);
    EXPECT_EQ(&t, e.table) << anode::to_string(e.method);
    EXPECT_NO_THROW(t.validate()) << t.name;
    EXPECT_EQ(t.order, e.order) << t.name;
    EXPECT_EQ(t.stages(), e.stages) << t.name;
    EXPECT_NE(t.name.find(anode::to_string(e.method)), std::string::npos) << t.name;
  }
  // RK2 is the explicit midpoint method: b = (0, 1), c = (0, 1/2).
  EXPECT_EQ(anode::midpoint_tableau().b, (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(anode::midpoint_tableau().c, (std::vector<double>{0.0, 0.5}));
  for (const auto* t : {&heun_tableau(), &kutta3_tableau(), &three_eighths_tableau()}) {
    EXPECT_NO_THROW(t->validate()) << t->name;
  }
  EXPECT_TRUE(throws_mentioning([] { anode::tableau(static_cast<Method>(9)); }, {"Method", "9"}));
}

// The method table (method.hpp) restates what each tableau is: its row must agree with the table
// it names, every method parses from its key and alias and prints as its name, and a value outside
// the enum is rejected wherever a method is looked up.
TEST(Tableau, MethodTableAgreesWithTheTableaux) {
  for (std::size_t i = 0; i < anode::kMethods.size(); ++i) {
    const anode::MethodTraits& m = anode::kMethods[i];
    EXPECT_EQ(static_cast<std::size_t>(m.method), i) << m.name;
    EXPECT_EQ(&anode::method_traits(m.method), &m) << m.name;
    const ButcherTableau& t = m.tableau();
    EXPECT_EQ(&anode::tableau(m.method), &t) << m.name;
    EXPECT_NO_THROW(t.validate()) << m.name;
    EXPECT_EQ(m.order, t.order) << m.name;
    EXPECT_EQ(m.embedded_order, t.adaptive() ? t.embedded_order : 0) << m.name;
    EXPECT_EQ(m.adaptive(), t.adaptive()) << m.name;
    EXPECT_EQ(m.stages, t.stages()) << m.name;
    EXPECT_EQ(m.fsal, t.fsal()) << m.name;
    EXPECT_EQ(std::string(anode::to_string(m.method)), m.name);
    EXPECT_EQ(anode::method_from_string(m.key), m.method) << m.key;
    EXPECT_EQ(anode::method_from_string(m.name), m.method) << m.name;  // case-insensitive
    if (m.alias != nullptr) {
      EXPECT_EQ(anode::method_from_string(m.alias), m.method) << m.alias;
    }
  }
  EXPECT_EQ(anode::find_method(static_cast<Method>(6)), nullptr);
  EXPECT_EQ(anode::find_method(static_cast<Method>(-1)), nullptr);
  EXPECT_STREQ(anode::to_string(static_cast<Method>(6)), "?");
  EXPECT_TRUE(throws_mentioning([] { anode::method_traits(static_cast<Method>(-1)); },
                                {"invalid Method value -1"}));
  EXPECT_TRUE(throws_mentioning(
      [] { anode::method_from_string("rk3"); },
      {"unknown method 'rk3'", "expected euler, rk2, rk4, bosh3, dopri5 or tsit5"}));
  static_assert(anode::find_method(Method::Dopri5)->adaptive());
  static_assert(!anode::find_method(Method::RK4)->adaptive());
}

// Each table satisfies the order conditions of its declared order and (for Euler, RK2) fails the
// next one, so `order` is neither over- nor under-stated.
TEST(Tableau, OrderConditions) {
  for (const auto* t : {&anode::euler_tableau(), &anode::midpoint_tableau(), &anode::rk4_tableau(),
                        &heun_tableau(), &kutta3_tableau(), &three_eighths_tableau()}) {
    const auto conditions = order_conditions(*t);
    for (std::size_t i = 0; i < conditions_up_to(t->order); ++i) {
      EXPECT_NEAR(conditions[i].second, 0.0, 1e-15) << t->name << ": " << conditions[i].first;
    }
    if (t->order < 4) {
      bool next_fails = false;
      for (std::size_t i = conditions_up_to(t->order); i < conditions_up_to(t->order + 1); ++i) {
        next_fails = next_fails || std::abs(conditions[i].second) > 1e-3;
      }
      EXPECT_TRUE(next_fails) << t->name << " satisfies order " << t->order + 1;
    }
  }
}

TEST(Tableau, BadTablesAreRejectedWithAClearMessage) {
  const ButcherTableau weights{"bad-weights", 2, {{}, {0.5}}, {0.5, 0.4}, {0.0, 0.5}};
  EXPECT_TRUE(throws_mentioning([&] { weights.validate(); },
                                {"'bad-weights'", "weights sum to 0.9", "not 1"}));
  const ButcherTableau nodes{"bad-nodes", 2, {{}, {0.5}}, {0.0, 1.0}, {0.0, 0.3}};
  EXPECT_TRUE(
      throws_mentioning([&] { nodes.validate(); }, {"'bad-nodes'", "c[1] = 0.3", "row sum 0.5"}));
  const ButcherTableau implicit{"implicit", 2, {{0.5}, {0.5}}, {0.5, 0.5}, {0.5, 0.5}};
  EXPECT_TRUE(throws_mentioning([&] { implicit.validate(); },
                                {"'implicit'", "row 0 has 1 entries", "explicit"}));
  const ButcherTableau sizes{"bad-sizes", 2, {{}}, {0.5, 0.5}, {0.0, 1.0}};
  EXPECT_TRUE(throws_mentioning([&] { sizes.validate(); },
                                {"'bad-sizes'", "inconsistent sizes", "a: 1", "b: 2", "c: 2"}));
  const ButcherTableau empty{"empty", 1, {}, {}, {}};
  EXPECT_TRUE(throws_mentioning([&] { empty.validate(); }, {"'empty'", "no stages"}));
  // A table just inside the tolerance of its checks is accepted.
  const ButcherTableau close{"close", 1, {{}}, {1.0 + 1e-14}, {0.0}};
  EXPECT_NO_THROW(close.validate());
}

// ---------------------------------------------------------------------------------------------
// Convergence: log2(err(N) / err(2N)) is the method's order, within 0.15.

TEST(Tableau, ConvergenceOrderOfBuiltInMethods) {
  struct Case {
    Method method;
    int64_t n;  // large enough to be in the asymptotic regime, small enough to stay above round-off
  };
  for (const auto& p : problems()) {
    for (const auto& c : {Case{Method::Euler, 32}, Case{Method::RK2, 16}, Case{Method::RK4, 16}}) {
      const auto& tab = anode::tableau(c.method);
      const double order = observed_order(tab, p, c.n);
      EXPECT_NEAR(order, tab.order, 0.15) << p.name << " " << tab.name;
      // The error actually shrinks to a small number (no trivial 0/0 or inf/inf ratios).
      EXPECT_GT(error_of(tab, p, 2 * c.n), 0.0);
      EXPECT_LT(error_of(tab, p, 2 * c.n), 0.05);
    }
  }
}

// The public entry point (odeint) converges at the same orders, through every gradient mode.
TEST(Tableau, ConvergenceOrderThroughOdeint) {
  const auto d = torch::kDouble;
  auto f = [](double t, const torch::Tensor& z) { return -2.0 * t * z; };
  auto z0 = torch::ones({1}, d).requires_grad_(true);  // so Anode and Adjoint build their nodes
  const double exact = std::exp(-1.0);
  for (auto g : {anode::Gradient::Backprop, anode::Gradient::Anode, anode::Gradient::Adjoint}) {
    for (auto [m, n] :
         {std::pair<Method, int64_t>{Method::Euler, 64}, {Method::RK2, 32}, {Method::RK4, 16}}) {
      auto err = [&](int64_t steps) {
        auto o = anode::ODEBlockOptions().method(m).steps(steps).gradient(g);
        return std::abs(anode::odeint(f, z0, o).item<double>() - exact);
      };
      EXPECT_NEAR(std::log2(err(n) / err(2 * n)), anode::tableau(m).order, 0.15)
          << anode::to_string(m) << " " << anode::to_string(g);
    }
  }
}

// The embedded pairs, stepped with fixed steps: their main weights converge at their order, and
// their embedded weights satisfy the order conditions of the embedded order (and not the next).
TEST(Tableau, EmbeddedPairsConvergeAndValidate) {
  struct Case {
    Method method;
    int order, embedded;
    int64_t n;
  };
  for (const auto& c : {Case{Method::Bosh3, 3, 2, 16}, Case{Method::Dopri5, 5, 4, 8},
                        Case{Method::Tsit5, 5, 4, 8}}) {
    const auto& tab = anode::tableau(c.method);
    EXPECT_NO_THROW(tab.validate()) << tab.name;
    EXPECT_TRUE(tab.adaptive() && tab.fsal()) << tab.name;
    EXPECT_EQ(tab.order, c.order) << tab.name;
    EXPECT_EQ(tab.achieved_order(tab.b), c.order) << tab.name;
    EXPECT_EQ(tab.achieved_order(tab.b_embedded), c.embedded) << tab.name;
    // On the rotation: the time-dependent decay is a problem Tsit5's error constants were tuned
    // for (it converges there at about order 7 before reaching round-off).
    const auto rotation = problems()[1];
    EXPECT_NEAR(observed_order(tab, rotation, c.n), c.order, 0.2) << tab.name;
  }
  // And the fixed-step presets are neither.
  for (auto m : all_methods())
    EXPECT_FALSE(anode::tableau(m).adaptive() || anode::tableau(m).fsal());
}

// A claimed order is checked against the order conditions of every rooted tree up to it.
TEST(Tableau, ClaimedOrderIsChecked) {
  ButcherTableau heun3{"heun-claims-3", 3, {{}, {1.0}}, {0.5, 0.5}, {0.0, 1.0}, {}, 0};
  EXPECT_TRUE(throws_mentioning(
      [&] { heun3.validate(); },
      {"'heun-claims-3'", "claims order 3", "order-3 condition", "it has order 2"}));
  ButcherTableau emb{"heun-euler", 2, {{}, {1.0}}, {0.5, 0.5}, {0.0, 1.0}, {1.0, 0.0}, 2};
  EXPECT_TRUE(throws_mentioning([&] { emb.validate(); },
                                {"'heun-euler'", "embedded weights", "order-2 condition"}));
  emb.embedded_order = 1;
  EXPECT_NO_THROW(emb.validate());
  EXPECT_TRUE(emb.adaptive());
  EXPECT_FALSE(emb.fsal());
  // Through the options: validated once, when set.
  EXPECT_TRUE(
      throws_mentioning([&] { anode::ODEBlockOptions().tableau(heun3); }, {"claims order 3"}));
  auto o = anode::ODEBlockOptions().tableau(emb);
  EXPECT_TRUE(o.adaptive());
  EXPECT_EQ(&o.effective_tableau(), o.tableau().get());
}

TEST(Tableau, CustomTablesConvergeAtTheirOrder) {
  for (const auto& p : problems()) {
    for (const auto* t : {&heun_tableau(), &kutta3_tableau(), &three_eighths_tableau()}) {
      EXPECT_NEAR(observed_order(*t, p, 64), t->order, 0.15) << p.name << " " << t->name;
    }
  }
}

// rk_step on a list of tensors (the adjoint's augmented state) is rk_step on each tensor.
TEST(Tableau, ListStateStepsLikeEachTensor) {
  torch::manual_seed(0);
  auto a = torch::randn({3}, torch::kDouble), b = torch::randn({2, 2}, torch::kDouble);
  auto f_one = [](double t, const torch::Tensor& z) { return torch::sin(z) * (1.0 + t); };
  auto f_list = [&](double t, const std::vector<torch::Tensor>& y) {
    std::vector<torch::Tensor> out;
    for (const auto& z : y) out.push_back(f_one(t, z));
    return out;
  };
  for (auto m : all_methods()) {
    const auto& tab = anode::tableau(m);
    auto y = anode::rk_step(tab, f_list, 0.3, 0.1, std::vector<torch::Tensor>{a, b});
    EXPECT_TRUE(torch::equal(y[0], anode::rk_step(tab, f_one, 0.3, 0.1, a))) << tab.name;
    EXPECT_TRUE(torch::equal(y[1], anode::rk_step(tab, f_one, 0.3, 0.1, b))) << tab.name;
  }
}

// ---------------------------------------------------------------------------------------------
// The time grid.

TEST(TimeGrid, EndsExactlyAtT1AndIsNeverAccumulated) {
  bool end_needs_special_case = false;  // t0 + N h != t1 for some grid below
  bool accumulation_differs = false;    // t0 + h + h + ... != t0 + n h for some grid below
  const std::vector<TimeGrid> grids{{0.1, 0.7, 3}, {0.0, 1.0, 3},   {0.3, 1.7, 5},  {0.0, 0.1, 7},
                                    {1.0, 0.0, 3}, {-0.2, 0.9, 11}, {0.1, 0.2, 10}, {0.0, 1.0, 1}};
  for (const auto& g : grids) {
    const double h = (g.t1 - g.t0) / static_cast<double>(g.steps);
    EXPECT_EQ(g.h(), h);
    EXPECT_EQ(g.time(0), g.t0);
    EXPECT_EQ(g.time(g.steps), g.t1);
    double accumulated = g.t0;
    for (int64_t n = 1; n < g.steps; ++n) {
      EXPECT_EQ(g.time(n), g.t0 + static_cast<double>(n) * h) << g.t0 << " " << g.t1 << " " << n;
      accumulated += h;
      accumulation_differs = accumulation_differs || accumulated != g.time(n);
    }
    end_needs_special_case =
        end_needs_special_case || g.t0 + static_cast<double>(g.steps) * h != g.t1;
  }
  EXPECT_TRUE(end_needs_special_case);
  EXPECT_TRUE(accumulation_differs);
  // From options; a reversed interval has a negative step.
  const auto g = TimeGrid::from(anode::ODEBlockOptions().t0(2.0).t1(1.0).steps(4));
  EXPECT_EQ(g.t0, 2.0);
  EXPECT_EQ(g.t1, 1.0);
  EXPECT_EQ(g.steps, 4);
  EXPECT_EQ(g.h(), -0.25);
}

// The stepper evaluates f at t_n + c_i h, with t_n from the grid.
TEST(TimeGrid, StepperEvaluatesAtTheStageTimes) {
  const TimeGrid grid{-0.2, 0.9, 11};
  for (auto m : all_methods()) {
    const auto& tab = anode::tableau(m);
    std::vector<double> seen, expected;
    Stepper stepper(
        [&](double t, const torch::Tensor& z) {
          seen.push_back(t);
          return -z;
        },
        tab, grid);
    stepper.integrate(torch::ones({2}, torch::kDouble), 0, grid.steps);
    for (int64_t n = 0; n < grid.steps; ++n) {
      for (double c : tab.c) expected.push_back(grid.time(n) + c * grid.h());
    }
    EXPECT_EQ(seen, expected) << tab.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Stepper::integrate and its observer.

TEST(Stepper, ObserverSeesEveryStateInOrder) {
  torch::NoGradGuard no_grad;
  const auto rot = torch::tensor({{0.0, 1.0}, {-1.0, 0.0}}, torch::kDouble);
  Stepper stepper([&](double t, const torch::Tensor& z) { return z.matmul(rot) * (1.0 + t); },
                  anode::rk4_tableau(), TimeGrid{0.0, 1.0, 5});
  const auto z0 = torch::tensor({1.0, 0.5}, torch::kDouble);

  // The reference trajectory, one step at a time.
  std::vector<torch::Tensor> trajectory{z0};
  for (int64_t n = 0; n < 5; ++n) trajectory.push_back(stepper.step(n, trajectory.back()));

  std::vector<int64_t> positions;
  std::vector<torch::Tensor> states;
  auto zN = stepper.integrate(z0, 0, 5, [&](int64_t n, const torch::Tensor& z) {
    positions.push_back(n);
    states.push_back(z.clone());
  });
  EXPECT_EQ(positions, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  ASSERT_EQ(states.size(), 5u);
  for (std::size_t i = 0; i < states.size(); ++i) {
    EXPECT_TRUE(torch::equal(states[i], trajectory[i + 1])) << i + 1;
  }
  EXPECT_TRUE(torch::equal(zN, trajectory[5]));
  // The states are distinct (the observer is not handed one tensor over and over).
  EXPECT_FALSE(torch::equal(states[0], states[1]));

  // A sub-range starts at `begin` and reports begin+1 .. end.
  positions.clear();
  states.clear();
  auto z5 = stepper.integrate(trajectory[2], 2, 5, [&](int64_t n, const torch::Tensor& z) {
    positions.push_back(n);
    states.push_back(z.clone());
  });
  EXPECT_EQ(positions, (std::vector<int64_t>{3, 4, 5}));
  for (std::size_t i = 0; i < states.size(); ++i) {
    EXPECT_TRUE(torch::equal(states[i], trajectory[i + 3]));
  }
  EXPECT_TRUE(torch::equal(z5, trajectory[5]));

  // An empty range calls nothing and returns the state unchanged.
  int calls = 0;
  auto same = stepper.integrate(z0, 3, 3, [&](int64_t, const torch::Tensor&) { ++calls; });
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(torch::equal(same, z0));
  // Without an observer, the same result.
  EXPECT_TRUE(torch::equal(stepper.integrate(z0, 0, 5), zN));
}

}  // namespace test_tableau
