#pragma once
// anode::SyncBatchNorm: BatchNorm whose training-mode statistics can be taken over the batches of
// all ranks of a data-parallel run (torch.nn.SyncBatchNorm's semantics), and whose statistics a
// recompute (Gradient::Anode) replays instead of asking the other ranks again.
//
// Without a group (the default) it is torch::nn::BatchNorm{1,2,3}d, call for call: the same
// parameters, buffers, names and arithmetic (torch::batch_norm). With a group of size W > 1
// (anode::dist::Group, <anode/distributed.hpp>, implements `StatsGroup` on c10d), in training:
// - forward: each rank computes its local per-channel (mean, M2, count), one all-gather collects
//   them, and every rank combines them in rank order (Chan's parallel update: stable, and the
//   same bits on every rank), so the mean and biased variance are those of the global batch;
// - backward: one all-reduce of the per-channel (sum dy, sum dy * xhat), the gradient of the
//   global statistics (unavoidable: an input's gradient depends on every rank's dy). Weight and
//   bias get this rank's share, which the data-parallel gradient average then sums;
// - recompute: the forward's global statistics are recorded per call on a tape; a recompute
//   replays them, without a collective. The tape position is the module's num_batches_tracked
//   (counted from the last `reset_tape()`): anode puts buffers back to their forward values at
//   every recomputed step, so the position a recomputed call sees is exactly the position the
//   forward's call had, with binomial checkpoints too. A replayed call checks that its input's
//   local statistics equal, bit for bit, the ones recorded in forward: a mismatch raises (the
//   other ranks' part of the statistics cannot be checked without a collective, but they come from
//   the same forward call). Call `reset_sync_batchnorm(module)` (anode::dist::DataParallel's
//   prepare() does) before each training iteration so the tape does not grow.
// The core library does not depend on c10d: this header only needs the StatsGroup interface.

#include <anode/detail/capsule.hpp>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <utility>
#include <vector>

namespace anode {

/// The collectives SyncBatchNorm needs, on every rank in the same order. Blocking; a failure or a
/// timeout throws (c10::Error) naming the collective.
class StatsGroup {
 public:
  virtual ~StatsGroup() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  /// Every rank's `t` (the same shape and dtype on all ranks), in rank order.
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& t, const char* what) = 0;
  /// Sums `t` over the ranks, in place.
  virtual void all_reduce_sum(torch::Tensor& t, const char* what) = 0;
};

