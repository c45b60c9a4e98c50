// anode-spiral: a neural ODE learns the dynamics of a 2-D spiral from sampled trajectory points,
// trained once with each gradient mode from the same initial weights. Prints the loss curve, the
// step time and the peak memory of one training step per mode.
//
// The data are generated here (the classic demo of Chen et al. 2018): dz/dt = (z^3) A with
// A = [[-0.1, 2], [-2, -0.1]], z(0) = (2, 0), sampled at 1000 times on [0, 25]. The model is
// dz/dt = W2 tanh(W1 z^3 + b1) + b2; each training batch integrates 16 random windows of 10
// samples with one trajectory call, anode::odeint(f, z0, t), whose loss is taken at every sample
// time. Writes a picture of the true and learned trajectories (SVG) for every mode.
//
// Usage: anode-spiral [--iters 1000] [--method rk4|dopri5|...] [--steps 2] [--rtol 1e-5]
//                     [--atol 1e-7] [--modes backprop,anode,adjoint] [--lr 0.01] [--threads 2]
//                     [--seed 0] [--svg spiral.svg]       (anode-spiral --help: the full list)

#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include "examples/cli_checks.hpp"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Args {
  int64_t iters = 1000;
  anode::Method method = anode::Method::RK4;
  int64_t steps = 2;  // solver steps per sample interval
  std::vector<anode::Gradient> modes{anode::Gradient::Backprop, anode::Gradient::Anode,
                                     anode::Gradient::Adjoint};
  double lr = 0.01;
  double rtol = 1e-5;  // adaptive methods
  double atol = 1e-7;
  int threads = 2;
  uint64_t seed = 0;
  std::string svg = "spiral.svg";
};

// Reads the command line into `a`; returns the exit code when the program should stop (--help,
// or a mistake, reported with the option and the value).
std::optional<int> parse(int argc, char** argv, Args& a) {
  using namespace cli_checks;
  CLI::App app("A neural ODE learns a 2-D spiral, once per gradient mode.", "anode-spiral");
  // The last of a repeated option wins; --help shows each option's default.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.option_defaults()->always_capture_default();
  app.add_option("--iters", a.iters, "training iterations")->transform(IntegerAtLeast(1));
  add_parsed(app, "--method", a.method, anode::method_from_string,
             "euler | rk2 | rk4 | bosh3 | dopri5 | tsit5", anode::to_string(a.method));
  app.add_option("--steps", a.steps, "fixed-step methods: steps per sample interval")
      ->transform(IntegerAtLeast(1));
  app.add_option("--rtol", a.rtol, "adaptive methods: relative tolerance")->check(NumberAbove(0.0));
  app.add_option("--atol", a.atol, "adaptive methods: absolute tolerance")->check(NumberAbove(0.0));
  std::vector<std::string> modes;
  app.add_option("--modes", modes, "gradient modes to train with, in order")
      ->type_name("LIST")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(ParsedBy(anode::gradient_from_string))
      ->default_str("backprop,anode,adjoint");
  app.add_option("--lr", a.lr, "Adam's learning rate (cosine decay)")->check(NumberAbove(0.0));
  app.add_option("--threads", a.threads, "intra-op threads")->transform(IntegerAtLeast(1));
  app.add_option("--seed", a.seed, "seed of the initial weights and the batches")
      ->transform(IntegerAtLeast(0));
  app.add_option("--svg", a.svg, "picture of the true and learned spirals ('' for none)")
      ->type_name("FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "anode-spiral: " << message(e) << "\n(anode-spiral --help lists the options)\n";
    return 2;
  }
  if (!modes.empty()) {
    a.modes.clear();
    for (const auto& m : modes) a.modes.push_back(anode::gradient_from_string(m));
  }
  return std::nullopt;
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

// Integrates from states z0 [B, 2] through the sample times `t` (relative: the dynamics are
// autonomous); returns the states at t[1..], [window, B, 2]. One trajectory call: the loss at
// every sample time backpropagates through it, each interval recomputed on its own.
torch::Tensor rollout(SpiralRHS& f, const torch::Tensor& z0, const torch::Tensor& t,
                      const anode::ODEBlockOptions& opts,
                      std::shared_ptr<anode::SolveStats> stats = nullptr) {
  return anode::odeint(f, z0, t, opts, std::move(stats)).slice(0, 1);
}

struct Outcome {
  std::vector<double> curve;  // test loss every `report` iterations
  double step_ms = 0;
  int64_t peak_bytes = 0;
  double final_loss = 0;
  anode::SolveStats last_step;  // evaluations and steps of the last training step
  torch::Tensor learned;        // the learned trajectory from z(0), [T, 2]
};

// --steps is for fixed-step methods, --rtol/--atol for adaptive ones: anode raises on an option the
// method would ignore.
anode::ODEBlockOptions solver_options(const Args& args) {
  auto options = anode::ODEBlockOptions().method(args.method);
  if (anode::tableau(args.method).adaptive()) return options.rtol(args.rtol).atol(args.atol);
  return options.steps(args.steps);
}

// The whole trajectory from z(0) with the current model, no graph: [T, 2] (z(0) first).
torch::Tensor predict(SpiralRHS& f, const Data& data, const anode::ODEBlockOptions& opts) {
  torch::NoGradGuard no_grad;
  return anode::odeint(f, data.z[0].unsqueeze(0), data.t, opts).squeeze(1);
}

// An SVG picture of the true spiral and each mode's learned one, to open in any browser.
void write_svg(const std::string& path, const Data& data,
               const std::vector<std::pair<std::string, torch::Tensor>>& learned) {
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) {
    std::fprintf(stderr, "anode-spiral: cannot write %s\n", path.c_str());
    return;
  }
  const double size = 520, margin = 20, span = 2.4;  // the spiral lies within [-2.4, 2.4]^2
  auto px = [&](double v) { return margin + (v + span) / (2 * span) * (size - 2 * margin); };
  auto py = [&](double v) { return size - margin - (v + span) / (2 * span) * (size - 2 * margin); };
  auto polyline = [&](const torch::Tensor& z, const char* colour, double width) {
    std::fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" points=\"",
                 colour, width);
    auto zc = z.to(torch::kDouble).contiguous();
    const double* p = zc.data_ptr<double>();
    for (int64_t i = 0; i < zc.size(0); ++i)
      std::fprintf(out, "%.2f,%.2f ", px(p[2 * i]), py(p[2 * i + 1]));
    std::fprintf(out, "\"/>\n");
  };
  std::fprintf(out,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
               size, size + 20 * (1 + static_cast<double>(learned.size())));
  polyline(data.z, "#222222", 3.0);
  const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  for (std::size_t i = 0; i < learned.size(); ++i) polyline(learned[i].second, colours[i % 4], 1.5);
  std::fprintf(out,
               "<text x=\"20\" y=\"%.0f\" font-family=\"sans-serif\" font-size=\"14\" "
               "fill=\"#222222\">true spiral</text>\n",
               size + 14);
  for (std::size_t i = 0; i < learned.size(); ++i)
    std::fprintf(out,
                 "<text x=\"20\" y=\"%.0f\" font-family=\"sans-serif\" font-size=\"14\" "
                 "fill=\"%s\">learned, %s</text>\n",
                 size + 14 + 20 * static_cast<double>(i + 1), colours[i % 4],
                 learned[i].first.c_str());
  std::fprintf(out, "</svg>\n");
  std::fclose(out);
}

