// The C++ snippets of README.md, compiled and run (CTest: readme_snippets). Each region between two
// `// [snippet NAME]` lines is quoted in the README under `<!-- snippet: NAME FILE -->`; regions of
// one name are joined with a blank line. scripts/check_snippets.py (CTest: docs.readme_snippets)
// fails when the README's blocks differ from these regions; `--update` rewrites the README.

// [snippet using-it]
#include <anode/anode.hpp>

// Any module whose forward takes (x) or (double t, x) and returns dz/dt with x's shape.
struct RHSImpl : torch::nn::Module {
  explicit RHSImpl(int64_t c)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(c))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(c, c, 3).padding(1)))) {}
  torch::Tensor forward(torch::Tensor x) { return conv2(torch::relu(bn(conv1(x)))); }
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn;
  torch::nn::Conv2d conv2;
};
TORCH_MODULE(RHS);
// [snippet using-it]

// [snippet memory]
#include <anode/memory.hpp>  // the meters: include it yourself, not through anode.hpp
// [snippet memory]

#include <iostream>

namespace {

void memory() {
  auto train_step = [] {
    auto w = torch::randn({64, 64}, torch::requires_grad());
    torch::tanh(torch::randn({32, 64}).matmul(w)).sum().backward();
  };
  // [snippet memory]
  anode::memory::install_cpu_meter();           // first in main(), before any tensor exists
  anode::memory::PeakScope scope(torch::kCPU);  // or a CUDA device (the caching allocator's stats)
  train_step();                                 // your forward and backward pass
  std::cout << scope.peak_bytes() << " bytes\n";  // peak above what was live at construction
  // also: cpu_current_bytes(), cpu_peak_bytes(), reset_cpu_peak(),
  //       cuda_peak_bytes(i), reset_cuda_peak(i)
  // [snippet memory]
  TORCH_CHECK(scope.peak_bytes() > 0, "the meter saw no allocation");
}

void using_it() {
  // [snippet using-it]
  auto options = anode::ODEBlockOptions()
                     .method(anode::Method::RK2)        // Euler | RK2 | RK4 | ...
                     .steps(4)                          // N_t
                     .gradient(anode::Gradient::Anode)  // Backprop | Anode | Adjoint
                     .checkpoints(0);                   // 0: keep the whole block
  anode::ODEBlock<RHSImpl> block(RHS(64), options);
  auto x = torch::randn({8, 64, 16, 16});
  torch::Tensor y = block->forward(x);  // z(t1); use it like any other layer
  // [snippet using-it]
  y.sum().backward();
  TORCH_CHECK(y.sizes() == x.sizes(), "block output ", y.sizes());
  TORCH_CHECK(block->parameters()[0].grad().defined(), "no parameter gradient");
}

void functional() {
  // [snippet functional]
  auto W = torch::randn({3, 3}, torch::requires_grad());
  auto z0 = torch::randn({4, 3}, torch::requires_grad());
  // Capture tensors by value: they are reference-counted handles, and the callable runs again
  // during backward, after this scope may be gone.
  auto f = [W](double /*t*/, const torch::Tensor& z) { return torch::tanh(z.matmul(W)); };
  auto z1 = anode::odeint(f, z0, anode::ODEBlockOptions().steps(8), /*params=*/{W});
  // [snippet functional]
  z1.sum().backward();
  TORCH_CHECK(W.grad().defined() && z0.grad().defined(), "no gradient for W or z0");
}

void module_kinds() {
  // [snippet module-kinds]
  // A Sequential or an AnyModule is called with the state alone, f(x).
  torch::nn::Sequential mlp(torch::nn::Linear(2, 32), torch::nn::Tanh(), torch::nn::Linear(32, 2));
  anode::ODEBlock<torch::nn::SequentialImpl> ode(mlp, anode::ODEBlockOptions().steps(4));
  torch::nn::Sequential model(ode, torch::nn::Linear(2, 1));  // an ordinary layer
  // Every ODE block of a model, whatever its right-hand side's type (anode::ODEBlockBase):
  for (auto& b : anode::ode_blocks(model)) b->options.method(anode::Method::RK4);
  auto y = model->forward(torch::randn({8, 2}));
  auto check = anode::check_gradients(ode, torch::randn({8, 2}));  // with the block's options
  // [snippet module-kinds]
  y.sum().backward();
  TORCH_CHECK(ode->options.method() == anode::Method::RK4, "ode_blocks did not configure it");
  TORCH_CHECK(ode->stats().accepted_steps == 4, "the block took ", ode->stats().accepted_steps,
              " steps");
  TORCH_CHECK(check.max_rel_error_backprop < 1e-5, "Anode against Backprop: ", check);
}

void trajectory() {
  // [snippet trajectory]
  torch::nn::Linear rhs_module(2, 2);         // any module, as for ODEBlock
  auto z0 = torch::randn({16, 2});            // [batch, dim]
  auto observed = torch::zeros({50, 16, 2});  // the data at the 50 times
  auto t = torch::linspace(0.0, 5.0, 50, torch::kDouble);
  auto stats = std::make_shared<anode::SolveStats>();
  auto options = anode::ODEBlockOptions().method(anode::Method::Dopri5).rtol(1e-6).atol(1e-8);
  auto traj = anode::odeint(rhs_module, z0, t, options, stats);  // [50, batch, dim]
  ((traj - observed).pow(2)).mean().backward();  // Anode: exact, one interval's graph at a time
  std::cout << *stats << "\n";                   // evaluations forward/backward, steps
  // [snippet trajectory]
  TORCH_CHECK(traj.sizes() == torch::IntArrayRef({50, 16, 2}), "trajectory ", traj.sizes());
  TORCH_CHECK(rhs_module->weight.grad().defined(), "no parameter gradient");
}

void gradcheck() {
  // [snippet gradcheck]
  torch::nn::Linear rhs_module(3, 3);
  rhs_module->to(torch::kDouble);  // finite differences need float64
  auto x = torch::randn({4, 3}, torch::kDouble);
  auto options = anode::ODEBlockOptions().method(anode::Method::RK4).steps(8);
  auto report = anode::check_gradients(rhs_module, x, options, /*finite_differences=*/true);
  std::cout << report << "\n";  // largest relative errors, and which gradient
  // [snippet gradcheck]
  TORCH_CHECK(report.max_rel_error_backprop < 1e-10, "Anode against Backprop: ", report);
}

void memory_plan() {
  torch::nn::Sequential model(torch::nn::Linear(4, 16));
  for (int i = 0; i < 3; ++i) {
    model->push_back(anode::ODEBlock<torch::nn::LinearImpl>(torch::nn::Linear(16, 16),
                                                            anode::ODEBlockOptions().steps(8)));
  }
  model->push_back(torch::nn::Linear(16, 1));
  const auto x = torch::randn({64, 4});
  // [snippet memory-plan]
  // One budget for a whole training step (bytes, on the CPU meter), shared by the blocks.
  auto plan = std::make_shared<anode::MemoryPlan>(int64_t{1} << 20);  // 1 MiB
  for (auto& block : anode::ode_blocks(model)) block->options.memory_plan(plan);
  for (int step = 0; step < 3; ++step) model->forward(x).pow(2).mean().backward();  // unchanged
  std::cout << *plan << "\n";  // per block: keep its graph, recompute, checkpoints; bytes measured
  // [snippet memory-plan]
  TORCH_CHECK(plan->last_step_peak() <= plan->budget_bytes(), "over budget: ", *plan);
}

}  // namespace

int main() {
  torch::manual_seed(0);
  memory();  // first: the meter is installed before the other snippets allocate
  using_it();
  module_kinds();
  functional();
  trajectory();
  gradcheck();
  memory_plan();
  std::cout << "readme snippets: all ran\n";
  return 0;
}
