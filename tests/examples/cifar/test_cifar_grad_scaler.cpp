// The fp16 loss scaler of anode-cifar (examples/cifar/grad_scaler.hpp): a step with an inf or NaN
// gradient is skipped and halves the scale, finite steps unscale exactly and take the optimizer's
// step, the scale grows after growth_interval finite steps, its state survives a checkpoint, and
// the plain-tensor kernels (the CPU path) agree with ATen's (the CUDA path) where both can run.

#include "examples/cifar/checkpoint.hpp"
#include "examples/cifar/grad_scaler.hpp"
#include "support/remove_tree.hpp"
#include "support/testing.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

namespace test_cifar_grad_scaler {

using anode_test::all_equal;

/// y = W x + b with W 3x4: one step of SGD on sum(y) * k.
struct Problem {
  torch::nn::Linear model{4, 3};
  torch::optim::SGD sgd{model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9)};
  torch::Tensor x = torch::randn({5, 4});

  torch::Tensor loss(double k = 1.0) { return model(x).sum() * k; }
  std::vector<torch::Tensor> params() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
    return out;
  }
  std::vector<torch::Tensor> grads() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  }
};

/// One scaled step of `p` (the loss times `k`); returns whether it was taken.
bool scaled_step(Problem& p, cifar::GradScaler& scaler, double k = 1.0) {
  p.sgd.zero_grad();
  scaler.scale(p.loss(k)).backward();
  const bool taken = scaler.step(p.sgd);
  scaler.update();
  return taken;
}

TEST(GradScaler, AStepWithAnInfGradientIsSkippedAndHalvesTheScale) {
  torch::manual_seed(0);
  for (const double bad :
       {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    Problem p;
    cifar::GradScaler scaler(torch::kCPU);
    ASSERT_TRUE(scaled_step(p, scaler));  // a finite step first: momentum and tracker in play
    EXPECT_EQ(scaler.growth_tracker(), 1);
    const auto before = p.params();
    p.x[2][1] = bad;  // W's gradient and the loss become non-finite
    EXPECT_FALSE(scaled_step(p, scaler)) << bad;
    EXPECT_TRUE(all_equal(p.params(), before)) << "the skipped step changed the weights";
    EXPECT_EQ(scaler.scale_value(), 32768.0);
    EXPECT_EQ(scaler.growth_tracker(), 0);
    EXPECT_EQ(scaler.skipped_steps(), 1);
    EXPECT_NE(scaler.summary().find("fp16 loss scale 32768, 1 step skipped so far"),
              std::string::npos)
        << scaler.summary();
    // The next finite step is taken again, at the halved scale.
    p.x[2][1] = 0.5;
    EXPECT_TRUE(scaled_step(p, scaler));
    EXPECT_FALSE(all_equal(p.params(), before));
    EXPECT_EQ(scaler.skipped_steps(), 1);
  }
}

TEST(GradScaler, FiniteStepsUnscaleExactlyAndTakeTheSameStep) {
  torch::manual_seed(1);
  Problem plain, scaled;
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < plain.model->parameters().size(); ++i)
      scaled.model->parameters()[i].copy_(plain.model->parameters()[i]);
  }
  scaled.x = plain.x.clone();
  cifar::GradScaler scaler(torch::kCPU, cifar::GradScalerOptions().init_scale(1024));
  for (int step = 0; step < 3; ++step) {
    plain.sgd.zero_grad();
    plain.loss().backward();
    const auto want = plain.grads();
    plain.sgd.step();

    scaled.sgd.zero_grad();
    scaler.scale(scaled.loss()).backward();
    // Before unscaling the gradients are 1024 times the plain ones (and not equal to them).
    EXPECT_FALSE(all_equal(scaled.grads(), want));
    scaler.unscale(scaled.sgd);
    EXPECT_TRUE(all_equal(scaled.grads(), want)) << "step " << step;
    EXPECT_TRUE(scaler.step(scaled.sgd));
    scaler.update();
    EXPECT_TRUE(all_equal(scaled.params(), plain.params())) << "step " << step;
  }
  EXPECT_EQ(scaler.skipped_steps(), 0);
  EXPECT_EQ(scaler.growth_tracker(), 3);
  EXPECT_EQ(scaler.scale_value(), 1024.0);
  // Unscaling twice in one step would divide twice: refused.
  scaled.sgd.zero_grad();
  scaler.scale(scaled.loss()).backward();
  scaler.unscale(scaled.sgd);
  EXPECT_TRUE(anode_test::throws_mentioning([&] { scaler.unscale(scaled.sgd); },
                                            {"unscale was already called"}));
}

