#pragma once
// Test helpers of the trajectory and adaptive-solver tests: a damped rotation with a closed-form
// solution, a small time-dependent MLP field, output times, a trajectory loss and its gradients.

#include "support/testing.hpp"

#include <cmath>
#include <initializer_list>
#include <vector>

namespace anode_test {

constexpr auto kD = torch::kDouble;

/// A method and a gradient mode: the step count (fixed-step methods) or the tolerances (adaptive
/// ones) are set by each test.
inline anode::ODEBlockOptions solver(anode::Method m, anode::Gradient g = anode::Gradient::Anode) {
  return anode::ODEBlockOptions().method(m).gradient(g);
}

// Heun-Euler 2(1): an embedded pair that is not FSAL, so every step evaluates f at its start.
inline anode::ButcherTableau heun_euler() {
  return anode::ButcherTableau{"Heun-Euler", 2, {{}, {1.0}}, {0.5, 0.5}, {0.0, 1.0}, {1.0, 0.0}, 1};
}

// z' = A z with A = [[-0.1, 1], [-1, -0.1]]: a damped rotation with a closed-form solution.
inline torch::Tensor rotation_matrix() {
  return torch::tensor({{-0.1, 1.0}, {-1.0, -0.1}}, kD);
}
inline torch::Tensor rotation_exact(const torch::Tensor& z0, double t) {
  const double e = std::exp(-0.1 * t), c = std::cos(t), s = std::sin(t);
  auto R = torch::tensor({{e * c, e * s}, {-e * s, e * c}}, kD);
  return z0.matmul(R.t());
}

// A small tanh MLP RHS in float64, with a time input.
struct FieldImpl : torch::nn::Module {
  FieldImpl()
      : fc1(register_module("fc1", torch::nn::Linear(3, 16))),
        fc2(register_module("fc2", torch::nn::Linear(16, 2))) {
    to(kD);
  }
  torch::Tensor forward(double t, torch::Tensor z) {
    auto tz = torch::cat({z, torch::full({z.size(0), 1}, t, z.options())}, 1);
    return fc2(torch::tanh(fc1(tz)));
  }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Field);

inline Field field(uint64_t seed) {
  torch::manual_seed(seed);
  return Field();
}

inline torch::Tensor times(std::initializer_list<double> ts) {
  return torch::tensor(std::vector<double>(ts), kD);
}

// A trajectory loss with a different weight at every output time.
inline torch::Tensor trajectory_loss(const torch::Tensor& out) {
  auto w = torch::arange(1, out.size(0) + 1, out.options()).view({-1, 1, 1});
  return (out * out * w).sum();
}

inline std::vector<torch::Tensor> all_grads(Field& f, const torch::Tensor& z0,
                                            const torch::Tensor& t,
                                            const anode::ODEBlockOptions& o) {
  auto z = z0.clone().requires_grad_(true);
  std::vector<torch::Tensor> inputs = f->parameters();
  inputs.push_back(z);
  return grads_of(trajectory_loss(anode::odeint(f, z, t, o)), inputs);
}

}  // namespace anode_test
