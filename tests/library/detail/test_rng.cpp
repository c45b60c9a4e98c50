// detail/rng.hpp on its own: capturing, restoring, comparing and digesting generator states, and
// the fork that keeps a recomputation's draws out of the caller's random stream.

#include <anode/detail/rng.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <vector>

namespace test_rng {

using anode::detail::replayed_generators;
using anode::detail::RngFork;
using anode::detail::RngState;

at::Generator cpu_default() {
  return anode::detail::default_generator(torch::kCPU);
}

TEST(ReplayedGenerators, DefaultIsTheCpuGeneratorForCpuState) {
  const auto gens = replayed_generators({}, torch::kCPU);
  ASSERT_EQ(gens.size(), 1u);
  EXPECT_EQ(gens[0], cpu_default());
}

TEST(ReplayedGenerators, NamedGeneratorsReplaceTheDefaults) {
  auto mine = at::detail::createCPUGenerator(7);
  const auto gens = replayed_generators({mine}, torch::kCPU);
  ASSERT_EQ(gens.size(), 1u);
  EXPECT_EQ(gens[0], mine);
  EXPECT_NE(gens[0], cpu_default());
}

TEST(RngState, RestoreReplaysTheSameDraws) {
  torch::manual_seed(3);
  const auto s = RngState::capture(torch::Device(torch::kCPU));
  EXPECT_EQ(s.size(), 1u);
  const auto first = torch::randn({16});
  s.restore();
  const auto again = torch::randn({16});
  EXPECT_TRUE(torch::equal(first, again));
}

TEST(RngState, SameAsTellsWhetherAnythingWasDrawn) {
  torch::manual_seed(3);
  const auto before = RngState::capture(torch::Device(torch::kCPU));
  EXPECT_TRUE(before.same_as(RngState::capture(torch::Device(torch::kCPU))));
  (void)torch::rand({1});
  const auto after = RngState::capture(torch::Device(torch::kCPU));
  EXPECT_FALSE(before.same_as(after));
  before.restore();
  EXPECT_TRUE(before.same_as(RngState::capture(torch::Device(torch::kCPU))));
  // Different generators (or a different number of them) are never the same state.
  auto other = at::detail::createCPUGenerator(3);
  EXPECT_FALSE(before.same_as(RngState::capture(std::vector<at::Generator>{other})));
  EXPECT_FALSE(before.same_as(RngState::capture(std::vector<at::Generator>{})));
}

TEST(RngState, DigestFollowsTheState) {
  torch::manual_seed(5);
  const auto a = RngState::capture(torch::Device(torch::kCPU));
  const auto b = RngState::capture(torch::Device(torch::kCPU));
  ASSERT_EQ(a.digest().size(), 1u);
  EXPECT_EQ(a.digest(), b.digest());
  (void)torch::rand({1});
  EXPECT_NE(a.digest(), RngState::capture(torch::Device(torch::kCPU)).digest());
  // Two generators: one digest each, in order.
  auto g = at::detail::createCPUGenerator(1);
  const auto two = RngState::capture(std::vector<at::Generator>{cpu_default(), g});
  ASSERT_EQ(two.digest().size(), 2u);
  EXPECT_NE(two.digest()[0], two.digest()[1]);
}

TEST(RngState, ExplicitGeneratorIsCapturedAndRestored) {
  auto g = at::detail::createCPUGenerator(11);
  const auto s = RngState::capture(std::vector<at::Generator>{g});
  const auto first = torch::randn({8}, g);
  s.restore();
  EXPECT_TRUE(torch::equal(first, torch::randn({8}, g)));
}

TEST(RngState, ADrawOnAnotherThreadIsVisible) {
  // The default CPU generator is shared by every thread: a draw elsewhere changes its state,
  // which is what CheckpointFunction's end-of-recompute check relies on to detect it.
  torch::manual_seed(2);
  const auto before = RngState::capture(torch::Device(torch::kCPU));
  std::thread other([] { (void)torch::rand({4}); });
  other.join();
  EXPECT_FALSE(before.same_as(RngState::capture(torch::Device(torch::kCPU))));
}

TEST(RngFork, DrawsInsideTheForkDoNotMoveTheOuterStream) {
  torch::manual_seed(9);
  const auto expected = torch::rand({4});
  torch::manual_seed(9);
  {
    RngFork fork(torch::Device(torch::kCPU));
    (void)torch::rand({1000});  // a recomputation's dropout masks
  }
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected));
}

TEST(RngFork, SavedIsTheStateAtConstruction) {
  torch::manual_seed(4);
  RngFork fork(std::vector<at::Generator>{cpu_default()});
  const auto inside = torch::rand({3});
  fork.saved().restore();
  EXPECT_TRUE(torch::equal(torch::rand({3}), inside));
}

}  // namespace test_rng