TEST(GradScaler, TheScaleGrowsAfterGrowthIntervalFiniteSteps) {
  torch::manual_seed(2);
  Problem p;
  cifar::GradScaler scaler(torch::kCPU, cifar::GradScalerOptions().growth_interval(3));
  ASSERT_TRUE(scaled_step(p, scaler));
  ASSERT_TRUE(scaled_step(p, scaler));
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 2);
  ASSERT_TRUE(scaled_step(p, scaler));
  EXPECT_EQ(scaler.scale_value(), 131072.0);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  // An overflow resets the count: three more finite steps are needed after it.
  ASSERT_TRUE(scaled_step(p, scaler));
  ASSERT_TRUE(scaled_step(p, scaler));
  ASSERT_FALSE(scaled_step(p, scaler, /*k=*/1e38));  // loss * scale overflows to inf
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(scaled_step(p, scaler));
  EXPECT_EQ(scaler.scale_value(), 65536.0);
  ASSERT_TRUE(scaled_step(p, scaler));
  EXPECT_EQ(scaler.scale_value(), 131072.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
}

TEST(GradScaler, PlainKernelsFollowAtenSemantics) {
  // update: the scale never grows to inf (the CUDA kernel keeps it when scale * growth is not
  // finite, and still resets the tracker).
  auto scale = torch::full({1}, FLT_MAX / 1.5f);
  auto tracker = torch::full({1}, 1, torch::kInt);
  auto found_inf = torch::zeros({1});
  cifar::detail::update_scale_plain(scale, tracker, found_inf, 2.0, 0.5, 2);
  EXPECT_EQ(scale.item<float>(), FLT_MAX / 1.5f);
  EXPECT_EQ(tracker.item<int>(), 0);
  // unscale: found_inf stays 1 once set (over several calls), every gradient is multiplied
  // (the non-finite one too), an fp16 gradient is computed in float, an undefined one is skipped.
  std::vector<torch::Tensor> grads{torch::tensor({2.0f, -4.0f}),
                                   torch::tensor({1.0f, std::numeric_limits<float>::infinity()}),
                                   torch::tensor({6.0f, 8.0f}).to(torch::kHalf), torch::Tensor()};
  auto inv = torch::full({1}, 0.25f);
  cifar::detail::unscale_plain({grads[0]}, found_inf, inv);
  EXPECT_EQ(found_inf.item<float>(), 0.0f);
  cifar::detail::unscale_plain({grads[1], grads[2], grads[3]}, found_inf, inv);
  EXPECT_EQ(found_inf.item<float>(), 1.0f);
  cifar::detail::unscale_plain({torch::ones({2})}, found_inf, inv);
  EXPECT_EQ(found_inf.item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(grads[0], torch::tensor({0.5f, -1.0f})));
  EXPECT_EQ(grads[1][0].item<float>(), 0.25f);
  EXPECT_TRUE(std::isinf(grads[1][1].item<float>()));
  EXPECT_EQ(grads[2].scalar_type(), torch::kHalf);
  EXPECT_TRUE(torch::equal(grads[2], torch::tensor({1.5f, 2.0f}).to(torch::kHalf)));
}

TEST(GradScaler, StateRoundTripsThroughACheckpoint) {
  torch::manual_seed(3);
  const auto dir =
      std::filesystem::temp_directory_path() / ("anode_grad_scaler_" + std::to_string(::getpid()));
  anode_test::remove_tree(dir);
  Problem p;
  cifar::GradScaler scaler(torch::kCPU, cifar::GradScalerOptions().growth_interval(4));
  ASSERT_TRUE(scaled_step(p, scaler));
  ASSERT_FALSE(scaled_step(p, scaler, 1e38));
  ASSERT_TRUE(scaled_step(p, scaler));
  const std::string path = (dir / "checkpoint.pt").string();
  cifar::save_checkpoint(path, *p.model, p.sgd, cifar::TrainState(), {{"amp", "fp16"}}, torch::kCPU,
                         [&](torch::serialize::OutputArchive& a) { scaler.save(a); });

  cifar::GradScaler restored(torch::kCPU, cifar::GradScalerOptions().growth_interval(4));
  cifar::TrainState state;
  cifar::load_checkpoint(path, *p.model, &p.sgd, &state, torch::kCPU,
                         [&](torch::serialize::InputArchive& a) { restored.load(a, path); });
  EXPECT_EQ(restored.scale_value(), 32768.0);
  EXPECT_EQ(restored.growth_tracker(), 1);
  EXPECT_EQ(restored.skipped_steps(), 1);
  // Both continue alike: three more finite steps grow the scale of each.
  Problem q;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(scaled_step(p, scaler));
    ASSERT_TRUE(scaled_step(q, restored));
  }
  EXPECT_EQ(restored.scale_value(), 65536.0);
  EXPECT_EQ(restored.scale_value(), scaler.scale_value());

  // A checkpoint of a run without fp16 has no scaler state: loading it is an error naming it.
  const std::string old = (dir / "old.pt").string();
  cifar::save_checkpoint(old, *p.model, p.sgd, cifar::TrainState(), {}, torch::kCPU);
  EXPECT_TRUE(anode_test::throws_mentioning(
      [&] {
        cifar::load_checkpoint(old, *p.model, &p.sgd, &state, torch::kCPU,
                               [&](torch::serialize::InputArchive& a) { restored.load(a, old); });
      },
      {"old.pt' has no fp16 loss-scaler state"}));
  anode_test::remove_tree(dir);
}