Outcome train(const Args& args, anode::Gradient mode, const Data& data) {
  torch::manual_seed(args.seed);
  SpiralRHS f;
  torch::optim::Adam opt(f->parameters(), torch::optim::AdamOptions(args.lr));
  const auto opts = solver_options(args).gradient(mode);
  const int64_t samples = data.t.size(0), batch = 16, window = 10;
  const int64_t report = std::max<int64_t>(1, args.iters / 8);
  const auto window_t = data.t.slice(0, 0, window + 1);  // 0, dt, ..., window * dt

  // Test loss: the whole trajectory from z(0).
  auto evaluate = [&] { return (predict(f, data, opts) - data.z).abs().mean().item<double>(); };

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
    auto stats = std::make_shared<anode::SolveStats>();
    const auto t0 = std::chrono::steady_clock::now();
    // Cosine learning-rate decay: the long rollout is sensitive to the last steps' noise.
    const double lr =
        0.5 * args.lr *
        (1.0 + std::cos(M_PI * static_cast<double>(it - 1) / static_cast<double>(args.iters)));
    for (auto& group : opt.param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    opt.zero_grad();
    auto pred = rollout(f, data.z.index({starts}), window_t, opts, stats);
    auto loss = (pred - target).abs().mean();
    loss.backward();
    opt.step();
    total_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (measure) {
      out.peak_bytes = scope->peak_bytes();
      out.last_step = *stats;
    }
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
  out.learned = predict(f, data, opts);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  anode::memory::install_cpu_meter();
  Args args;
  if (const auto exit_code = parse(argc, argv, args)) return *exit_code;
  torch::set_num_threads(args.threads);
  const std::string solver =
      anode::tableau(args.method).adaptive()
          ? "rtol " + std::to_string(args.rtol) + ", atol " + std::to_string(args.atol)
          : std::to_string(args.steps) + " steps per sample interval";
  std::printf("anode %s | LibTorch %d.%d | spiral: %s, %s, %lld iterations\n", ANODE_VERSION,
              TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, anode::to_string(args.method),
              solver.c_str(), static_cast<long long>(args.iters));
  const Data data = make_spiral();
  std::printf("data: %lld points of the true spiral on t in [0, 25]\n",
              static_cast<long long>(data.t.size(0)));

  std::vector<std::pair<anode::Gradient, Outcome>> results;
  for (auto mode : args.modes) results.emplace_back(mode, train(args, mode, data));

  std::printf("\n%-10s %16s %14s %18s %20s\n", "gradient", "trajectory loss", "step time",
              "peak step memory", "RHS evals fwd/bwd");
  std::vector<std::pair<std::string, torch::Tensor>> learned;
  for (const auto& [mode, r] : results) {
    std::printf("%-10s %16.4f %11.2f ms %15.1f KiB %13lld / %lld\n", anode::to_string(mode),
                r.final_loss, r.step_ms, static_cast<double>(r.peak_bytes) / 1024.0,
                static_cast<long long>(r.last_step.forward_evaluations),
                static_cast<long long>(r.last_step.backward_evaluations));
    learned.emplace_back(
        std::string(anode::to_string(mode)) + " (" + anode::to_string(args.method) + ")",
        r.learned);
  }
  const double initial = [&] {
    torch::manual_seed(args.seed);
    SpiralRHS f;
    return (predict(f, data, solver_options(args)) - data.z).abs().mean().item<double>();
  }();
  std::printf("(untrained model's trajectory loss: %.4f)\n", initial);
  if (!args.svg.empty()) {
    write_svg(args.svg, data, learned);
    std::printf("picture of the true and learned spirals: %s\n", args.svg.c_str());
  }
  return 0;
}
