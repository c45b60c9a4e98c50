// The overhead-bound regime, the C++ side of benchmarks/python/mlp_peers.py: one training step of
// a 2-64-2 tanh MLP right-hand side, batch 256, on [0, 1] (zero_grad, forward solve, loss
// 0.5·mean((z(1) − target)²), backward, SGD update), with the same deterministic weights and data
// as the Python side. Small FLOPs and many steps: what is measured is the per-step cost of the
// integrator, its bookkeeping and autograd, which is where neural-ODE users on time series live.
//
//   bench_mlp [--modes backprop,anode,anode-k8,adjoint] [--methods rk2,dopri5] [--steps 100]
//             [--rtol 1e-5] [--atol 1e-9] [--threads 1] [--warmup 5] [--repeats 30]
//
// Prints one JSON object per (method, mode): median step time and quartiles, and the function
// evaluations and steps of one step's forward and backward (anode::SolveStats).
// scripts/bench_mlp.py runs it side by side with the Python side and writes the report.

#include "harness/cli.hpp"
#include "harness/models.hpp"
#include "harness/stats.hpp"

#include <torch/torch.h>
#include <anode/anode.hpp>

#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace ab = anode::bench;

namespace {

struct Mode {
  anode::Gradient gradient;
  int64_t checkpoints;
  bool forward_only = false;  // the graph-free solve alone: Anode's forward, the floor it adds
  bool keep_latest = false;   // keep_latest_graph: the lone solve's backward recomputes nothing
};

Mode mode_from_string(const std::string& s) {
  if (s == "backprop") return {anode::Gradient::Backprop, 0};
  if (s == "anode") return {anode::Gradient::Anode, 0};
  if (s == "adjoint") return {anode::Gradient::Adjoint, 0};
  if (s == "forward") return {anode::Gradient::Backprop, 0, true};
  if (s == "anode-latest") return {anode::Gradient::Anode, 0, false, true};
  if (s.rfind("anode-k", 0) == 0) return {anode::Gradient::Anode, std::stoll(s.substr(7))};
  throw std::invalid_argument("--modes: unknown mode '" + s +
                              "'; expected backprop, anode, anode-latest, anode-kK, adjoint or "
                              "forward");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    ab::Cli cli("One training step of a small MLP ODE, for the side by side with torchdiffeq.",
                "bench_mlp");
    std::vector<std::string> modes{"backprop", "anode", "adjoint"}, methods{"rk2", "dopri5"};
    int64_t steps = 100, batch = 256, hidden = 64, threads = 1, warmup = 5, repeats = 30;
    double rtol = 1e-5, atol = 1e-9;
    cli.option("--modes", modes,
               "backprop, anode, anode-latest (keep_latest_graph), anode-kK (K checkpoints), "
               "adjoint, forward (the graph-free solve alone, no backward)");
    cli.option("--methods", methods, "rk2 (fixed), dopri5");
    cli.option("--steps", steps, "fixed steps on [0, 1]");
    cli.option("--rtol", rtol, "dopri5 relative tolerance");
    cli.option("--atol", atol, "dopri5 absolute tolerance");
    cli.option("--batch", batch, "batch size");
    cli.option("--hidden", hidden, "hidden width");
    cli.option("--threads", threads, "intra-op threads (0: default)");
    cli.option("--warmup", warmup, "untimed steps");
    cli.option("--repeats", repeats, "timed steps");
    if (!cli.parse(argc, argv)) return 0;
    ab::TimingOptions timing;
    timing.warmup = static_cast<int>(warmup);
    timing.repeats = static_cast<int>(repeats);
    timing.max_repeats = timing.repeats;
    if (threads > 0) torch::set_num_threads(static_cast<int>(threads));

    for (const auto& method : methods) {
      for (const auto& mode_name : modes) {
        const Mode mode = mode_from_string(mode_name);
        torch::manual_seed(0);
        ab::MlpRHS f(2, hidden, ab::Act::Tanh);
        ab::det_init(*f, 1);
        const auto z0 = ab::det_values({batch, 2}, 7, 1.0);
        const auto target = ab::det_values({batch, 2}, 11, 1.0);
        torch::optim::SGD opt(f->parameters(), torch::optim::SGDOptions(1e-3));
        auto options = anode::ODEBlockOptions()
                           .gradient(mode.gradient)
                           .checkpoints(mode.checkpoints)
                           .keep_latest_graph(mode.keep_latest);
        if (method == "rk2") {
          options.method(anode::Method::RK2).steps(steps);
        } else if (method == "dopri5") {
          options.method(anode::Method::Dopri5).rtol(rtol).atol(atol);
        } else {
          throw std::invalid_argument("--methods: unknown method '" + method +
                                      "'; expected rk2 or dopri5");
        }
        auto stats = std::make_shared<anode::SolveStats>();
        double loss_value = 0;
        auto step = [&] {
          if (mode.forward_only) {
            torch::NoGradGuard no_grad;
            loss_value = (0.5 * (anode::odeint(f, z0, options, stats) - target).pow(2).mean())
                             .item<double>();
            return;
          }
          opt.zero_grad();
          auto z1 = anode::odeint(f, z0, options, stats);
          auto loss = 0.5 * (z1 - target).pow(2).mean();
          loss.backward();
          opt.step();
          loss_value = loss.item<double>();
        };
        const auto seconds = ab::time_runs(step, timing);
        std::vector<double> ms;
        for (double s : seconds) ms.push_back(1e3 * s);
        std::ostringstream os;
        os << std::setprecision(10) << "{\"impl\": \"anode-" << mode_name << "\", \"method\": \""
           << method << "\", \"threads\": " << torch::get_num_threads() << ", \"batch\": " << batch
           << ", \"steps\": " << steps << ", \"rtol\": " << rtol << ", \"atol\": " << atol
           << ", \"status\": \"ok\", \"step_ms\": " << ab::quantile(ms, 0.5)
           << ", \"step_ms_q25\": " << ab::quantile(ms, 0.25)
           << ", \"step_ms_q75\": " << ab::quantile(ms, 0.75)
           << ", \"rhs_evals_fwd\": " << stats->forward_evaluations
           << ", \"rhs_evals_bwd\": " << stats->backward_evaluations
           << ", \"accepted_steps\": " << stats->accepted_steps
           << ", \"rejected_steps\": " << stats->rejected_steps << ", \"loss\": " << loss_value
           << ", \"repeats\": " << ms.size() << "}";
        std::cout << os.str() << std::endl;
      }
    }
  } catch (const c10::Error& e) {
    std::cerr << "bench_mlp: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bench_mlp: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
