// ODEBlockOptions: an option that the chosen configuration would ignore raises, naming it (as
// `checkpoints` does with another gradient); `with_gradient` gives the same options under another
// gradient mode, with what only Anode accepts reset.

#include <anode/anode.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "support/testing.hpp"

namespace test_options {

using anode::Gradient;
using anode::Method;
using namespace anode_test;

// Everything only Gradient::Anode accepts, set at once (keep_latest_graph excludes binomial
// checkpointing, so there are two such sets).
anode::ODEBlockOptions anode_whole_block() {
  return anode::ODEBlockOptions()
      .method(Method::RK2)
      .steps(4)
      .keep_latest_graph(true)
      .generators({at::detail::createCPUGenerator(7)})
      .verify_recompute(true)
      .preserve_rng_state(true);
}
anode::ODEBlockOptions anode_binomial() {
  return anode::ODEBlockOptions()
      .method(Method::RK4)
      .steps(6)
      .checkpoints(2)
      .keep_forward_checkpoints(true)
      .generators({at::detail::createCPUGenerator(7)});
}

TEST(WithGradient, ResetsWhatOnlyAnodeAcceptsAndKeepsTheSolve) {
  for (const auto& o :
       {anode_whole_block(), anode_binomial(),
        anode_binomial().checkpoints(0).keep_forward_checkpoints(false).memory_budget(1 << 20)}) {
    ASSERT_NO_THROW(o.validate()) << o;
    for (auto g : {Gradient::Backprop, Gradient::Adjoint}) {
      // Set by hand, the gradient alone makes the options invalid.
      EXPECT_ANY_THROW(anode::ODEBlockOptions(o).gradient(g).validate()) << o;
      const auto r = o.with_gradient(g);
      EXPECT_NO_THROW(r.validate()) << r;
      EXPECT_EQ(r.gradient(), g);
      EXPECT_EQ(r.method(), o.method());  // the solve itself is unchanged
      EXPECT_EQ(r.steps(), o.steps());
      EXPECT_EQ(r.checkpoints(), 0);
      EXPECT_FALSE(r.keep_forward_checkpoints());
      EXPECT_EQ(r.memory_budget(), 0);
      EXPECT_FALSE(r.keep_latest_graph());
      EXPECT_TRUE(r.generators().empty());
    }
    // Back to Anode: nothing is reset.
    const auto same = o.with_gradient(Gradient::Anode);
    EXPECT_EQ(same.checkpoints(), o.checkpoints());
    EXPECT_EQ(same.keep_latest_graph(), o.keep_latest_graph());
    EXPECT_EQ(same.generators().size(), o.generators().size());
  }
}

// `steps` and `step_size` belong to fixed-step methods: an adaptive method would ignore them.
TEST(IgnoredOptions, StepsWithAnAdaptiveMethodRaise) {
  for (auto m : {Method::Bosh3, Method::Dopri5, Method::Tsit5}) {
    const auto name = anode::to_string(m);
    EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions().method(m).steps(8).validate(); },
                                  {"ODEBlockOptions::steps(8)", "fixed-step", name, "rtol/atol"}));
    EXPECT_TRUE(
        throws_mentioning([&] { anode::ODEBlockOptions().method(m).step_size(0.1).validate(); },
                          {"ODEBlockOptions::step_size(0.1)", name, "first_step"}));
    EXPECT_NO_THROW(anode::ODEBlockOptions().method(m).steps(1).validate());
  }
  // The same through the module and the functional forms.
  torch::nn::Linear f(2, 2);
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::odeint(f, torch::randn({1, 2}),
                      anode::ODEBlockOptions().method(Method::Dopri5).steps(4));
      },
      {"steps(4)"}));
  EXPECT_TRUE(throws_mentioning(
      [&] {
        anode::ODEBlock<torch::nn::LinearImpl> b(
            f, anode::ODEBlockOptions().method(Method::Dopri5).steps(4));
      },
      {"steps(4)"}));
}

// The tolerances belong to adaptive methods: a fixed-step method would ignore them.
TEST(IgnoredOptions, TolerancesWithAFixedStepMethodRaise) {
  for (auto m : {Method::Euler, Method::RK2, Method::RK4}) {
    const auto o = anode::ODEBlockOptions().method(m);
    EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).rtol(1e-3).validate(); },
                                  {"ODEBlockOptions::rtol(0.001)", "adaptive", "fixed-step"}));
    EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).atol(1e-4).validate(); },
                                  {"ODEBlockOptions::atol(0.0001)"}));
    EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).max_steps(10).validate(); },
                                  {"ODEBlockOptions::max_steps(10)"}));
    EXPECT_TRUE(throws_mentioning([&] { anode::ODEBlockOptions(o).first_step(0.5).validate(); },
                                  {"ODEBlockOptions::first_step(0.5)"}));
    EXPECT_NO_THROW(o.validate());
  }
  // A user tableau decides as its own kind: an embedded one takes tolerances.
  EXPECT_NO_THROW(
      anode::ODEBlockOptions().tableau(anode::tableau(Method::Bosh3)).rtol(1e-3).validate());
}

// The generators are replayed by Anode's recompute; Backprop replays nothing and the adjoint
// evaluates f at other states, where a replay cannot be right.
TEST(IgnoredOptions, GeneratorsWithoutAnodeRaise) {
  for (auto g : {Gradient::Backprop, Gradient::Adjoint}) {
    EXPECT_TRUE(throws_mentioning(
        [&] {
          anode::ODEBlockOptions()
              .gradient(g)
              .generators({at::detail::createCPUGenerator(1)})
              .validate();
        },
        {"ODEBlockOptions::generators", "Gradient::Anode only", anode::to_string(g)}));
  }
  EXPECT_NO_THROW(
      anode::ODEBlockOptions().generators({at::detail::createCPUGenerator(1)}).validate());
}

TEST(OptionsContract, AnodeOnlyOptionsAreRejectedWithOtherModes) {
  for (auto g : {Gradient::Backprop, Gradient::Adjoint}) {
    const std::string mode = anode::to_string(g);
    EXPECT_TRUE(throws_mentioning([&] { opts(Method::RK2, 4, g).checkpoints(2).validate(); },
                                  {"checkpoints(2)", "Gradient::Anode only", mode}));
    EXPECT_TRUE(throws_mentioning([&] { opts(Method::RK2, 4, g).memory_budget(100).validate(); },
                                  {"memory_budget(100)", "Gradient::Anode only", mode}));
    EXPECT_TRUE(throws_mentioning(
        [&] { opts(Method::RK2, 4, g).keep_forward_checkpoints(true).validate(); },
        {"keep_forward_checkpoints(true)", "Gradient::Anode only"}));
  }
  EXPECT_TRUE(
      throws_mentioning([&] { opts(Method::RK2, 4).keep_forward_checkpoints(true).validate(); },
                        {"keep_forward_checkpoints(true)", "checkpoints is 0"}));
  EXPECT_NO_THROW(opts(Method::RK2, 4).checkpoints(2).keep_forward_checkpoints(true).validate());
  EXPECT_TRUE(throws_mentioning(
      [&] { opts(Method::RK2, 4).generators({at::Generator()}).validate(); }, {"generators[0]"}));
}

}  // namespace test_options
