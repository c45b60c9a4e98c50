#pragma once
// Looking at an autograd graph a recomputation built: which leaves requiring grad it reaches.
// A right-hand side that reads a tensor requiring grad which is not among the inputs of anode's
// autograd Function (a callable closing over a weight not passed in `params`, a module holding a
// tensor it never registered) would silently get no gradient under Gradient::Anode/Adjoint, while
// Backprop gives it one. The recompute's graph shows every such tensor as an AccumulateGrad node.

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/types.h>

#include <unordered_set>
#include <vector>

namespace anode {
namespace detail {

/// Every leaf requiring grad that `roots`' graphs reach without passing through one of `stops`
/// (nodes whose inputs are differentiated separately, such as a weight's cached autocast cast).
inline std::vector<torch::Tensor> reached_leaves(
    const std::vector<torch::Tensor>& roots,
    const std::vector<const torch::autograd::Node*>& stops) {
  using torch::autograd::Node;
  std::unordered_set<const Node*> seen(stops.begin(), stops.end());
  std::vector<Node*> stack;
  std::vector<torch::Tensor> out;
  for (const auto& r : roots) {
    if (r.defined() && r.grad_fn() && seen.insert(r.grad_fn().get()).second)
      stack.push_back(r.grad_fn().get());
  }
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const auto& edge : node->next_edges()) {
      Node* next = edge.function.get();
      if (next == nullptr || !seen.insert(next).second) continue;
      if (auto* acc = dynamic_cast<torch::autograd::AccumulateGrad*>(next)) {
        out.push_back(acc->variable);
        continue;
      }
      stack.push_back(next);
    }
  }
  return out;
}

/// Raises the error for a leaf requiring grad that a recompute reached but that is not an input.
[[noreturn]] inline void raise_foreign_leaf(const torch::Tensor& leaf, const char* mode) {
  TORCH_CHECK(false, "anode: the right-hand side reads a tensor that requires grad (shape ",
              leaf.sizes(), ", dtype ", leaf.scalar_type(), ", on ", leaf.device(),
              ") but is not a parameter of the solve, so ", mode,
              " would silently give it no gradient. For odeint with a callable, pass every tensor "
              "the callable reads that requires grad in odeint's `params` argument; for a module, "
              "register it with register_parameter; or use Gradient::Backprop");
  throw;  // unreachable: TORCH_CHECK(false, ...) throws
}

/// Raises if one of `leaves` (reached by a recompute's graph) is not in `known`.
inline void check_no_foreign_leaf_in(const std::vector<torch::Tensor>& leaves,
                                     const std::vector<torch::Tensor>& known, const char* mode) {
  for (const auto& leaf : leaves) {
    bool ok = false;
    for (const auto& k : known) ok = ok || (k.defined() && leaf.is_same(k));
    if (!ok) raise_foreign_leaf(leaf, mode);
  }
}

/// Raises if the recomputed `roots` reach a leaf requiring grad that is not in `known`. A known
/// tensor that is not a leaf (a parameter computed from another) is an input of the Function:
/// what lies behind it is differentiated through it, outside the recompute, so the walk stops
/// there.
inline void check_no_foreign_leaf(const std::vector<torch::Tensor>& roots,
                                  const std::vector<torch::Tensor>& known, const char* mode) {
  std::vector<const torch::autograd::Node*> stops;
  for (const auto& t : known) {
    if (t.defined() && t.grad_fn()) stops.push_back(t.grad_fn().get());
  }
  check_no_foreign_leaf_in(reached_leaves(roots, stops), known, mode);
}

}  // namespace detail
}  // namespace anode
