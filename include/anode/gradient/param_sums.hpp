#pragma once
// The parameter-gradient sums of Gradient::Anode's binomial backward, which reverses one step at a
// time: how each reversed step adds its contributions so that the sums have Backprop's bits.

#include <ATen/autocast_mode.h>
#include <anode/detail/autocast.hpp>
#include <anode/detail/graph.hpp>

#include <torch/autograd.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

/// The parameter-gradient sums of a binomial backward, which reverses one step at a time.
///
/// Backprop sums a parameter's gradient over all steps inside one autograd pass, in the order the
/// steps are reversed; under autocast it sums at the weight's cached low-precision cast, in that
/// precision, and converts once. To return the same bits, each reversed step here is seeded with
/// the running sum: the sum enters the step's autograd pass through an extra identity use of the
/// parameter (created last, so autograd runs it first) and the step's own contributions are added
/// to it in autograd's order. Under autocast the differentiated tensor is the cached cast itself,
/// unless the parameter is also used directly in that step; then that step differentiates the
/// parameter (exact, but summed in its own precision).
class GradientSums {
 public:
  /// `params` and `need` (one entry per Function input: z0, then each parameter) must outlive
  /// this object; `ac` is the autocast state of the forward pass, which the recompute replays.
  GradientSums(const AutocastState& ac, const std::vector<torch::Tensor>& params,
               const std::vector<bool>& need)
      : params_(params),
        need_(need),
        full_(params.size()),
        low_(params.size()),
        cast_(params.size()) {
    torch::AutoGradMode enable(true);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!need_[1 + i]) continue;
      const auto& p = params[i];
      const auto type = p.device().type();
      const bool on = (type == c10::DeviceType::CPU && ac.cpu_enabled) ||
                      (type == c10::DeviceType::CUDA && ac.cuda_enabled);
      if (!on || !ac.cache_enabled || p.scalar_type() != torch::kFloat || !p.is_leaf() ||
          p.is_view())
        continue;
      // The cast every autocast op of the recompute will take from the cache.
      cast_[i] = at::autocast::cached_cast(
          type == c10::DeviceType::CPU ? ac.cpu_dtype : ac.cuda_dtype, p, type);
      if (cast_[i].is_same(p) || !cast_[i].grad_fn()) cast_[i] = torch::Tensor();
    }
  }

  /// Backpropagates `adjoint` through one step `next = step(zi)`: `adjoint` becomes dL/dzi and the
  /// parameter sums grow by the step's contributions.
  void reverse_step(const torch::Tensor& next, const torch::Tensor& zi, torch::Tensor& adjoint) {
    std::vector<const torch::autograd::Node*> stops;
    for (const auto& c : cast_) {
      if (c.defined()) stops.push_back(c.grad_fn().get());
    }
    for (const auto& p : params_) {
      if (p.grad_fn()) stops.push_back(p.grad_fn().get());  // a non-leaf parameter is an input
    }
    const auto leaves = reached_leaves({next}, stops);
    std::vector<torch::Tensor> known(params_);
    known.push_back(zi);
    check_no_foreign_leaf_in(leaves, known, "Gradient::Anode");
    // Which parameters this step uses directly (not only through their cached cast).
    std::vector<bool> direct(params_.size(), false);
    for (const auto& leaf : leaves) {
      for (std::size_t i = 0; i < params_.size(); ++i) {
        if (leaf.is_same(params_[i])) direct[i] = true;
      }
    }
    if (!next.requires_grad()) {
      adjoint = torch::zeros_like(zi);
      return;
    }
    std::vector<torch::Tensor> roots{next}, seeds{adjoint}, inputs{zi};
    std::vector<std::pair<std::size_t, bool>> where;  // (parameter, through its cast)
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!need_[1 + i]) continue;
      const bool low = cast_[i].defined() && !direct[i];
      const torch::Tensor& input = low ? cast_[i] : params_[i];
      torch::Tensor& sum = low ? low_[i] : full_[i];
      inputs.push_back(input);
      where.emplace_back(i, low);
      if (sum.defined()) {
        roots.push_back(input.view_as(input));
        seeds.push_back(sum);
      }
    }
    auto g = torch::autograd::grad(roots, inputs, seeds, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    adjoint = g[0].defined() ? g[0] : torch::zeros_like(zi);
    for (std::size_t j = 0; j < where.size(); ++j) {
      const auto [i, low] = where[j];
      if (g[1 + j].defined()) (low ? low_[i] : full_[i]) = g[1 + j];
    }
  }

  /// One entry per Function input (z0 first, left empty here), the call object's excluded.
  torch::autograd::variable_list parameter_gradients() const {
    torch::autograd::variable_list out(1 + params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!need_[1 + i]) continue;
      torch::Tensor g = full_[i];
      if (low_[i].defined()) {
        const torch::Tensor up = low_[i].to(params_[i].scalar_type());
        g = g.defined() ? g + up : up;
      }
      out[1 + i] = g;
    }
    return out;
  }

 private:
  const std::vector<torch::Tensor>& params_;
  const std::vector<bool>& need_;
  std::vector<torch::Tensor> full_;  // sums of gradients taken at the parameter
  std::vector<torch::Tensor> low_;   // sums taken at its cached autocast cast
  std::vector<torch::Tensor> cast_;  // the cached cast, when autocast casts this parameter
};

}  // namespace detail
}  // namespace anode
