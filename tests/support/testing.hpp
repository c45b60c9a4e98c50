#pragma once
// Shared test helpers: seeding fixture, error-message assertion, relative errors, and the
// right-hand-side modules the tests use.

#include <anode/anode.hpp>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <string>
#include <vector>

namespace anode_test {

/// Seeds every generator before each test, so a failure reproduces.
class Seeded : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

/// RAII: cuDNN picks deterministic, non-benchmarked kernels while it lives. Without it, two runs
/// of one CUDA convolution backward may differ by round-off, and a gradient that is zero in exact
/// arithmetic (a conv bias followed by BatchNorm) is then pure round-off noise that differs by
/// 100 % between two Backprop runs (seen on an H200): comparisons at 1e-10 need this.
class DeterministicCudnn {
 public:
  DeterministicCudnn()
      : benchmark_(at::globalContext().benchmarkCuDNN()),
        deterministic_(at::globalContext().deterministicCuDNN()) {
    at::globalContext().setBenchmarkCuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
  ~DeterministicCudnn() {
    at::globalContext().setBenchmarkCuDNN(benchmark_);
    at::globalContext().setDeterministicCuDNN(deterministic_);
  }
  DeterministicCudnn(const DeterministicCudnn&) = delete;
  DeterministicCudnn& operator=(const DeterministicCudnn&) = delete;

 private:
  bool benchmark_, deterministic_;
};

/// ||a - b|| / max(||b||, tiny), in double.
inline double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.defined() && b.defined(), "rel_err: undefined tensor");
  auto da = a.to(torch::kDouble), db = b.to(torch::kDouble);
  const double den = std::max(db.norm().item<double>(), 1e-300);
  return (da - db).norm().item<double>() / den;
}

/// The largest relative error over a list of gradients (both lists in the same order).
inline double max_rel_err(const std::vector<torch::Tensor>& a,
                          const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0.0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!a[i].defined() || !b[i].defined()) {
      ADD_FAILURE() << "gradient " << i << " is undefined in one of the two runs";
      continue;
    }
    m = std::max(m, rel_err(a[i], b[i]));
  }
  return m;
}

/// A user's autocast region for one device type, as torch.autocast opens one: autocast on in
/// `dtype`, nested, the weight cache cleared when the outermost region closes.
class ScopedAutocast {
 public:
  ScopedAutocast(c10::DeviceType type, c10::ScalarType dtype)
      : saved_(anode::detail::AutocastState::capture()) {
    auto s = saved_;
    (type == c10::DeviceType::CUDA ? s.cuda_enabled : s.cpu_enabled) = true;
    (type == c10::DeviceType::CUDA ? s.cuda_dtype : s.cpu_dtype) = dtype;
    s.apply();
    at::autocast::increment_nesting();
  }
  ~ScopedAutocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    saved_.apply();
  }
  ScopedAutocast(const ScopedAutocast&) = delete;
  ScopedAutocast& operator=(const ScopedAutocast&) = delete;

 private:
  anode::detail::AutocastState saved_;
};

/// Counts every evaluation of the right-hand side modules below.
inline std::atomic<int64_t>& rhs_evaluations() {
  static std::atomic<int64_t> n{0};
  return n;
}

/// f(z) = W2 tanh(W1 z + b1) + b2: smooth.
struct MLPImpl : torch::nn::Module {
  MLPImpl(int64_t dim, int64_t hidden, std::string activation = "tanh")
      : fc1(register_module("fc1", torch::nn::Linear(dim, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, dim))),
        act(std::move(activation)) {}
  torch::Tensor forward(torch::Tensor x) {
    ++rhs_evaluations();
    auto h = fc1(x);
    if (act == "tanh")
      h = torch::tanh(h);
    else if (act == "relu")
      h = torch::relu(h);
    else if (act == "leaky_relu")
      h = torch::leaky_relu(h, 0.1);
    return fc2(h);
  }
  torch::nn::Linear fc1, fc2;
  std::string act;
};
TORCH_MODULE(MLP);

/// f(t, z) = tanh(W z) * cos(t) + t * b: time-dependent.
struct TimeMLPImpl : torch::nn::Module {
  explicit TimeMLPImpl(int64_t dim)
      : fc(register_module("fc", torch::nn::Linear(dim, dim))),
        b(register_parameter("b", torch::randn({dim}))) {}
  torch::Tensor forward(double t, torch::Tensor x) {
    ++rhs_evaluations();
    return torch::tanh(fc(x)) * std::cos(t) + t * b;
  }
  torch::nn::Linear fc;
  torch::Tensor b;
};
TORCH_MODULE(TimeMLP);

