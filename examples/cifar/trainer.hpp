#pragma once
// The training loop of anode-cifar: SGD with momentum and weight decay under the --schedule
// learning-rate scheduler, per-epoch evaluation, CSV log and atomic checkpoints. It is built of
// separable pieces: the data loaders (train_loader, test_loader), one optimizer step
// (train_step), an epoch of them (train_epoch), the evaluation (evaluate), one epoch with its
// record and checkpoint (fit_epoch) and the run (fit).
//
// Everything a run depends on lives in the checkpoint or is derived from (seed, epoch, batch), so
// `resume()` continues a stopped run (between epochs or in the middle of one) exactly as if it
// had never stopped.

#include "examples/cifar/checkpoint.hpp"
#include "examples/cifar/config.hpp"
#include "examples/cifar/csv_log.hpp"
#include "examples/cifar/dataset.hpp"
#include "examples/cifar/models.hpp"
#include "examples/cifar/progress.hpp"
#include "examples/cifar/run_meta.hpp"
#include "examples/cifar/schedules.hpp"

#include <anode/memory.hpp>

#include <torch/cuda.h>
#include <torch/data.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

namespace cifar {

/// The device a configuration names, checked to be usable.
inline c10::Device device_of(const Config& c) {
  c10::Device d(c10::DeviceType::CPU);
  try {
    d = c10::Device(c.device);
  } catch (const c10::Error&) {
    throw UsageError("option --device needs cpu, cuda or cuda:I, got '" + c.device + "'");
  }
  if (d.is_cuda() && !torch::cuda::is_available())
    throw UsageError("option --device " + c.device +
                     ": CUDA is not available (a CPU build of LibTorch, or no GPU)");
  return d;
}

/// Loss and accuracy over a split.
struct Evaluation {
  double loss = 0;      ///< mean cross-entropy
  double accuracy = 0;  ///< fraction correct
  int64_t images = 0;
  bool interrupted = false;
};

/// What one optimizer step saw.
struct StepResult {
  double loss = 0;      ///< the batch's mean cross-entropy
  int64_t correct = 0;  ///< images classified correctly (before the step)
  int64_t images = 0;
};

/// The line `fit` prints after each epoch.
inline std::string epoch_summary(const EpochRecord& r, int64_t epochs) {
  std::ostringstream os;
  os << "epoch " << r.epoch << "/" << epochs << "  lr " << r.lr << "  train loss " << std::fixed
     << std::setprecision(4) << r.train_loss << " acc " << std::setprecision(2) << 100 * r.train_acc
     << "%  test loss " << std::setprecision(4) << r.test_loss << " acc " << std::setprecision(2)
     << 100 * r.test_acc << "%  " << std::setprecision(1) << r.seconds << " s  "
     << std::setprecision(0) << r.images_per_s << " img/s  peak " << std::setprecision(1)
     << r.peak_mem_mib << " MiB";
  return os.str();
}

/// Trains one model on one dataset as `Config` says.
class Trainer {
 public:
  /// The data loaders' type: a CIFAR split, batched in (seed, epoch) order.
  using Loader = torch::data::StatelessDataLoader<CifarDataset, EpochSampler>;

  Trainer(Config config, Split train, Split test)
      : config_(std::move(config)),
        device_(device_of(config_)),
        train_(train.first(config_.limit)),
        test_(test.first(config_.test_limit)) {
    TORCH_CHECK(train_.size() > 0, "cifar: the training split is empty");
    TORCH_CHECK(train_.num_classes == layout(config_.dataset).num_classes, "cifar: the data have ",
                train_.num_classes, " classes, --dataset ", to_string(config_.dataset), " has ",
                layout(config_.dataset).num_classes);
    // The seed fixes the initial weights; data order and augmentation derive from it too.
    torch::manual_seed(config_.seed);
    model_ = make_model(config_.model_spec());
    model_->to(device_);
    optimizer_ = std::make_unique<torch::optim::SGD>(model_->parameters(),
                                                     torch::optim::SGDOptions(config_.lr)
                                                         .momentum(config_.momentum)
                                                         .weight_decay(config_.weight_decay));
    lr_schedule_ = make_lr_schedule(config_, *optimizer_, batches_per_epoch(), 0);
  }

  /// Continues from `path` (default OUT/checkpoint.pt), after checking that the settings agree.
  void resume(const std::string& path = "") {
    const std::string file = path.empty() ? checkpoint_path() : path;
    check_resumable(read_meta(file), run_meta(config_), file);
    load_checkpoint(file, *model_, optimizer_.get(), &state_, device_);
    // The schedule is a function of the step, so it needs no saved state: it restarts where the
    // run stands.
    lr_schedule_ = make_lr_schedule(config_, *optimizer_, batches_per_epoch(), steps_done());
  }

