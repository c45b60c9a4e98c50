#pragma once
// The training loop of anode-cifar: SGD with momentum and weight decay, the scaled step schedule,
// per-epoch evaluation, CSV log and atomic checkpoints. Everything a run depends on lives in the
// checkpoint or is derived from (seed, epoch, batch), so `resume()` continues a stopped run
// (between epochs or in the middle of one) exactly as if it had never stopped.

#include "examples/cifar/checkpoint.hpp"
#include "examples/cifar/config.hpp"
#include "examples/cifar/csv_log.hpp"
#include "examples/cifar/dataset.hpp"
#include "examples/cifar/models.hpp"
#include "examples/cifar/progress.hpp"

#include <anode/memory.hpp>

#include <torch/data.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

/// The settings a checkpoint records. The ones in `kResumeKeys` must agree when resuming.
inline Meta run_meta(const Config& c) {
  auto num = [](double x) {
    std::ostringstream os;
    os << std::setprecision(17) << x;
    return os.str();
  };
  std::string blocks;
  for (auto b : c.blocks.empty() ? default_blocks(c.network) : c.blocks)
    blocks += (blocks.empty() ? "" : ",") + std::to_string(b);
  return {{"network", c.network},
          {"dataset", to_string(c.dataset)},
          {"width", num(c.width)},
          {"blocks", blocks},
          {"method", anode::to_string(c.method)},
          {"nt", std::to_string(c.nt)},
          {"gradient", anode::to_string(c.gradient)},
          {"checkpoints", std::to_string(c.checkpoints)},
          {"batch-size", std::to_string(c.batch_size)},
          {"lr", num(c.lr)},
          {"schedule", c.schedule},
          {"momentum", num(c.momentum)},
          {"wd", num(c.weight_decay)},
          {"seed", std::to_string(c.seed)},
          {"limit", std::to_string(c.limit)},
          {"epochs", std::to_string(c.epochs)}};
}

/// Settings a resumed run must share with the checkpoint (--epochs, --device, --threads and
/// --workers may change; a different --epochs changes the schedule's milestones).
inline const std::vector<std::string>& resume_keys() {
  static const std::vector<std::string> keys{
      "network",    "dataset", "width",    "blocks", "method", "nt",    "gradient", "checkpoints",
      "batch-size", "lr",      "momentum", "wd",     "seed",   "limit", "schedule"};
  return keys;
}

/// A Config carrying the architecture and solver recorded in a checkpoint's meta (for --evaluate).
inline Config config_from_meta(Config c, const Meta& m) {
  auto get = [&](const std::string& k) {
    auto it = m.find(k);
    TORCH_CHECK(it != m.end(), "cifar: the checkpoint has no '", k, "' setting");
    return it->second;
  };
  c.network = get("network");
  c.dataset = kind_from_string(get("dataset"));
  c.width = std::stod(get("width"));
  c.blocks.clear();
  std::stringstream ss(get("blocks"));
  for (std::string b; std::getline(ss, b, ',');) c.blocks.push_back(std::stoll(b));
  c.method = anode::method_from_string(get("method"));
  c.nt = std::stoll(get("nt"));
  c.gradient = anode::gradient_from_string(get("gradient"));
  c.checkpoints = std::stoll(get("checkpoints"));
  return c;
}

/// Loss and accuracy over a split.
struct Evaluation {
  double loss = 0;      ///< mean cross-entropy
  double accuracy = 0;  ///< fraction correct
  int64_t images = 0;
  bool interrupted = false;
};

