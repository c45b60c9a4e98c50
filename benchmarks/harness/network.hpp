#pragma once
// What the benchmark programs share on top of anode: the gradient modes by name, a chain of L ODE
// blocks, one timed and metered training step, and gradient comparison.

#include <torch/torch.h>
#include <anode/anode.hpp>

#include "meters.hpp"
#include "models.hpp"
#include "stats.hpp"

#include <chrono>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace anode {
namespace bench {

/// A gradient mode as the benchmarks name it: "backprop", "anode", "anode-k4" (Anode with 4
/// binomial checkpoints inside each block, rebuilt in backward), "anode-k4f" (the same, stored by
/// the forward pass: keep_forward_checkpoints), "adjoint"; a "-nv" suffix turns verify_recompute
/// off ("anode-nv", "anode-k4-nv"), to measure what the check costs.
struct Mode {
  Gradient gradient = Gradient::Anode;
  int64_t checkpoints = 0;
  bool keep_forward = false;
  bool verify = true;
  std::string name;

  static Mode parse(std::string s) {
    Mode m;
    m.name = s;
    const std::string no_verify = "-nv";
    if (s.size() > no_verify.size() &&
        s.compare(s.size() - no_verify.size(), no_verify.size(), no_verify) == 0) {
      m.verify = false;
      s.resize(s.size() - no_verify.size());
      if (gradient_from_string(s.substr(0, s.find("-k"))) != Gradient::Anode)
        throw std::invalid_argument("mode '" + m.name + "': -nv only applies to anode");
    }
    const auto dash = s.find("-k");
    if (dash != std::string::npos) {
      m.gradient = gradient_from_string(s.substr(0, dash));
      if (m.gradient != Gradient::Anode)
        throw std::invalid_argument("mode '" + s + "': checkpoints (-kN) only apply to anode");
      std::string k = s.substr(dash + 2);
      if (!k.empty() && k.back() == 'f') {
        m.keep_forward = true;
        k.pop_back();
      }
      if (k.empty() || k.size() > 9 || k.find_first_not_of("0123456789") != std::string::npos) {
        throw std::invalid_argument("mode '" + s +
                                    "': expected anode-k<N> or anode-k<N>f, e.g. anode-k4");
      }
      m.checkpoints = std::stoll(k);
      if (m.checkpoints < 1) throw std::invalid_argument("mode '" + s + "': k must be >= 1");
    } else {
      m.gradient = gradient_from_string(s);
    }
    return m;
  }

