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
//
// Data parallel (a Group, from anode/distributed.hpp, built with ANODE_WITH_DISTRIBUTED): every
// rank holds a replica (rank 0's weights broadcast at start), trains on its share of each global
// batch of W x --batch-size images (dataset.hpp's EpochSampler), and the ranks' gradients are
// averaged (anode::dist::DataParallel) before each step, so the steps are those of one process
// with the global batch. The per-batch loss, accuracy and stop request are summed over the ranks
// (so every rank holds the same TrainState); the test set is sharded and its sums reduced; only
// rank 0 writes the CSV log, the checkpoint and the progress output.

#include "examples/cifar/amp.hpp"
#include "examples/cifar/checkpoint.hpp"
#include "examples/cifar/config.hpp"
#include "examples/cifar/csv_log.hpp"
#include "examples/cifar/dataset.hpp"
#include "examples/cifar/grad_scaler.hpp"
#include "examples/cifar/models.hpp"
#include "examples/cifar/progress.hpp"
#include "examples/cifar/run_meta.hpp"
#include "examples/cifar/schedules.hpp"

#include <anode/memory.hpp>
#ifdef ANODE_WITH_DISTRIBUTED
#include <anode/distributed.hpp>
#endif

#include <torch/cuda.h>
#include <torch/data.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
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
#ifdef ANODE_WITH_DISTRIBUTED
  /// The ranks of a data-parallel run (nullptr: one process).
  using GroupPtr = std::shared_ptr<anode::dist::Group>;
#else
  using GroupPtr = std::shared_ptr<void>;  ///< always nullptr: built without data parallelism