  /// Loads only the model weights of a checkpoint (for evaluation).
  void load_weights(const std::string& path) {
    load_checkpoint(path, *model_, nullptr, nullptr, device_);
  }

  /// Runs the remaining epochs, writing the CSV log and a line per epoch to `log`. Returns false
  /// if it stopped early on `stop` (after saving).
  bool fit(const std::atomic<bool>* stop = nullptr, std::ostream& log = std::cout) {
    std::filesystem::create_directories(config_.out);
    CsvLog csv(log_path(), state_.epoch);
    while (state_.epoch <= config_.epochs) {
      EpochRecord r;
      if (!fit_epoch(&r, stop)) return false;
      csv.write(r);
      log << epoch_summary(r, config_.epochs) << std::endl;
    }
    return true;
  }

  /// Finishes the current epoch (from wherever it stands), evaluates, advances the state and saves
  /// a checkpoint. Returns false if `stop` was raised: the state so far is saved and `r` unset.
  bool fit_epoch(EpochRecord* r, const std::atomic<bool>* stop = nullptr) {
    const int64_t epoch = state_.epoch;
    // The rate of the epoch's next batch (its last one if none is left).
    const double lr = lr_schedule_->lr(std::min(steps_done(), epoch * batches_per_epoch() - 1));

    const auto t0 = std::chrono::steady_clock::now();
    const auto seconds_since = [&t0] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    const double seconds_before = state_.seconds;
    const int64_t seen_before = state_.seen;
    double peak_mib = -1;
    const bool trained = train_epoch(stop, &peak_mib);
    const double train_seconds = seconds_since();
    state_.seconds = seconds_before + train_seconds;
    if (!trained) {
      save();
      return false;
    }
    const Evaluation test = evaluate(test_, stop);
    if (test.interrupted) {
      save();  // the training part is done: a resumed run goes straight to the evaluation
      return false;
    }

    EpochRecord rec;
    rec.epoch = epoch;
    rec.lr = lr;
    rec.train_loss = state_.seen > 0 ? state_.loss_sum / static_cast<double>(state_.seen) : 0;
    rec.train_acc = state_.seen > 0 ? static_cast<double>(state_.correct) / state_.seen : 0;
    rec.test_loss = test.loss;
    rec.test_acc = test.accuracy;
    rec.seconds = seconds_before + seconds_since();
    rec.images_per_s =
        train_seconds > 0 ? static_cast<double>(state_.seen - seen_before) / train_seconds : 0;
    rec.peak_mem_mib = peak_mib;
    if (r != nullptr) *r = rec;

    state_.best_acc = std::max(state_.best_acc, test.accuracy);
    state_.epoch = epoch + 1;
    state_.batch = 0;
    state_.loss_sum = 0;
    state_.correct = state_.seen = 0;
    state_.seconds = 0;
    save();
    return true;
  }

  /// Trains the rest of the current epoch; false if stopped on `stop`. Records the peak tensor
  /// memory of the pass in MiB in `peak_mib` (left alone when there is no meter).
  bool train_epoch(const std::atomic<bool>* stop = nullptr, double* peak_mib = nullptr) {
    const int64_t n_batches = batches_per_epoch();
    if (state_.batch >= n_batches) return true;
    TORCH_CHECK(lr_schedule_->next_step() == steps_done(), "cifar: the schedule is at step ",
                lr_schedule_->next_step(), " but the run at ", steps_done());
    model_->train();
    auto loader = train_loader(state_.epoch, state_.batch);
    std::ostringstream label;
    label << "epoch " << state_.epoch << "/" << config_.epochs;
    ProgressBar bar(std::cerr, label.str(), n_batches, state_.batch, config_.progress);
    std::unique_ptr<anode::memory::PeakScope> peak;
    if (device_.is_cuda() || anode::memory::cpu_meter_installed())
      peak = std::make_unique<anode::memory::PeakScope>(device_);

    int64_t images = 0;
    bool stopped = false;
    for (auto& batch : *loader) {
      lr_schedule_->step();  // the rate of this batch
      const StepResult s = train_step(batch.data, batch.target);
      state_.loss_sum += s.loss * static_cast<double>(s.images);
      state_.correct += s.correct;
      state_.seen += s.images;
      images += s.images;
      if (on_batch) on_batch(state_.batch, s.loss);
      ++state_.batch;
      bar.update(state_.batch, images, state_.loss_sum / static_cast<double>(state_.seen),
                 static_cast<double>(state_.correct) / static_cast<double>(state_.seen));
      if (stop != nullptr && stop->load() && state_.batch < n_batches) {
        stopped = true;
        break;
      }
    }
    bar.finish();
    if (peak && peak_mib != nullptr)
      *peak_mib = static_cast<double>(peak->peak_bytes()) / (1024.0 * 1024.0);
    return !stopped;
  }