/// Trains one model on one dataset as `Config` says.
class Trainer {
 public:
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
  }

  /// Continues from `path` (default OUT/checkpoint.pt), after checking that the settings agree.
  void resume(const std::string& path = "") {
    const std::string file = path.empty() ? checkpoint_path() : path;
    const Meta saved = read_meta(file);
    const Meta now = run_meta(config_);
    for (const auto& k : resume_keys()) {
      const auto it = saved.find(k);
      // Checkpoints from before --schedule existed were all trained with the step schedule.
      const std::string was = it != saved.end() ? it->second : k == "schedule" ? "step" : "?";
      TORCH_CHECK(was == now.at(k), "cifar: --resume: checkpoint '", file, "' was written with --",
                  k, " ", was, ", but this run has --", k, " ", now.at(k),
                  "; use the same settings or another --out");
    }
    load_checkpoint(file, *model_, optimizer_.get(), &state_, device_);
  }

  /// Loads only the model weights of a checkpoint (for evaluation).
  void load_weights(const std::string& path) {
    load_checkpoint(path, *model_, nullptr, nullptr, device_);
  }

  /// Runs the remaining epochs. Returns false if it stopped early on `stop` (after saving).
  bool run(const std::atomic<bool>* stop = nullptr, std::ostream& log = std::cout) {
    std::filesystem::create_directories(config_.out);
    CsvLog csv(log_path(), state_.epoch);
    while (state_.epoch <= config_.epochs) {
      EpochRecord r;
      if (!run_epoch(&r, stop)) return false;
      csv.write(r);
      log << "epoch " << r.epoch << "/" << config_.epochs << "  lr " << r.lr << "  train loss "
          << std::fixed << std::setprecision(4) << r.train_loss << " acc " << std::setprecision(2)
          << 100 * r.train_acc << "%  test loss " << std::setprecision(4) << r.test_loss << " acc "
          << std::setprecision(2) << 100 * r.test_acc << "%  " << std::setprecision(1) << r.seconds
          << " s  " << std::setprecision(0) << r.images_per_s << " img/s  peak "
          << std::setprecision(1) << r.peak_mem_mib << " MiB" << std::defaultfloat << std::endl;
    }
    return true;
  }

  /// Finishes the current epoch (from wherever it stands), evaluates, advances the state and saves
  /// a checkpoint. Returns false if `stop` was raised: the state so far is saved and `r` unset.
  bool run_epoch(EpochRecord* r, const std::atomic<bool>* stop = nullptr) {
    const int64_t epoch = state_.epoch;
    const int64_t n_batches = batches_per_epoch(train_.size(), config_.batch_size);
    const double lr = lr_now(epoch, state_.batch, n_batches);  // onecycle: train_part updates it
    set_lr(lr);

    const auto t0 = std::chrono::steady_clock::now();
    const double seconds_before = state_.seconds;
    const int64_t seen_before = state_.seen;
    double peak_mib = -1;
    const bool trained = train_part(epoch, stop, &peak_mib);
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state_.seconds = seconds_before + train_seconds;
    if (!trained) {
      save();
      return false;
    }
    const double images_per_s =
        train_seconds > 0 ? static_cast<double>(state_.seen - seen_before) / train_seconds : 0;
    const Evaluation test = evaluate(test_, stop);
    if (test.interrupted) {
      save();  // the training part is done: a resumed run goes straight to the evaluation
      return false;
    }
    const double total_seconds =
        seconds_before +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    EpochRecord rec;
    rec.epoch = epoch;
    rec.lr = lr;
    rec.train_loss = state_.seen > 0 ? state_.loss_sum / static_cast<double>(state_.seen) : 0;
    rec.train_acc = state_.seen > 0 ? static_cast<double>(state_.correct) / state_.seen : 0;
    rec.test_loss = test.loss;
    rec.test_acc = test.accuracy;
    rec.seconds = total_seconds;
    rec.images_per_s = images_per_s;
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

  /// Mean loss and accuracy of the model (in eval mode, no gradients) on `split`.
  Evaluation evaluate(const Split& split, const std::atomic<bool>* stop = nullptr) {
    torch::NoGradGuard no_grad;
    model_->eval();
    CifarDataset dataset(split, AugmentOptions(channel_stats(config_.dataset)).random(false));
    auto loader = torch::data::make_data_loader(
        dataset, EpochSampler(split.size(), /*shuffle=*/false, config_.seed, 0),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
    ProgressBar bar(std::cerr, "  test    ", batches_per_epoch(split.size(), config_.batch_size), 0,
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

  /// Writes OUT/checkpoint.pt atomically.
  /// How far the reverse-time adjoint's gradient is from the exact one at the current weights: for
  /// the first `batches` training batches (in epoch 1's order, augmented as in training, the model
  /// in training mode, or in evaluation mode with `batchnorm_train` false: BatchNorm then uses its
  /// running statistics, an affine map, and the reverse solve no longer sees batch statistics of
  /// the states it reconstructs), the gradient of the loss with every ODE block set to Anode (the
  /// exact gradient of the discrete network), to Adjoint and to Backprop, each from the same
  /// weights and buffers. Returns one row per batch and mode: ||g - g_anode|| / ||g_anode|| over
  /// all parameters and over the ODE blocks' own, and the cosine of the angle to g_anode.
  struct GradientGap {
    int64_t batch;
    std::string mode;
    double loss, rel_all, rel_ode, cosine;
  };
  std::vector<GradientGap> gradient_gap(int64_t batches, bool batchnorm_train = true) {
    model_->train(batchnorm_train);
    CifarDataset dataset(train_, AugmentOptions(channel_stats(config_.dataset)), config_.seed);
    auto loader = torch::data::make_data_loader(
        dataset, EpochSampler(train_.size(), /*shuffle=*/true, config_.seed, 1, 0),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(0));
    // Whatever happens (an error in a backward included), the model is left as it was: the
    // configured solver, training mode, no gradients, the BatchNorm statistics of the checkpoint.
    struct Restore {
      Trainer& t;
      std::vector<torch::Tensor> buffers;
      void buffers_back() {
        torch::NoGradGuard no_grad;
        auto bufs = t.model_->buffers();
        for (std::size_t i = 0; i < bufs.size(); ++i) bufs[i].copy_(buffers[i]);
      }
      ~Restore() {
        try {
          buffers_back();
          const auto ode = t.config_.model_spec().ode;
          for (auto& block : anode::ode_blocks(*t.model_)) block->options = ode;
          t.model_->zero_grad();
          t.model_->train();
        } catch (...) {
        }
      }
    } restore{*this, {}};
    for (const auto& b : model_->buffers()) restore.buffers.push_back(b.detach().clone());
    const auto named = model_->named_parameters();
    std::vector<bool> in_ode;
    for (const auto& p : named) in_ode.push_back(p.key().find(".func.") != std::string::npos);
    std::vector<GradientGap> rows;
    int64_t b = 0;
    for (auto& batch : *loader) {
      if (b >= batches) break;
      auto x = input(batch.data), y = batch.target.to(device_);
      std::vector<std::pair<std::string, std::vector<torch::Tensor>>> grads;
      std::vector<double> losses;
      for (auto g : {anode::Gradient::Anode, anode::Gradient::Adjoint, anode::Gradient::Backprop}) {
        const auto configured = config_.model_spec().ode;
        for (auto& block : anode::ode_blocks(*model_)) block->options = configured.with_gradient(g);
        model_->zero_grad();
        auto loss = torch::nn::functional::cross_entropy(model_->forward(x), y);
        loss.backward();
        std::vector<torch::Tensor> gs;
        for (const auto& p : named) {
          gs.push_back(p.value().grad().defined() ? p.value().grad().detach().clone()
                                                  : torch::zeros_like(p.value()));
        }
        std::string name = anode::to_string(g);
        for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        grads.emplace_back(std::move(name), std::move(gs));  // as --gradient spells it
        losses.push_back(loss.item<double>());
        restore.buffers_back();  // each mode starts from the same statistics
      }
      const auto& ref = grads[0].second;
      for (std::size_t m = 0; m < grads.size(); ++m) {
        double diff_all = 0, ref_all = 0, diff_ode = 0, ref_ode = 0, dot = 0, norm_g = 0;
        for (std::size_t i = 0; i < ref.size(); ++i) {
          const auto g = grads[m].second[i].to(torch::kDouble), r = ref[i].to(torch::kDouble);
          const double d2 = (g - r).pow(2).sum().item<double>(), r2 = r.pow(2).sum().item<double>();
          diff_all += d2;
          ref_all += r2;
          if (in_ode[i]) {
            diff_ode += d2;
            ref_ode += r2;
          }
          dot += (g * r).sum().item<double>();
          norm_g += g.pow(2).sum().item<double>();
        }
        rows.push_back({b, grads[m].first, losses[m], std::sqrt(diff_all / ref_all),
                        std::sqrt(diff_ode / ref_ode), dot / std::sqrt(norm_g * ref_all)});
      }
      ++b;
    }
    return rows;
  }

  void save() const {
    save_checkpoint(checkpoint_path(), *model_, *optimizer_, state_, run_meta(config_), device_);
  }

  std::string checkpoint_path() const {
    return (std::filesystem::path(config_.out) / "checkpoint.pt").string();
  }
  std::string log_path() const { return (std::filesystem::path(config_.out) / "log.csv").string(); }

  ClassifierImpl& model() { return *model_; }
  std::shared_ptr<ClassifierImpl> model_ptr() { return model_; }
  torch::optim::SGD& optimizer() { return *optimizer_; }
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

  /// The learning rate of batch `batch` (0-based) of `epoch` (1-based) under --schedule.
  double lr_now(int64_t epoch, int64_t batch, int64_t n_batches) const {
    if (config_.schedule != "onecycle") return lr_at(config_.lr, epoch, config_.epochs);
    const double done = static_cast<double>((epoch - 1) * n_batches + batch);
    return onecycle_lr(config_.lr, done / static_cast<double>(config_.epochs * n_batches));
  }
  void set_lr(double lr) {
    for (auto& group : optimizer_->param_groups())
      static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
  }

  /// Trains the rest of `epoch`; false if stopped. Records the peak tensor memory in MiB.
  bool train_part(int64_t epoch, const std::atomic<bool>* stop, double* peak_mib) {
    model_->train();
    const int64_t n_batches = batches_per_epoch(train_.size(), config_.batch_size);
    if (state_.batch >= n_batches) return true;
    CifarDataset dataset(train_, AugmentOptions(channel_stats(config_.dataset)), config_.seed);
    auto loader = torch::data::make_data_loader(
        dataset, EpochSampler(train_.size(), /*shuffle=*/true, config_.seed, epoch, state_.batch),
        torch::data::DataLoaderOptions().batch_size(config_.batch_size).workers(config_.workers));
    std::ostringstream label;
    label << "epoch " << epoch << "/" << config_.epochs;
    ProgressBar bar(std::cerr, label.str(), n_batches, state_.batch, config_.progress);

    std::unique_ptr<anode::memory::PeakScope> peak;
    if (device_.is_cuda() || anode::memory::cpu_meter_installed())
      peak = std::make_unique<anode::memory::PeakScope>(device_);
    int64_t images = 0;
    bool stopped = false;
    for (auto& batch : *loader) {
      auto x = input(batch.data), y = batch.target.to(device_);
      if (config_.schedule == "onecycle") set_lr(lr_now(epoch, state_.batch, n_batches));
      optimizer_->zero_grad();
      auto logits = model_->forward(x);
      auto loss = torch::nn::functional::cross_entropy(logits, y);
      loss.backward();
      optimizer_->step();

      const double batch_loss = loss.item<double>();
      const int64_t b = y.size(0);
      state_.loss_sum += batch_loss * static_cast<double>(b);
      state_.correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      state_.seen += b;
      images += b;
      if (on_batch) on_batch(state_.batch, batch_loss);
      ++state_.batch;
      bar.update(state_.batch, images, state_.loss_sum / static_cast<double>(state_.seen),
                 static_cast<double>(state_.correct) / static_cast<double>(state_.seen));
      if (stop != nullptr && stop->load() && state_.batch < n_batches) {
        stopped = true;
        break;
      }
    }
    bar.finish();
    if (peak) *peak_mib = static_cast<double>(peak->peak_bytes()) / (1024.0 * 1024.0);
    return !stopped;
  }

  Config config_;
  c10::Device device_;
  Split train_, test_;
  std::shared_ptr<ClassifierImpl> model_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  TrainState state_;
};

}  // namespace cifar
