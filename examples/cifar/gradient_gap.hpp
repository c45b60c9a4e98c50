#pragma once
// A research tool, apart from training (anode-cifar --gradient-gap): how far the reverse-time
// adjoint's gradient, and plain backpropagation's, are from the exact gradient of the discrete
// network that ANODE computes, at a model's current weights. docs/paper_table.md uses it to
// explain how far the adjoint's accuracy falls behind ANODE's.

#include "examples/cifar/augment.hpp"
#include "examples/cifar/cifar_data.hpp"
#include "examples/cifar/classifier.hpp"
#include "examples/cifar/dataset.hpp"

#include <anode/ode_block.hpp>
#include <anode/options.hpp>

#include <torch/data.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cifar {

/// One mode's gradient on one batch, against Anode's.
struct GradientGapRow {
  int64_t batch;     ///< 0-based batch number
  std::string mode;  ///< anode | adjoint | backprop, as --gradient spells it
  double loss;       ///< the batch's cross-entropy under this mode
  double rel_all;    ///< ||g - g_anode|| / ||g_anode|| over all parameters
  double rel_ode;    ///< the same over the ODE blocks' own parameters
  double cosine;     ///< cosine of the angle between g and g_anode
};

/// The first `count` batches of epoch 1 of training on `train`, in training order and augmented
/// as in training (the data the gradient gap is measured on).
inline std::vector<torch::data::Example<>> first_training_batches(const Split& train, Kind dataset,
                                                                  int64_t batch_size, uint64_t seed,
                                                                  int64_t count) {
  CifarDataset data(train, AugmentOptions(channel_stats(dataset)), seed);
  auto loader = torch::data::make_data_loader(
      data, EpochSampler(train.size(), /*shuffle=*/true, seed, /*epoch=*/1),
      torch::data::DataLoaderOptions().batch_size(batch_size).workers(0));
  std::vector<torch::data::Example<>> batches;
  for (auto& batch : *loader) {
    if (static_cast<int64_t>(batches.size()) >= count) break;
    batches.push_back(std::move(batch));
  }
  return batches;
}

namespace detail {

/// Whatever happens (an error in a backward included), leaves the model as it was found: the
/// configured solver, training mode, no gradients, the BatchNorm statistics it had.
class ModelRestorer {
 public:
  ModelRestorer(ClassifierImpl& model, anode::ODEBlockOptions solver)
      : model_(model), solver_(std::move(solver)) {
    for (const auto& b : model_.buffers()) buffers_.push_back(b.detach().clone());
  }
  ModelRestorer(const ModelRestorer&) = delete;
  ModelRestorer& operator=(const ModelRestorer&) = delete;

  /// Puts the saved buffers back (each mode starts from the same statistics).
  void buffers_back() {
    torch::NoGradGuard no_grad;
    auto bufs = model_.buffers();
    for (std::size_t i = 0; i < bufs.size(); ++i) bufs[i].copy_(buffers_[i]);
  }

  ~ModelRestorer() {
    try {
      buffers_back();
      for (auto& block : anode::ode_blocks(model_)) block->options = solver_;
      model_.zero_grad();
      model_.train();
    } catch (...) {
      // A destructor must not throw; the error that brought us here is the one to report.
    }
  }

 private:
  ClassifierImpl& model_;
  anode::ODEBlockOptions solver_;
  std::vector<torch::Tensor> buffers_;
};

/// "anode", "adjoint", "backprop": the mode as --gradient spells it.
inline std::string lowercase_name(anode::Gradient g) {
  std::string name = anode::to_string(g);
  for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return name;
}

}  // namespace detail

/// For each of `batches`, the gradient of the loss with every ODE block set to Anode (the exact
/// gradient of the discrete network), to Adjoint and to Backprop, each from the same weights and
/// buffers, the other options those of `solver` (the model's configured ones). The model is in
/// training mode, or with `batchnorm_train` false in evaluation mode: BatchNorm then uses its
/// running statistics, an affine map, and the reverse solve no longer sees batch statistics of the
/// states it reconstructs. Returns one row per batch and mode (Anode's first); the model is left
/// as it was found.
inline std::vector<GradientGapRow> gradient_gap(ClassifierImpl& model,
                                                const anode::ODEBlockOptions& solver,
                                                const std::vector<torch::data::Example<>>& batches,
                                                bool batchnorm_train = true) {
  detail::ModelRestorer restore(model, solver);
  model.train(batchnorm_train);
  const auto named = model.named_parameters();
  TORCH_CHECK(!named.is_empty(), "cifar: gradient_gap: the model has no parameters");
  const auto device = named[0].value().device();
  std::vector<bool> in_ode;
  for (const auto& p : named) in_ode.push_back(p.key().find(".func.") != std::string::npos);

  std::vector<GradientGapRow> rows;
  for (std::size_t b = 0; b < batches.size(); ++b) {
    const auto x = batches[b].data.to(device), y = batches[b].target.to(device);
    std::vector<std::pair<std::string, std::vector<torch::Tensor>>> grads;
    std::vector<double> losses;
    for (auto g : {anode::Gradient::Anode, anode::Gradient::Adjoint, anode::Gradient::Backprop}) {
      for (auto& block : anode::ode_blocks(model)) block->options = solver.with_gradient(g);
      model.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model.forward(x), y);
      loss.backward();
      std::vector<torch::Tensor> gs;
      for (const auto& p : named) {
        gs.push_back(p.value().grad().defined() ? p.value().grad().detach().clone()
                                                : torch::zeros_like(p.value()));
      }
      grads.emplace_back(detail::lowercase_name(g), std::move(gs));
      losses.push_back(loss.item<double>());
      restore.buffers_back();
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
      rows.push_back({static_cast<int64_t>(b), grads[m].first, losses[m],
                      std::sqrt(diff_all / ref_all), std::sqrt(diff_ode / ref_ode),
                      dot / std::sqrt(norm_g * ref_all)});
    }
  }
  return rows;
}

}  // namespace cifar