  ODEBlockOptions apply(ODEBlockOptions o) const {
    return o.gradient(gradient)
        .checkpoints(checkpoints)
        .keep_forward_checkpoints(keep_forward)
        .verify_recompute(verify);
  }
};

/// L ODE blocks in sequence, each with its own right-hand side made by `make_rhs()`.
template <class Func>
struct ChainImpl : torch::nn::Module {
  template <class Make>
  ChainImpl(Make make_rhs, int64_t L, const ODEBlockOptions& opts) {
    for (int64_t l = 0; l < L; ++l) {
      blocks.push_back(
          register_module("block" + std::to_string(l), ODEBlock<Func>(make_rhs(), opts)));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& b : blocks) x = b->forward(x);
    return x;
  }
  void set_options(const ODEBlockOptions& o) {
    for (auto& b : blocks) b->options = o;
  }
  /// RHS evaluations so far, over all blocks (the RHS module counts them).
  int64_t evals() const {
    int64_t n = 0;
    for (const auto& b : blocks) n += b->func()->evals;
    return n;
  }
  void reset_evals() {
    for (auto& b : blocks) b->func()->evals = 0;
  }
  std::vector<ODEBlock<Func>> blocks;
};

/// The loss of every benchmark: 0.5 * mean((y - target)^2).
inline torch::Tensor bench_loss(const torch::Tensor& y, const torch::Tensor& target) {
  return 0.5 * (y - target).pow(2).mean();
}

inline void sync(const torch::Tensor& t) {
  if (t.is_cuda()) torch::cuda::synchronize();
}

/// One training step's measurements.
struct StepSample {
  double forward_s = 0;   ///< zero_grad + forward + loss
  double backward_s = 0;  ///< loss.backward()
  double total_s = 0;     ///< the whole step, optimizer update included
  RegionPeak peak;        ///< memory above what was live when the step began
  int64_t evals_forward = 0, evals_backward = 0;  ///< RHS evaluations in each pass
};

/// zero_grad, forward, loss, backward, optimizer step; timed and metered.
template <class Net>
StepSample train_step(Net& net, torch::optim::Optimizer& opt, const torch::Tensor& x,
                      const torch::Tensor& target) {
  using clock = std::chrono::steady_clock;
  StepSample s;
  sync(x);
  RegionMeter meter(x.device());
  net->reset_evals();
  const auto t0 = clock::now();
  opt.zero_grad();
  auto loss = bench_loss(net->forward(x), target);
  sync(x);
  const auto t1 = clock::now();
  s.evals_forward = net->evals();
  loss.backward();
  sync(x);
  const auto t2 = clock::now();
  s.evals_backward = net->evals() - s.evals_forward;
  opt.step();
  sync(x);
  const auto t3 = clock::now();
  s.peak = meter.peak();
  s.forward_s = std::chrono::duration<double>(t1 - t0).count();
  s.backward_s = std::chrono::duration<double>(t2 - t1).count();
  s.total_s = std::chrono::duration<double>(t3 - t0).count();
  return s;
}

/// How many timed steps to run after the warm-up: `min_repeats`, more while the warm-up's duration
/// says they fit in `budget_s`, at most `max_repeats`. Long steps are steady enough that fewer
/// repeats suffice; the count is reported with each figure.
inline int repeats_for(double warmup_s, int min_repeats, int max_repeats, double budget_s) {
  int n = warmup_s > 0 ? static_cast<int>(budget_s / warmup_s) : max_repeats;
  return std::max(min_repeats, std::min(max_repeats, n));
}

/// The figures of n timed steps: medians and quartiles of each phase, the highest peak, and the
/// last step's sample (its RHS evaluation counts).
struct TimedSteps {
  Summary total, forward, backward;  ///< milliseconds
  RegionPeak peak;
  StepSample last;
  std::size_t n = 0;
};

/// Runs `step()` (returning a StepSample) n times and summarises the timings, starting the peak
/// from `peak` (e.g. the warm-up step's).
template <class Step>
TimedSteps time_steps(Step&& step, int n, RegionPeak peak = {}) {
  TimedSteps r;
  std::vector<double> total, fwd, bwd;
  for (int i = 0; i < n; ++i) {
    r.last = step();
    total.push_back(r.last.total_s * 1e3);
    fwd.push_back(r.last.forward_s * 1e3);
    bwd.push_back(r.last.backward_s * 1e3);
    peak = max_of(peak, r.last.peak);
  }
  r.peak = peak;
  r.n = total.size();
  r.total = summarize(total);
  r.forward = summarize(fwd);
  r.backward = summarize(bwd);
  return r;
}

/// All gradients of a step, flattened: [dL/dx, dL/dtheta_0, dL/dtheta_1, ...] in float64.
/// Parameters without a gradient contribute zeros.
inline torch::Tensor flat_parameter_grads(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> parts;
  for (const auto& p : params) {
    parts.push_back(p.grad().defined() ? p.grad().detach().to(torch::kFloat64).reshape(-1)
                                       : torch::zeros({p.numel()}, torch::kFloat64));
  }
  return parts.empty() ? torch::zeros({0}, torch::kFloat64) : torch::cat(parts);
}

/// ||a - b|| / ||b|| (0 when both are zero, inf when only b is).
inline double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const double nb = b.norm().item<double>();
  const double nd = (a - b).norm().item<double>();
  if (nb == 0.0) return nd == 0.0 ? 0.0 : INFINITY;
  return nd / nb;
}

/// Cosine of the angle between a and b (nan when either is zero).
inline double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  const double na = a.norm().item<double>(), nb = b.norm().item<double>();
  if (na == 0.0 || nb == 0.0) return NAN;
  return (a.reshape(-1) * b.reshape(-1)).sum().item<double>() / (na * nb);
}

/// Sets the intra-op thread count from --threads (0: leave LibTorch's default).
inline void set_threads(int64_t n) {
  if (n > 0) torch::set_num_threads(static_cast<int>(n));
}

}  // namespace bench
}  // namespace anode