namespace detail {

struct StatsGroupHolder : torch::CustomClassHolder {
  explicit StatsGroupHolder(std::shared_ptr<StatsGroup> g) : group(std::move(g)) {}
  std::shared_ptr<StatsGroup> group;
};

/// Per-channel reduction dims of a [N, C, ...] tensor: all but 1.
inline std::vector<int64_t> channel_reduce_dims(const torch::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

/// [1, C, 1, ...] to broadcast a per-channel vector against x.
inline std::vector<int64_t> channel_shape(const torch::Tensor& x) {
  std::vector<int64_t> s(static_cast<std::size_t>(x.dim()), 1);
  s[1] = x.size(1);
  return s;
}

/// This rank's per-channel statistics, packed in double: [mean (C), M2 about that mean (C), count].
inline torch::Tensor local_batch_stats(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto dims = channel_reduce_dims(x);
  const int64_t C = x.size(1);
  const int64_t n = C > 0 ? x.numel() / C : 0;
  auto mean = n > 0 ? x.mean(dims, false, x.scalar_type()) : torch::zeros({C}, x.options());
  auto m2 = n > 0 ? (x - mean.view(channel_shape(x))).square().sum(dims, false, torch::kDouble)
                  : torch::zeros({C}, x.options().dtype(torch::kDouble));
  auto count = torch::full({1}, static_cast<double>(n), x.options().dtype(torch::kDouble));
  return torch::cat({mean.to(torch::kDouble), m2, count});
}

/// The global (mean, biased var, count) from every rank's packed statistics, combined in rank
/// order (Chan et al.'s pairwise-free form: M2 = sum M2_r + sum n_r (mean_r - mean)^2).
inline std::tuple<torch::Tensor, torch::Tensor, double> combine_batch_stats(
    const std::vector<torch::Tensor>& all, int64_t C) {
  auto s = torch::stack(all);  // [W, 2C + 1]
  auto means = s.narrow(1, 0, C), m2s = s.narrow(1, C, C), counts = s.narrow(1, 2 * C, 1);
  const double n = counts.sum().item<double>();
  TORCH_CHECK(n > 1,
              "anode::SyncBatchNorm: expected more than 1 value per channel over all ranks "
              "in training, got ",
              n);
  auto mean = (means * counts).sum(0) / n;
  auto m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0);
  return {mean, m2 / n, n};
}

/// y = (x - mean) * invstd * weight + bias, with the gradient of the global statistics in backward.
class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& mean, const torch::Tensor& invstd, double count,
                               c10::intrusive_ptr<StatsGroupHolder> group) {
    const auto shape = channel_shape(x);
    auto y = (x - mean.view(shape)) * invstd.view(shape);
    if (weight.defined()) y = y * weight.view(shape);
    if (bias.defined()) y = y + bias.view(shape);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    save_object(ctx, "group", std::move(group));
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    const double n = ctx->saved_data["count"].toDouble();
    auto group = load_object<StatsGroupHolder>(ctx, "group")->group;
    const auto& g = grads[0];
    const auto dims = channel_reduce_dims(x);
    const auto shape = channel_shape(x);
    const int64_t C = x.size(1);
    auto xhat = (x - mean.view(shape)) * invstd.view(shape);
    auto sum_dy = g.sum(dims, false, torch::kDouble);
    auto sum_dy_xhat = (g * xhat).sum(dims, false, torch::kDouble);
    torch::Tensor dx, dweight, dbias;
    if (ctx->needs_input_grad(0)) {
      auto both = torch::cat({sum_dy, sum_dy_xhat});
      if (group && group->size() > 1)
        group->all_reduce_sum(both, "SyncBatchNorm backward (sum dy, sum dy*xhat)");
      auto mean_dy = (both.narrow(0, 0, C) / n).to(x.scalar_type()).view(shape);
      auto mean_dy_xhat = (both.narrow(0, C, C) / n).to(x.scalar_type()).view(shape);
      auto scale = weight.defined() ? invstd * weight : invstd;
      dx = (g - mean_dy - xhat * mean_dy_xhat) * scale.view(shape);
    }
    if (weight.defined() && ctx->needs_input_grad(1))
      dweight = sum_dy_xhat.to(weight.scalar_type());
    if (ctx->needs_input_grad(2)) dbias = sum_dy.to(x.scalar_type());
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace detail

/// BatchNorm over N-d inputs [N, C, ...], optionally synchronised over a StatsGroup. Options as
/// torch::nn::BatchNorm's (num_features, eps, momentum, affine, track_running_stats).
///
/// Example:
/// ```
/// anode::SyncBatchNorm bn(64);                 // per-rank statistics: torch::nn::BatchNorm2d(64)
/// anode::dist::convert_sync_batchnorm(*model, group);  // every SyncBatchNorm of the model syncs
/// ```
class SyncBatchNormImpl : public torch::nn::Cloneable<SyncBatchNormImpl> {
 public:
  explicit SyncBatchNormImpl(int64_t num_features)
      : SyncBatchNormImpl(torch::nn::BatchNormOptions(num_features)) {}
  explicit SyncBatchNormImpl(const torch::nn::BatchNormOptions& options) : options(options) {
    reset();
  }

  void reset() override {
    if (options.affine()) {
      weight = register_parameter("weight", torch::empty({options.num_features()}));
      bias = register_parameter("bias", torch::empty({options.num_features()}));
    } else {
      weight = register_parameter("weight", torch::Tensor(), /*requires_grad=*/false);
      bias = register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
    }
    if (options.track_running_stats()) {
      running_mean = register_buffer("running_mean", torch::zeros({options.num_features()}));
      running_var = register_buffer("running_var", torch::ones({options.num_features()}));
      num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
    } else {
      running_mean = register_buffer("running_mean", torch::Tensor());
      running_var = register_buffer("running_var", torch::Tensor());
      num_batches_tracked = register_buffer("num_batches_tracked", torch::Tensor());
    }
    reset_parameters();
    tape_.clear();
    tape_base_ = 0;
  }

  void reset_running_stats() {
    if (options.track_running_stats()) {
      running_mean.zero_();
      running_var.fill_(1);
      num_batches_tracked.zero_();
    }
  }

  void reset_parameters() {
    reset_running_stats();
    if (options.affine()) {
      torch::nn::init::ones_(weight);
      torch::nn::init::zeros_(bias);
    }
  }

  /// Synchronise training statistics over `group` (nullptr: per-rank statistics). Clears the tape.
  void set_group(std::shared_ptr<StatsGroup> group) {
    TORCH_CHECK(!group || group->size() == 1 || options.track_running_stats(),
                "anode::SyncBatchNorm: synchronised statistics need track_running_stats(true) "
                "(num_batches_tracked is the position a recompute replays the statistics from)");
    group_ = std::move(group);
    reset_tape();
  }
  const std::shared_ptr<StatsGroup>& group() const { return group_; }
  bool synchronized() const { return group_ && group_->size() > 1; }

  /// Forgets the recorded statistics: call before each training iteration's forward pass.
  void reset_tape() {
    tape_.clear();
    tape_base_ = num_batches_tracked.defined() ? num_batches_tracked.item<int64_t>() : 0;
  }
  /// Forward calls recorded since the last reset_tape() (each one collective).
  int64_t collectives() const { return static_cast<int64_t>(tape_.size()); }
  /// Calls that replayed recorded statistics since construction (no collective).
  int64_t replays() const { return replays_; }

  torch::Tensor forward(const torch::Tensor& input) {
    TORCH_CHECK(input.dim() >= 2 && input.size(1) == options.num_features(),
                "anode::SyncBatchNorm: expected an input [N, ", options.num_features(),
                ", ...], got ", input.sizes());
    if (!synchronized() || !is_training()) return local_forward(input);
    return synchronized_forward(input);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "anode::SyncBatchNorm(" << options.num_features() << ", eps=" << options.eps()
           << ", momentum=";
    if (options.momentum().has_value()) {
      stream << options.momentum().value();
    } else {
      stream << "None";
    }
    stream << ", affine=" << options.affine()
           << ", track_running_stats=" << options.track_running_stats()
           << (synchronized() ? ", synchronized over " + std::to_string(group_->size()) + " ranks"
                              : std::string())
           << ")";
  }

  torch::nn::BatchNormOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  // torch::nn::BatchNormImplBase::forward, line for line.
  torch::Tensor local_forward(const torch::Tensor& input) {
    double factor = options.momentum().value_or(0.0);
    if (is_training() && options.track_running_stats() && num_batches_tracked.defined()) {
      num_batches_tracked += 1;
      factor = options.momentum().has_value() ? options.momentum().value()
                                              : 1.0 / num_batches_tracked.item<double>();
    }
    return torch::batch_norm(input, weight, bias, running_mean, running_var,
                             is_training() || !options.track_running_stats(), factor, options.eps(),
                             at::globalContext().userEnabledCuDNN());
  }

  struct Entry {
    torch::Tensor local;  // this rank's packed statistics in forward (checked on replay)
    torch::Tensor mean;   // global mean, double [C]
    torch::Tensor var;    // global biased variance, double [C]
    double count = 0;     // global count
  };

  torch::Tensor synchronized_forward(const torch::Tensor& input) {
    const int64_t C = options.num_features();
    const int64_t position = num_batches_tracked.item<int64_t>() - tape_base_;
    TORCH_CHECK(position >= 0 && position <= static_cast<int64_t>(tape_.size()),
                "anode::SyncBatchNorm: num_batches_tracked moved outside the recorded calls (",
                "position ", position, ", ", tape_.size(),
                " recorded); call "
                "anode::reset_sync_batchnorm(module) before each training iteration and do not "
                "load buffers in the middle of one");
    auto local = detail::local_batch_stats(input);
    Entry e;
    if (position < static_cast<int64_t>(tape_.size())) {
      // A recompute (anode put num_batches_tracked back): replay the forward's statistics.
      e = tape_[static_cast<std::size_t>(position)];
      TORCH_CHECK(torch::equal(local, e.local),
                  "anode::SyncBatchNorm: a replayed call (forward call ", position,
                  " since the last reset) sees an input whose local statistics differ from that "
                  "call's in forward: the recompute does not reproduce the forward pass, or "
                  "num_batches_tracked was changed; the global statistics cannot be replayed");
      ++replays_;
    } else {
      auto all = group_->all_gather(local, "SyncBatchNorm forward (mean, M2, count)");
      auto [mean, var, n] = detail::combine_batch_stats(all, C);
      e = Entry{local, mean, var, n};
      tape_.push_back(e);
    }
    torch::Tensor mean = e.mean.to(input.scalar_type());
    torch::Tensor invstd = (e.var + options.eps()).rsqrt().to(input.scalar_type());
    {
      torch::NoGradGuard no_grad;
      num_batches_tracked += 1;
      const double m = options.momentum().has_value() ? options.momentum().value()
                                                      : 1.0 / num_batches_tracked.item<double>();
      running_mean.mul_(1 - m).add_(e.mean.to(running_mean.scalar_type()), m);
      running_var.mul_(1 - m).add_(
          (e.var * (e.count / (e.count - 1))).to(running_var.scalar_type()), m);
    }
    return detail::SyncBatchNormFunction::apply(
        input, weight, bias, mean, invstd, e.count,
        c10::make_intrusive<detail::StatsGroupHolder>(group_));
  }

  std::shared_ptr<StatsGroup> group_;
  std::vector<Entry> tape_;
  int64_t tape_base_ = 0;
  int64_t replays_ = 0;
};

/// A holder for SyncBatchNormImpl, as TORCH_MODULE(SyncBatchNorm) writes it.
TORCH_MODULE(SyncBatchNorm);

/// Every SyncBatchNorm in `module` (itself included) syncs over `group` (nullptr: per-rank).
inline int64_t set_sync_batchnorm_group(torch::nn::Module& module,
                                        const std::shared_ptr<StatsGroup>& group) {
  int64_t n = 0;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* bn = dynamic_cast<SyncBatchNormImpl*>(m.get())) {
      bn->set_group(group);
      ++n;
    }
  }
  return n;
}

/// Clears the statistics tapes of every SyncBatchNorm in `module`: call before each training
/// iteration (anode::dist::DataParallel::prepare() does).
inline void reset_sync_batchnorm(torch::nn::Module& module) {
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* bn = dynamic_cast<SyncBatchNormImpl*>(m.get())) bn->reset_tape();
  }
}

}  // namespace anode
