#pragma once
// Keeping a C++ object alive in an autograd node. `AutogradContext::saved_data` holds IValues,
// which cannot hold an arbitrary class without registering it with TorchScript; a capsule can
// hold any `torch::CustomClassHolder` without registration.

#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace detail {

template <typename T>
void save_object(torch::autograd::AutogradContext* ctx, const std::string& key,
                 c10::intrusive_ptr<T> object) {
  ctx->saved_data[key] = c10::IValue::make_capsule(std::move(object));
}

template <typename T>
c10::intrusive_ptr<T> load_object(torch::autograd::AutogradContext* ctx, const std::string& key) {
  auto it = ctx->saved_data.find(key);
  TORCH_CHECK(it != ctx->saved_data.end(), "anode: internal error: no saved '", key, "'");
  auto holder = it->second.toCapsule();
  return c10::intrusive_ptr<T>::reclaim(static_cast<T*>(holder.release()));
}

/// What both gradient Functions leave for backward: one state tensor, the parameters and the call
/// object. The parameters are saved too (no copy) so that autograd reports, as it does for
/// Backprop, a parameter modified in place between forward and backward.
template <typename T>
void save_for_backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& state,
                       at::TensorList params, c10::intrusive_ptr<T> call) {
  std::vector<torch::Tensor> saved{state};
  saved.insert(saved.end(), params.begin(), params.end());
  ctx->save_for_backward(saved);
  save_object(ctx, "call", std::move(call));
}

}  // namespace detail
}  // namespace anode
