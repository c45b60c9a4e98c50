#pragma once
// Keeping a C++ object alive in an autograd node. `AutogradContext::saved_data` holds IValues,
// which cannot hold an arbitrary class without registering it with TorchScript; a capsule can
// hold any `torch::CustomClassHolder` without registration.

#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>

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

}  // namespace detail
}  // namespace anode
