// Uses anode as a downstream project would; exits non-zero if the result is wrong. Kept to one
// small translation unit that includes only <anode/anode.hpp> (not <torch/torch.h>): the packaging
// tests build it twice, without a precompiled header, so every included line costs compile time.
#include <anode/anode.hpp>

#include <iostream>

// anode defines ANODE_WITH_CUDA for a CUDA build of LibTorch only (CMakeLists.txt tells which
// LibTorch this project found).
#if defined(ANODE_WITH_CUDA) && !ANODE_CONSUMER_TORCH_HAS_CUDA
#error "ANODE_WITH_CUDA is defined, but the LibTorch this project found has no CUDA"
#elif !defined(ANODE_WITH_CUDA) && ANODE_CONSUMER_TORCH_HAS_CUDA
#error "ANODE_WITH_CUDA is not defined, but the LibTorch this project found has CUDA"
#endif

// f(z) = tanh(z W): a module with one parameter (torch::nn::Linear would need more headers).
struct RHSImpl : torch::nn::Module {
  RHSImpl() : weight(register_parameter("weight", torch::randn({3, 3}))) {}
  torch::Tensor forward(const torch::Tensor& x) { return torch::tanh(x.matmul(weight)); }
  torch::Tensor weight;
};
TORCH_MODULE(RHS);

int main() {
  anode::ODEBlock<RHSImpl> block(RHS(),
                                 anode::ODEBlockOptions().method(anode::Method::RK2).steps(2));
  auto x = torch::randn({4, 3}, torch::requires_grad());
  block->forward(x).sum().backward();
  const bool ok = x.grad().defined() && block->func()->weight.grad().defined();
  std::cout << "anode " << ANODE_VERSION << " consumer: " << (ok ? "ok" : "FAILED") << "\n";
  return ok ? 0 : 1;
}