/// Random gradients on `device`, some with an inf or a NaN when `bad`.
std::vector<torch::Tensor> random_grads(const c10::Device& device, bool bad) {
  std::vector<torch::Tensor> g{torch::randn({7, 3}), torch::randn({5}), torch::randn({2, 2, 3})};
  if (bad) {
    g[1][3] = std::numeric_limits<float>::infinity();
    g[2][1][0][2] = std::numeric_limits<float>::quiet_NaN();
  }
  for (auto& t : g) t = t.to(device);
  return g;
}

/// Runs a sequence of unscales and updates with both implementations on `device` and expects the
/// same gradients, found_inf, scales and trackers after each.
void expect_kernels_agree(const c10::Device& device) {
  torch::manual_seed(4);
  const auto f = torch::dtype(torch::kFloat).device(device);
  auto scale_a = torch::full({1}, 65536.0f, f), scale_p = scale_a.clone();
  auto tracker_a = torch::zeros({1}, torch::dtype(torch::kInt).device(device)),
       tracker_p = tracker_a.clone();
  for (const bool bad : {false, false, true, false, false, false, true, true, false, false}) {
    auto grads_a = random_grads(device, bad);
    std::vector<torch::Tensor> grads_p;
    for (const auto& g : grads_a) grads_p.push_back(g.clone());
    auto inv_a = scale_a.to(torch::kDouble).reciprocal().to(torch::kFloat), inv_p = inv_a.clone();
    auto found_a = torch::zeros({1}, f), found_p = torch::zeros({1}, f);
    at::_amp_foreach_non_finite_check_and_unscale_(grads_a, found_a, inv_a);
    cifar::detail::unscale_plain(grads_p, found_p, inv_p);
    ASSERT_TRUE(torch::equal(found_a, found_p)) << "bad " << bad;
    for (size_t i = 0; i < grads_a.size(); ++i) {
      // equal() treats NaN as unequal: compare the NaN masks and the rest.
      const auto nan = grads_a[i].isnan();
      ASSERT_TRUE(torch::equal(nan, grads_p[i].isnan()));
      ASSERT_TRUE(torch::equal(grads_a[i].masked_fill(nan, 0), grads_p[i].masked_fill(nan, 0)));
    }
    at::_amp_update_scale_(scale_a, tracker_a, found_a, 2.0, 0.5, 3);
    cifar::detail::update_scale_plain(scale_p, tracker_p, found_p, 2.0, 0.5, 3);
    ASSERT_TRUE(torch::equal(scale_a, scale_p))
        << scale_a.item<float>() << " vs " << scale_p.item<float>();
    ASSERT_TRUE(torch::equal(tracker_a, tracker_p));
  }
  // The sequence grew and backed off the scale: both branches ran.
  EXPECT_NE(scale_a.item<float>(), 65536.0f);
}

TEST(GradScaler, PlainKernelsAgreeWithAtenOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_kernels_agree(torch::kCUDA);
  // And the scaler picks ATen's kernels there: a whole scaled step on CUDA.
  cifar::GradScaler scaler(torch::kCUDA);
  torch::nn::Linear model(4, 3);
  model->to(torch::kCUDA);
  torch::optim::SGD sgd(model->parameters(), 0.1);
  scaler.scale(model(torch::randn({5, 4}, torch::kCUDA)).sum()).backward();
  EXPECT_TRUE(scaler.step(sgd));
  scaler.update();
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(GradScaler, PlainKernelsAgreeWithAtenOnCpuWhereAtenHasThem) {
  // LibTorch 1.13 registers the two ATen ops for CUDA only; later versions have CPU kernels.
  try {
    auto s = torch::ones({1}), t = torch::zeros({1}, torch::kInt), f = torch::zeros({1});
    at::_amp_update_scale_(s, t, f, 2.0, 0.5, 3);
  } catch (const c10::Error&) {
    GTEST_SKIP() << "LibTorch " TORCH_VERSION " has no CPU kernel for _amp_update_scale_";
  }
  expect_kernels_agree(torch::kCPU);
}

}  // namespace test_cifar_grad_scaler
