// Uses anode as a downstream project would; exits non-zero if the result is wrong.
#include <torch/torch.h>
#include <anode/anode.hpp>

#include <iostream>

int main() {
  auto block = anode::ODEBlock<torch::nn::LinearImpl>(
      torch::nn::Linear(3, 3), anode::ODEBlockOptions().method(anode::Method::RK2).steps(2));
  auto x = torch::randn({4, 3}, torch::requires_grad());
  block->forward(x).sum().backward();
  const bool ok = x.grad().defined() && block->func()->weight.grad().defined();
  std::cout << "anode " << ANODE_VERSION << " consumer: " << (ok ? "ok" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
