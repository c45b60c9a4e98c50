// anode-spiral: a neural ODE learns the dynamics of a 2-D spiral from sampled trajectory points,
// trained once with each gradient mode from the same initial weights. Prints the loss curve, the
// step time and the peak memory of one training step per mode.
//
// The data are generated here (the classic demo of Chen et al. 2018): dz/dt = (z^3) A with
// A = [[-0.1, 2], [-2, -0.1]], z(0) = (2, 0), sampled at 1000 times on [0, 25]. The model is
// dz/dt = W2 tanh(W1 z^3 + b1) + b2; each training batch integrates 16 random windows of 10
// samples, one anode::odeint call per interval between samples.
//
// Usage: anode-spiral [--iters 300] [--method rk4] [--steps 2] [--modes backprop,anode,adjoint]
//                     [--lr 0.01] [--threads 2] [--seed 0]

#include <torch/torch.h>
#include <anode/anode.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Args {
  int64_t iters = 300;
  anode::Method method = anode::Method::RK4;
  int64_t steps = 2;  // solver steps per sample interval
  std::vector<anode::Gradient> modes{anode::Gradient::Backprop, anode::Gradient::Anode,
                                     anode::Gradient::Adjoint};
  double lr = 0.01;
  int threads = 2;
  uint64_t seed = 0;
};

[[noreturn]] void usage(const std::string& error) {
  std::cerr << "anode-spiral: " << error << "\n"
            << "usage: anode-spiral [--iters N] [--method euler|rk2|rk4] [--steps N]\n"
            << "                    [--modes backprop,anode,adjoint] [--lr X] [--threads N] "
               "[--seed N]\n";
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage(std::string("option ") + argv[i] + " needs a value");
    return argv[++i];
  };
  auto integer = [&](int& i, int64_t min) {
    const std::string name = argv[i], v = value(i);
    try {
      std::size_t used = 0;
      const long long n = std::stoll(v, &used);
      if (used != v.size() || n < min) throw std::invalid_argument(v);
      return static_cast<int64_t>(n);
    } catch (const std::exception&) {
      usage("option " + name + " needs an integer >= " + std::to_string(min) + ", got '" + v + "'");
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string opt = argv[i];
    try {
      if (opt == "--iters")
        a.iters = integer(i, 1);
      else if (opt == "--steps")
        a.steps = integer(i, 1);
      else if (opt == "--threads")
        a.threads = static_cast<int>(integer(i, 1));
      else if (opt == "--seed")
        a.seed = static_cast<uint64_t>(integer(i, 0));
      else if (opt == "--method")
        a.method = anode::method_from_string(value(i));
      else if (opt == "--lr") {
        const std::string v = value(i);
        a.lr = std::stod(v);
        if (!(a.lr > 0)) usage("option --lr needs a positive number, got '" + v + "'");
      } else if (opt == "--modes") {
        a.modes.clear();
        std::stringstream ss(value(i));
        for (std::string m; std::getline(ss, m, ',');)
          a.modes.push_back(anode::gradient_from_string(m));
        if (a.modes.empty()) usage("option --modes needs at least one mode");
      } else if (opt == "--help" || opt == "-h") {
        usage("help");
      } else {
        usage("unknown option '" + opt + "'");
      }
    } catch (const c10::Error& e) {
      usage("option " + opt + ": " + e.what_without_backtrace());
    } catch (const std::invalid_argument&) {
      usage("option " + opt + " has an invalid value");
    }
  }
  return a;
}

