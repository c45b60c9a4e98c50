#pragma once
// anode-cifar's learning-rate schedules as LibTorch schedulers (torch::optim::LRScheduler
// subclasses), and the one `--schedule` names. LibTorch 1.13 has only StepLR, which divides at
// equally spaced epochs; the official schedule's milestones (150 and 250 of 350 epochs) are not
// equally spaced, and LibTorch has no one-cycle schedule, so both are written here.
//
// Both schedules are stepped once per batch, and the rate of every step is a closed-form function
// of the step's number. So a resumed run builds its scheduler at the step it stopped at, and the
// checkpoint needs no scheduler state.

#include "examples/cifar/config.hpp"

#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace cifar {

/// A schedule that gives the rate of step `i` (0-based) in closed form, `lr(i)`. LibTorch's
/// `step()` sets the optimizer's rate to that of step `next_step()` and then advances: call it
/// once before each optimizer step.
///
/// Example:
/// ```
/// LinearOneCycleLR schedule(optimizer, /*peak=*/0.1, /*total_steps=*/epochs * batches);
/// for (auto& batch : *loader) {
///   schedule.step();  // the rate of this batch
///   optimizer.zero_grad();
///   loss_of(batch).backward();
///   optimizer.step();
/// }
/// ```
class ClosedFormLR : public torch::optim::LRScheduler {
 public:
  /// Starts at step `first_step` (the steps a resumed run has done already).
  ClosedFormLR(torch::optim::Optimizer& optimizer, int64_t first_step)
      : torch::optim::LRScheduler(optimizer) {
    TORCH_CHECK(first_step >= 0, "cifar: a schedule starts at a step >= 0, got ", first_step);
    step_count_ = static_cast<unsigned>(first_step);
  }

  /// The rate of step `step` (0-based).
  virtual double lr(int64_t step) const = 0;

  /// The step whose rate the next `step()` sets.
  int64_t next_step() const { return static_cast<int64_t>(step_count_); }

 protected:
  std::vector<double> get_lrs() override {
    return std::vector<double>(get_current_lrs().size(), lr(next_step()));
  }
};

/// PyTorch's MultiStepLR: `base` until the first milestone, then divided by `factor` at each
/// milestone (a step number: the rate changes from that step on). Dividing (rather than
/// multiplying by gamma = 0.1, as PyTorch does) keeps 0.1 / 100 exactly 0.001.
class MultiStepLR : public ClosedFormLR {
 public:
  MultiStepLR(torch::optim::Optimizer& optimizer, double base, std::vector<int64_t> milestones,
              double factor = 10.0, int64_t first_step = 0)
      : ClosedFormLR(optimizer, first_step),
        base_(base),
        milestones_(std::move(milestones)),
        factor_(factor) {
    TORCH_CHECK(std::is_sorted(milestones_.begin(), milestones_.end()),
                "cifar: MultiStepLR needs increasing milestones");
  }

  double lr(int64_t step) const override {
    const auto passed =
        std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
    return passed == 0 ? base_ : base_ / std::pow(factor_, static_cast<double>(passed));
  }

 private:
  double base_;
  std::vector<int64_t> milestones_;
  double factor_;
};

/// A one-cycle schedule with straight lines: from `peak` / 10 up to `peak` over the first 15 % of
/// `total_steps`, then down to 0 at the end. A short run reaches far better accuracy with it than
/// with the step schedule squeezed. (PyTorch's OneCycleLR anneals along a cosine by default, from
/// peak / 25, so it is not that one.)
class LinearOneCycleLR : public ClosedFormLR {
 public:
  static constexpr double kWarmup = 0.15;  ///< fraction of the run spent rising

  LinearOneCycleLR(torch::optim::Optimizer& optimizer, double peak, int64_t total_steps,
                   int64_t first_step = 0)
      : ClosedFormLR(optimizer, first_step), peak_(peak), total_steps_(total_steps) {
    TORCH_CHECK(total_steps > 0, "cifar: LinearOneCycleLR needs total_steps > 0, got ",
                total_steps);
  }

  double lr(int64_t step) const override {
    const double progress = static_cast<double>(step) / static_cast<double>(total_steps_);
    if (progress < kWarmup) return peak_ * (0.1 + 0.9 * progress / kWarmup);
    return peak_ * std::max(0.0, (1.0 - progress) / (1.0 - kWarmup));
  }

 private:
  double peak_;
  int64_t total_steps_;
};

/// The official schedule's milestones (after epochs 150 and 250 of 350) scaled to `epochs`, rounded
/// up so that a short run starts with at least one epoch at the full rate.
inline std::vector<int64_t> official_milestone_epochs(int64_t epochs) {
  const auto scaled = [epochs](int64_t m) { return (m * epochs + 349) / 350; };
  return {scaled(150), scaled(250)};
}

/// The scheduler `--schedule` names, stepped once per batch of a run of `c.epochs` epochs of
/// `batches_per_epoch` batches, starting at step `first_step` (batches already trained in the
/// run). step: --lr, /10 after the official milestones (counted in batches here); onecycle:
/// LinearOneCycleLR peaking at --lr.
inline std::unique_ptr<ClosedFormLR> make_lr_schedule(const Config& c,
                                                      torch::optim::Optimizer& optimizer,
                                                      int64_t batches_per_epoch,
                                                      int64_t first_step = 0) {
  if (c.schedule == "onecycle")
    return std::make_unique<LinearOneCycleLR>(optimizer, c.lr, c.epochs * batches_per_epoch,
                                              first_step);
  TORCH_CHECK(c.schedule == "step", "cifar: unknown --schedule '", c.schedule, "'");
  std::vector<int64_t> milestones;
  for (const int64_t epoch : official_milestone_epochs(c.epochs))
    milestones.push_back(epoch * batches_per_epoch);
  return std::make_unique<MultiStepLR>(optimizer, c.lr, std::move(milestones), 10.0, first_step);
}

}  // namespace cifar