#endif

  Trainer(Config config, Split train, Split test, GroupPtr group = nullptr)
      : config_(std::move(config)),
        device_(device_of(config_)),
        train_(train.first(config_.limit)),
        test_(test.first(config_.test_limit)),
        group_(std::move(group)) {
    TORCH_CHECK(train_.size() > 0, "cifar: the training split is empty");
    TORCH_CHECK(train_.num_classes == layout(config_.dataset).num_classes, "cifar: the data have ",
                train_.num_classes, " classes, --dataset ", to_string(config_.dataset), " has ",
                layout(config_.dataset).num_classes);
    const std::string precision_error =
        precision_options_error(config_.amp, config_.device, config_.channels_last);
    if (!precision_error.empty()) throw UsageError(precision_error);
    // The seed fixes the initial weights; data order and augmentation derive from it too.
    // A memory plan on CUDA measures with anode's counting CUDA meter (the CPU meter is main()'s);
    // installed before the model's tensors, so that the step peaks logged read it too.
    if (config_.memory_budget > 0 && device_.is_cuda()) anode::memory::install_cuda_meter();
    torch::manual_seed(config_.seed);
    model_ = make_model(config_.model_spec());
    model_->to(device_, config_.float64 ? torch::kDouble : torch::kFloat);
    if (config_.channels_last) to_channels_last(*model_);
    if (config_.amp == Amp::FP16) scaler_ = std::make_unique<GradScaler>(device_);
    if (config_.memory_budget > 0) {
      // One budget for the whole training step, shared by every ODE block.
      memory_plan_ = std::make_shared<anode::MemoryPlan>(config_.memory_budget);
      for (auto& block : anode::ode_blocks(*model_)) block->options.memory_plan(memory_plan_);
    }
    model_->to(device_, config_.float64 ? torch::kDouble : torch::kFloat);
#ifdef ANODE_WITH_DISTRIBUTED
    if (group_) {
      rank_ = group_->rank();
      world_ = group_->size();
      TORCH_CHECK(config_.world_size == world_, "cifar: the configuration says ",
                  config_.world_size, " ranks, the process group has ", world_);
      if (config_.sync_bn) anode::dist::convert_sync_batchnorm(*model_, group_);
      dp_ = std::make_unique<anode::dist::DataParallel>(  // broadcasts rank 0's weights
          model_, group_, anode::dist::DataParallelOptions().bucket_cap_mb(config_.bucket_cap_mb));
    }
#else
    TORCH_CHECK(group_ == nullptr && config_.world_size == 1,
                "cifar: anode was built without data parallelism (ANODE_WITH_DISTRIBUTED)");
#endif
    {
      const int64_t global = config_.batch_size * world_, tail = train_.size() % global;
      TORCH_CHECK(tail == 0 || tail >= world_, "cifar: the last batch of an epoch has ", tail,
                  " images (", train_.size(), " images, global batch ", world_, " x ",
                  config_.batch_size, "), fewer than the ", world_,
                  " ranks: every rank needs one; change --batch-size or --limit");
    }
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
    load_checkpoint(file, *model_, optimizer_.get(), &state_, device_,
                    [this, &file](torch::serialize::InputArchive& a) {
                      if (scaler_) scaler_->load(a, file);
                    });
    if (config_.channels_last) to_channels_last(*model_);
    // The schedule is a function of the step, so it needs no saved state: it restarts where the
    // run stands.
    lr_schedule_ = make_lr_schedule(config_, *optimizer_, batches_per_epoch(), steps_done());
  }

  /// Loads only the model weights of a checkpoint (for evaluation).
  void load_weights(const std::string& path) {
    load_checkpoint(path, *model_, nullptr, nullptr, device_);
    if (config_.channels_last) to_channels_last(*model_);
  }

  /// Runs the remaining epochs, writing the CSV log and a line per epoch to `log`. Returns false
  /// if it stopped early on `stop` (after saving).
  bool fit(const std::atomic<bool>* stop = nullptr, std::ostream& log = std::cout) {
    std::optional<CsvLog> csv;  // rank 0's
    if (rank_ == 0) {
      std::filesystem::create_directories(config_.out);
      csv.emplace(log_path(), state_.epoch);
    }
    while (state_.epoch <= config_.epochs) {
      EpochRecord r;
      if (!fit_epoch(&r, stop)) return false;
      if (rank_ == 0) {
        csv->write(r);
        log << epoch_summary(r, config_.epochs) << (scaler_ ? "  " + scaler_->summary() : "")
            << comm_summary() << std::endl;
        if (memory_plan_) write_memory_plan(log);
      }
    }
    return true;
  }

  /// The memory plan's decisions and measurements (--memory-budget), on `log` and in
  /// OUT/memory_plan.txt (rewritten after every epoch).
  void write_memory_plan(std::ostream& log) const {
    std::ostringstream text;
    text << *memory_plan_;
    log << "  " << text.str() << "\n";
    std::ofstream(memory_plan_path()) << text.str() << "\n";
  }
  std::string memory_plan_path() const {
    return config_.out + "/memory_plan.txt";
  }
  /// The memory plan (--memory-budget), or null.
  const std::shared_ptr<anode::MemoryPlan>& memory_plan() const {
    return memory_plan_;
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
    ProgressBar bar(std::cerr, label.str(), n_batches, state_.batch, progress());
    std::unique_ptr<anode::memory::PeakScope> peak;
    if (device_.is_cuda() || anode::memory::cpu_meter_installed())
      peak = std::make_unique<anode::memory::PeakScope>(device_);

    int64_t images = 0;
    bool stopped = false;
    comm_ = CommTotals();
    for (auto& batch : *loader) {
      lr_schedule_->step();  // the rate of this batch
      const int64_t global = std::min(config_.batch_size * world_,
                                      train_.size() - state_.batch * config_.batch_size * world_);
      StepResult s = train_step(batch.data, batch.target, global);
#ifdef ANODE_WITH_DISTRIBUTED
      if (dp_) {
        const auto& cs = dp_->last_stats();
        ++comm_.steps;
        comm_.buckets += cs.buckets;
        comm_.overlapped += cs.launched_in_backward;
        comm_.wait_s += cs.wait_s;
        comm_.backward_s += cs.backward_end_s;
        // How far into backward each bucket left (1: at its end, nothing left to overlap).
        for (double t : cs.launch_s)
          comm_.launch_fraction +=
              cs.backward_end_s > 0 ? std::min(1.0, t / cs.backward_end_s) : 1.0;
      }
#endif
      bool stop_now = stop != nullptr && stop->load();
      if (world_ > 1) {
        // The global batch's sums, and whether any rank was asked to stop (all stop together).
        const auto sums =
            all_sum({s.loss * static_cast<double>(s.images), static_cast<double>(s.correct),
                     static_cast<double>(s.images), stop_now ? 1.0 : 0.0},
                    "batch statistics");
        s.images = static_cast<int64_t>(sums[2]);
        s.loss = sums[0] / sums[2];
        s.correct = static_cast<int64_t>(sums[1]);
        stop_now = sums[3] > 0;
      }
      state_.loss_sum += s.loss * static_cast<double>(s.images);
      state_.correct += s.correct;
      state_.seen += s.images;
      images += s.images;
      if (on_batch) on_batch(state_.batch, s.loss);
      ++state_.batch;
      bar.update(state_.batch, images, state_.loss_sum / static_cast<double>(state_.seen),
                 static_cast<double>(state_.correct) / static_cast<double>(state_.seen));
      // One process: a stop raised up to now (on_batch included) counts. Data parallel: the
      // agreed one, read before this batch's sums (a later request stops at the next batch).
      if (world_ == 1) stop_now = stop != nullptr && stop->load();
      if (stop_now && state_.batch < n_batches) {
        stopped = true;
        break;
      }
    }
    bar.finish();
    if (peak && peak_mib != nullptr)
      *peak_mib = static_cast<double>(peak->peak_bytes()) / (1024.0 * 1024.0);
    return !stopped;
  }

  /// One SGD step on a batch of images and labels, at the optimizer's current rate. Data parallel:
  /// this rank's share of a global batch of `global_images` images (0: world size x its size).
  StepResult train_step(const torch::Tensor& images, const torch::Tensor& labels,
                        int64_t global_images = 0) {
    auto x = input(images), y = labels.to(device_);
#ifdef ANODE_WITH_DISTRIBUTED
    if (dp_) dp_->prepare();
#endif
    optimizer_->zero_grad();
    torch::Tensor logits, loss;
    {
      AutocastScope autocast(config_.amp, device_);  // --amp: the forward pass and the loss only
      logits = model_->forward(x);
      loss = torch::nn::functional::cross_entropy(logits, y);
    }
    torch::Tensor objective = loss;
    if (world_ > 1 && global_images > 0 && global_images != y.size(0) * world_) {
      // An uneven last batch: weigh each rank's mean by its share, so that the ranks' mean
      // gradient is the gradient of the global batch's mean loss.
      objective =
          loss * (static_cast<double>(y.size(0) * world_) / static_cast<double>(global_images));
    }
    // --amp fp16: the loss is scaled; a step with an inf or NaN gradient is skipped (and counted).
    // The ranks average the scaled gradients, so they agree on a skip.
    (scaler_ ? scaler_->scale(objective) : objective).backward();
#ifdef ANODE_WITH_DISTRIBUTED
    if (dp_) dp_->synchronize();  // every rank: the mean gradient over the ranks
#endif
    if (scaler_) {
      scaler_->step(*optimizer_);
      scaler_->update();
    } else {
      optimizer_->step();
    }
    return {loss.item<double>(), logits.argmax(1).eq(y).sum().item<int64_t>(), y.size(0)};
  }

  /// Mean loss and accuracy of the model (in eval mode, no gradients) on `split`.
  Evaluation evaluate(const Split& split, const std::atomic<bool>* stop = nullptr) {
    torch::NoGradGuard no_grad;
#ifdef ANODE_WITH_DISTRIBUTED
    // Per-rank BatchNorm statistics differ: evaluate rank 0's, the ones the checkpoint keeps.
    if (world_ > 1 && !config_.sync_bn)
      anode::dist::broadcast_tensors(*group_, model_->buffers(), "buffers before evaluation");
#endif
    model_->eval();
    auto loader = test_loader(split);
    ProgressBar bar(std::cerr, "  test    ",
                    cifar::batches_per_epoch(split.size(), config_.batch_size * world_), 0,
                    progress());
    Evaluation e;
    double loss_sum = 0;
    int64_t correct = 0, done = 0;
    for (auto& batch : *loader) {
      auto x = input(batch.data), y = batch.target.to(device_);
      torch::Tensor logits;
      {
        AutocastScope autocast(config_.amp, device_);
        logits = model_->forward(x).to(torch::kFloat);
      }
      loss_sum +=
          torch::nn::functional::cross_entropy(
              logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
              .item<double>();
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      e.images += y.size(0);
      bar.update(++done, e.images, loss_sum / e.images, static_cast<double>(correct) / e.images);
      // (Data parallel: ranks have different numbers of test batches, so no per-batch agreement
      // on stopping; the evaluation finishes and the next training batch stops.)
      if (world_ == 1 && stop != nullptr && stop->load()) {
        e.interrupted = true;
        break;
      }
    }
    bar.finish();
    if (world_ > 1) {
      const auto sums =
          all_sum({loss_sum, static_cast<double>(correct), static_cast<double>(e.images)},
                  "test statistics");
      loss_sum = sums[0];
      correct = static_cast<int64_t>(sums[1]);
      e.images = static_cast<int64_t>(sums[2]);
    }
    e.loss = e.images > 0 ? loss_sum / static_cast<double>(e.images) : 0;
    e.accuracy = e.images > 0 ? static_cast<double>(correct) / static_cast<double>(e.images) : 0;
    return e;
  }

  /// The training batches of `epoch` from batch `start_batch` on: shuffled and augmented from
  /// (seed, epoch, batch).
  std::unique_ptr<Loader> train_loader(int64_t epoch, int64_t start_batch) const {
    return torch::data::make_data_loader(
        CifarDataset(train_, AugmentOptions(channel_stats(config_.dataset)).random(config_.augment),
                     config_.seed),
        EpochSampler(train_.size(), /*shuffle=*/true, config_.seed, epoch, start_batch, rank_,
                     world_),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
  }

  /// The batches of `split` in order, normalised but not augmented.
  std::unique_ptr<Loader> test_loader(const Split& split) const {
    return torch::data::make_data_loader(
        CifarDataset(split, AugmentOptions(channel_stats(config_.dataset)).random(false)),
        EpochSampler(split.size(), /*shuffle=*/false, config_.seed, 0, 0, rank_, world_),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
  }

  /// Writes OUT/checkpoint.pt atomically (rank 0 only).
  void save() const {
    if (rank_ != 0) return;
    save_checkpoint(checkpoint_path(), *model_, *optimizer_, state_, run_meta(config_), device_,
                    [this](torch::serialize::OutputArchive& a) {
                      if (scaler_) scaler_->save(a);
                    });
  }

  std::string checkpoint_path() const {
    return (std::filesystem::path(config_.out) / "checkpoint.pt").string();
  }
  std::string log_path() const {
    return (std::filesystem::path(config_.out) / "log.csv").string();
  }

  /// Batches (global batches, data parallel) in an epoch of the training split.
  int64_t batches_per_epoch() const {
    return cifar::batches_per_epoch(train_.size(), config_.batch_size * world_);
  }
  /// Batches trained in the run so far (the schedule's step).
  int64_t steps_done() const {
    return (state_.epoch - 1) * batches_per_epoch() + state_.batch;
  }

  ClassifierImpl& model() {
    return *model_;
  }
  std::shared_ptr<ClassifierImpl> model_ptr() {
    return model_;
  }
  torch::optim::SGD& optimizer() {
    return *optimizer_;
  }
  /// The fp16 loss scaler (--amp fp16), or null.
  const GradScaler* grad_scaler() const {
    return scaler_.get();
  }
  const ClosedFormLR& lr_schedule() const {
    return *lr_schedule_;
  }
  const TrainState& state() const {
    return state_;
  }
  const Config& config() const {
    return config_;
  }
  const Split& train_split() const {
    return train_;
  }
  const Split& test_split() const {
    return test_;
  }
  c10::Device device() const {
    return device_;
  }
  int64_t rank() const {
    return rank_;
  }
  int64_t world_size() const {
    return world_;
  }
#ifdef ANODE_WITH_DISTRIBUTED
  /// The gradient averaging (nullptr: one process).
  const anode::dist::DataParallel* data_parallel() const {
    return dp_.get();
  }
#endif

  /// Called after every training batch with (batch index, batch loss); tests use it.
  std::function<void(int64_t, double)> on_batch;

 private:
  // Images are NCHW unless --channels-last, which LibTorch 1.13 refuses (amp.hpp says why).
  torch::Tensor input(const torch::Tensor& images) const {
    auto x = images.to(device_, config_.float64 ? torch::kDouble : torch::kFloat);
    return config_.channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
  }

  bool progress() const {
    return config_.progress && rank_ == 0;
  }

  /// The gradient all-reduces of an epoch's steps (data parallel).
  struct CommTotals {
    int64_t steps = 0, buckets = 0, overlapped = 0;
    double wait_s = 0, backward_s = 0, launch_fraction = 0;
  };
  /// "  comm: ..." for the epoch line (empty for one process).
  std::string comm_summary() const {
    if (comm_.steps == 0) return "";
    std::ostringstream os;
    os << std::fixed << std::setprecision(0) << "  comm: "
       << 100.0 * static_cast<double>(comm_.overlapped) / static_cast<double>(comm_.buckets)
       << "% of " << comm_.buckets / comm_.steps << " buckets/step started during backward, "
       << "on average at " << 100.0 * comm_.launch_fraction / static_cast<double>(comm_.buckets)
       << "% of it, " << std::setprecision(1)
       << 1000.0 * comm_.wait_s / static_cast<double>(comm_.steps)
       << " ms/step waited after it (backward from first gradient "
       << 1000.0 * comm_.backward_s / static_cast<double>(comm_.steps) << " ms/step)";
    return os.str();
  }

  /// Element-wise sums over the ranks (the "grads" process group; no gradient bucket is in flight
  /// between steps).
  std::vector<double> all_sum(std::vector<double> v, const std::string& what) {
#ifdef ANODE_WITH_DISTRIBUTED
    auto t = torch::tensor(v, torch::kDouble).to(device_);
    group_->all_reduce_sum_grads(t, what);
    t = t.cpu();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = t[static_cast<int64_t>(i)].item<double>();
#else
    (void)what;
#endif
    return v;
  }

  Config config_;
  c10::Device device_;
  Split train_, test_;
  GroupPtr group_;
  int64_t rank_ = 0, world_ = 1;
  CommTotals comm_;
  std::shared_ptr<ClassifierImpl> model_;
  std::shared_ptr<anode::MemoryPlan> memory_plan_;  // --memory-budget
#ifdef ANODE_WITH_DISTRIBUTED
  std::unique_ptr<anode::dist::DataParallel> dp_;  // after model_: its hooks go first
#endif
  std::unique_ptr<torch::optim::SGD> optimizer_;
  // The scheduler refers to *optimizer_, so it is declared after it and destroyed before it.
  std::unique_ptr<ClosedFormLR> lr_schedule_;
  std::unique_ptr<GradScaler> scaler_;  // --amp fp16
  TrainState state_;
};

}  // namespace cifar