  /// One SGD step on a batch of images and labels, at the optimizer's current rate.
  StepResult train_step(const torch::Tensor& images, const torch::Tensor& labels) {
    auto x = input(images), y = labels.to(device_);
    optimizer_->zero_grad();
    auto logits = model_->forward(x);
    auto loss = torch::nn::functional::cross_entropy(logits, y);
    loss.backward();
    optimizer_->step();
    return {loss.item<double>(), logits.argmax(1).eq(y).sum().item<int64_t>(), y.size(0)};
  }

  /// Mean loss and accuracy of the model (in eval mode, no gradients) on `split`.
  Evaluation evaluate(const Split& split, const std::atomic<bool>* stop = nullptr) {
    torch::NoGradGuard no_grad;
    model_->eval();
    auto loader = test_loader(split);
    ProgressBar bar(std::cerr, "  test    ",
                    cifar::batches_per_epoch(split.size(), config_.batch_size), 0,
                    config_.progress);
    Evaluation e;
    double loss_sum = 0;
    int64_t correct = 0, done = 0;
    for (auto& batch : *loader) {
      auto x = input(batch.data), y = batch.target.to(device_);
      auto logits = model_->forward(x);
      loss_sum +=
          torch::nn::functional::cross_entropy(
              logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
              .item<double>();
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      e.images += y.size(0);
      bar.update(++done, e.images, loss_sum / e.images, static_cast<double>(correct) / e.images);
      if (stop != nullptr && stop->load()) {
        e.interrupted = true;
        break;
      }
    }
    bar.finish();
    e.loss = e.images > 0 ? loss_sum / static_cast<double>(e.images) : 0;
    e.accuracy = e.images > 0 ? static_cast<double>(correct) / static_cast<double>(e.images) : 0;
    return e;
  }

  /// The training batches of `epoch` from batch `start_batch` on: shuffled and augmented from
  /// (seed, epoch, batch).
  std::unique_ptr<Loader> train_loader(int64_t epoch, int64_t start_batch) const {
    return torch::data::make_data_loader(
        CifarDataset(train_, AugmentOptions(channel_stats(config_.dataset)), config_.seed),
        EpochSampler(train_.size(), /*shuffle=*/true, config_.seed, epoch, start_batch),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
  }

  /// The batches of `split` in order, normalised but not augmented.
  std::unique_ptr<Loader> test_loader(const Split& split) const {
    return torch::data::make_data_loader(
        CifarDataset(split, AugmentOptions(channel_stats(config_.dataset)).random(false)),
        EpochSampler(split.size(), /*shuffle=*/false, config_.seed, 0),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
  }

  /// Writes OUT/checkpoint.pt atomically.
  void save() const {
    save_checkpoint(checkpoint_path(), *model_, *optimizer_, state_, run_meta(config_), device_);
  }

  std::string checkpoint_path() const {
    return (std::filesystem::path(config_.out) / "checkpoint.pt").string();
  }
  std::string log_path() const { return (std::filesystem::path(config_.out) / "log.csv").string(); }

  /// Batches in an epoch of the training split.
  int64_t batches_per_epoch() const {
    return cifar::batches_per_epoch(train_.size(), config_.batch_size);
  }
  /// Batches trained in the run so far (the schedule's step).
  int64_t steps_done() const { return (state_.epoch - 1) * batches_per_epoch() + state_.batch; }

  ClassifierImpl& model() { return *model_; }
  std::shared_ptr<ClassifierImpl> model_ptr() { return model_; }
  torch::optim::SGD& optimizer() { return *optimizer_; }
  const ClosedFormLR& lr_schedule() const { return *lr_schedule_; }
  const TrainState& state() const { return state_; }
  const Config& config() const { return config_; }
  const Split& train_split() const { return train_; }
  const Split& test_split() const { return test_; }
  c10::Device device() const { return device_; }

  /// Called after every training batch with (batch index, batch loss); tests use it.
  std::function<void(int64_t, double)> on_batch;

 private:
  // Images stay NCHW: channels-last is faster with oneDNN, but LibTorch 1.13's channels-last
  // backward of a strided 1x1 convolution with few channels corrupts the heap (both networks
  // have one in every downsampling shortcut), so it is not offered.
  torch::Tensor input(const torch::Tensor& images) const { return images.to(device_); }

  Config config_;
  c10::Device device_;
  Split train_, test_;
  std::shared_ptr<ClassifierImpl> model_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  // The scheduler refers to *optimizer_, so it is declared after it and destroyed before it.
  std::unique_ptr<ClosedFormLR> lr_schedule_;
  TrainState state_;
};

}  // namespace cifar