/// conv-BN-ReLU(-dropout)-conv: the ResNet-style right-hand side, with BatchNorm and RNG.
struct ConvRHSImpl : torch::nn::Module {
  ConvRHSImpl(int64_t channels, double dropout = 0.0, bool batchnorm = true)
      : conv1(register_module(
            "conv1",
            torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)))),
        conv2(register_module(
            "conv2",
            torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)))),
        p(dropout),
        use_bn(batchnorm) {
    if (use_bn) bn = register_module("bn", torch::nn::BatchNorm2d(channels));
  }
  torch::Tensor forward(torch::Tensor x) {
    ++rhs_evaluations();
    auto h = conv1(x);
    if (use_bn) h = bn(h);
    h = torch::relu(h);
    if (p > 0) h = torch::dropout(h, p, is_training());
    return conv2(h);
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::BatchNorm2d bn{nullptr};
  double p;
  bool use_bn;
};
TORCH_MODULE(ConvRHS);

/// Gradients of `loss` with respect to `inputs`, via autograd::grad (undefined when unused).
inline std::vector<torch::Tensor> grads_of(const torch::Tensor& loss,
                                           const std::vector<torch::Tensor>& inputs) {
  return torch::autograd::grad({loss}, inputs, {}, false, false, true);
}

/// Whether two lists of tensors are equal element for element (same sizes, bit for bit).
inline bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

/// Gradients of sum(block(x)^2) with respect to x and the block's parameters, in that order.
template <typename Holder>
std::vector<torch::Tensor> input_and_parameter_grads(Holder& block, const torch::Tensor& x) {
  auto xin = x.clone().requires_grad_(true);
  std::vector<torch::Tensor> in{xin};
  for (const auto& p : block->parameters()) in.push_back(p);
  return grads_of(block->forward(xin).pow(2).sum(), in);
}

inline const std::vector<anode::Method>& all_methods() {
  static const std::vector<anode::Method> m{anode::Method::Euler, anode::Method::RK2,
                                            anode::Method::RK4};
  return m;
}

/// The options most tests vary: a fixed-step method, its step count and the gradient mode.
inline anode::ODEBlockOptions opts(anode::Method m, int64_t steps,
                                   anode::Gradient g = anode::Gradient::Anode) {
  return anode::ODEBlockOptions().method(m).steps(steps).gradient(g);
}

/// `o` with `steps` when its method has fixed steps, or the tolerances when it is adaptive: the
/// options raise when given one the method would ignore, so a test over both kinds sets each
/// through this.
inline anode::ODEBlockOptions with_accuracy(anode::ODEBlockOptions o, int64_t steps, double rtol,
                                            double atol) {
  if (o.adaptive()) return o.rtol(rtol).atol(atol);
  return o.steps(steps);
}

/// The message of the error `f` throws (c10::Error without its backtrace); empty when `f` does not
/// throw.
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// Success when `f` throws and its message contains every one of `parts` (e.g. an option's name
/// and its value). Use as `EXPECT_TRUE(throws_mentioning([&] { ... }, {"steps", "-3"}))`.
template <typename F>
::testing::AssertionResult throws_mentioning(F&& f, const std::vector<std::string>& parts) {
  bool threw = false;
  std::string message;
  try {
    f();
  } catch (const c10::Error& e) {
    threw = true;
    message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    threw = true;
    message = e.what();
  }
  if (!threw) return ::testing::AssertionFailure() << "expected an error, but nothing was thrown";
  for (const auto& part : parts) {
    if (message.find(part) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "error message \"" << message << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess() << message;
}

/// Whether two modules' parameters and buffers are equal to `tol` (relative), name by name.
inline ::testing::AssertionResult same_state(const torch::nn::Module& a, const torch::nn::Module& b,
                                             double tol = 0.0) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  auto ba = a.named_buffers(), bb = b.named_buffers();
  if (pa.size() != pb.size() || ba.size() != bb.size()) {
    return ::testing::AssertionFailure() << "different numbers of parameters or buffers";
  }
  for (const auto* list : {&pa, &ba}) {
    const auto& other = (list == &pa) ? pb : bb;
    for (const auto& item : *list) {
      const auto* match = other.find(item.key());
      if (match == nullptr) return ::testing::AssertionFailure() << item.key() << " missing";
      const auto& x = item.value();
      const auto& y = *match;
      if (x.sizes() != y.sizes() || x.scalar_type() != y.scalar_type()) {
        return ::testing::AssertionFailure() << item.key() << ": different shape or dtype";
      }
      const bool equal = tol == 0.0
                             ? torch::equal(x, y)
                             : (x.is_floating_point() ? rel_err(x, y) <= tol : torch::equal(x, y));
      if (!equal) {
        return ::testing::AssertionFailure()
               << item.key() << " differs"
               << (x.is_floating_point() ? " (rel. error " + std::to_string(rel_err(x, y)) + ")"
                                         : std::string());
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace anode_test