// dz/dt = W2 tanh(W1 z^3 + b1) + b2.
struct SpiralRHSImpl : torch::nn::Module {
  SpiralRHSImpl()
      : fc1(register_module("fc1", torch::nn::Linear(2, 50))),
        fc2(register_module("fc2", torch::nn::Linear(50, 2))) {}
  torch::Tensor forward(torch::Tensor z) { return fc2(torch::tanh(fc1(z.pow(3)))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(SpiralRHS);

struct Data {
  torch::Tensor t;  // [T]
  torch::Tensor z;  // [T, 2]
};

Data make_spiral(int64_t samples = 1000, double t_end = 25.0) {
  torch::NoGradGuard no_grad;
  const auto A = torch::tensor({{-0.1, 2.0}, {-2.0, -0.1}}, torch::kDouble);
  auto t = torch::linspace(0.0, t_end, samples, torch::kDouble);
  auto z = torch::empty({samples, 2}, torch::kDouble);
  auto zi = torch::tensor({{2.0, 0.0}}, torch::kDouble);
  z[0] = zi[0];
  // The ground truth: a fine RK4 solve of the true dynamics between samples.
  auto truth = [&](double, const torch::Tensor& x) { return x.pow(3).matmul(A); };
  const double dt = t_end / static_cast<double>(samples - 1);
  for (int64_t i = 1; i < samples; ++i) {
    auto opts = anode::ODEBlockOptions().method(anode::Method::RK4).steps(10).t0(0.0).t1(dt);
    zi = anode::odeint(truth, zi, opts);
    z[i] = zi[0];
  }
  return {t.to(torch::kFloat), z.to(torch::kFloat)};
}

// Integrates from states z0 [B, 2] over `window` sample intervals; returns [window, B, 2].
torch::Tensor rollout(SpiralRHS& f, torch::Tensor z, double dt, int64_t window,
                      const anode::ODEBlockOptions& base) {
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<std::size_t>(window));
  auto opts = base;
  opts.t0(0.0).t1(dt);  // autonomous: every interval looks the same
  for (int64_t j = 0; j < window; ++j) {
    z = anode::odeint(f, z, opts);
    out.push_back(z);
  }
  return torch::stack(out);
}

struct Outcome {
  std::vector<double> curve;  // test loss every `report` iterations
  double step_ms = 0;
  int64_t peak_bytes = 0;
  double final_loss = 0;
};

Outcome train(const Args& args, anode::Gradient mode, const Data& data) {
  torch::manual_seed(args.seed);
  SpiralRHS f;
  torch::optim::Adam opt(f->parameters(), torch::optim::AdamOptions(args.lr));
  const auto base = anode::ODEBlockOptions().method(args.method).steps(args.steps).gradient(mode);
  const int64_t samples = data.t.size(0), batch = 16, window = 10;
  const double dt = (data.t[1] - data.t[0]).item<double>();
  const int64_t report = std::max<int64_t>(1, args.iters / 8);

  // Test loss: the whole trajectory from z(0), no graph.
  auto evaluate = [&] {
    torch::NoGradGuard no_grad;
    auto pred = rollout(f, data.z[0].unsqueeze(0), dt, samples - 1, base).squeeze(1);
    return (pred - data.z.slice(0, 1)).abs().mean().item<double>();
  };

  Outcome out;
  double total_ms = 0;
  auto gen = torch::make_generator<torch::CPUGeneratorImpl>(args.seed + 1);
  for (int64_t it = 1; it <= args.iters; ++it) {
    auto starts = torch::randint(0, samples - window, {batch}, gen, torch::kLong);
    auto idx = starts.unsqueeze(0) + torch::arange(1, window + 1).unsqueeze(1);  // [window, B]
    auto target = data.z.index({idx});                                           // [window, B, 2]
    const bool measure = it == args.iters;  // peak of the last step (meter reset just before)
    std::unique_ptr<anode::memory::PeakScope> scope;
    if (measure) scope = std::make_unique<anode::memory::PeakScope>();
    const auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    auto pred = rollout(f, data.z.index({starts}), dt, window, base);
    auto loss = (pred - target).abs().mean();
    loss.backward();
    opt.step();
    total_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (measure) out.peak_bytes = scope->peak_bytes();
    if (it % report == 0 || it == args.iters) {
      const double test = evaluate();
      out.curve.push_back(test);
      std::printf("  [%-8s] iter %5lld  batch loss %.4f  trajectory loss %.4f\n",
                  anode::to_string(mode), static_cast<long long>(it), loss.item<double>(), test);
      std::fflush(stdout);
    }
  }
  out.step_ms = total_ms / static_cast<double>(args.iters);
  out.final_loss = out.curve.back();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  anode::memory::install_cpu_meter();
  const Args args = parse(argc, argv);
  torch::set_num_threads(args.threads);
  std::printf("anode %s | LibTorch %d.%d | spiral: %s, %lld steps per interval, %lld iterations\n",
              ANODE_VERSION, TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
              anode::to_string(args.method), static_cast<long long>(args.steps),
              static_cast<long long>(args.iters));
  const Data data = make_spiral();
  std::printf("data: %lld points of the true spiral on t in [0, 25]\n",
              static_cast<long long>(data.t.size(0)));

  std::vector<std::pair<anode::Gradient, Outcome>> results;
  for (auto mode : args.modes) results.emplace_back(mode, train(args, mode, data));

  std::printf("\n%-10s %16s %14s %18s\n", "gradient", "trajectory loss", "step time",
              "peak step memory");
  for (const auto& [mode, r] : results) {
    std::printf("%-10s %16.4f %11.2f ms %15.1f KiB\n", anode::to_string(mode), r.final_loss,
                r.step_ms, static_cast<double>(r.peak_bytes) / 1024.0);
  }
  const double initial = [&] {
    torch::manual_seed(args.seed);
    SpiralRHS f;
    torch::NoGradGuard no_grad;
    auto base = anode::ODEBlockOptions().method(args.method).steps(args.steps);
    const double dt = (data.t[1] - data.t[0]).item<double>();
    auto pred = rollout(f, data.z[0].unsqueeze(0), dt, data.t.size(0) - 1, base).squeeze(1);
    return (pred - data.z.slice(0, 1)).abs().mean().item<double>();
  }();
  std::printf("(untrained model's trajectory loss: %.4f)\n", initial);
  return 0;
}
