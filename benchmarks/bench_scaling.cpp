// Memory and time of one training step over a grid of L (ODE blocks in sequence) and N_t (steps
// per block), for every gradient mode and method, on a convolutional RHS and on a small MLP RHS
// (2-64-2 tanh, batch 256: per-step overhead, not FLOPs, dominates).
//
//   bench_scaling [--quick | --full] [--rhs conv,mlp] [--modes backprop,anode,anode-k4,adjoint]
//                 [--threads 1] [--device cpu|cuda] [--csv out.csv]
//
// Prints CSV (to stdout or --csv), one row per (rhs, method, mode, L, N_t), and a readable table
// to stderr. Step time: median of the timed steps after one warm-up step. Peak memory: the
// highest tensor bytes live during a step above those live before it (anode::memory's counting
// CPU allocator, or the CUDA allocator's peak), and all heap bytes when run under the LD_PRELOAD
// heap counter (benchmarks/heapcount).

#include "harness/cli.hpp"
#include "harness/csv.hpp"
#include "harness/machine.hpp"
#include "harness/network.hpp"
#include "harness/stats.hpp"
#include "harness/table.hpp"

#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include <algorithm>
#include <iostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace ab = anode::bench;

namespace {

struct Point {
  std::string rhs;
  anode::Method method;
  int64_t L, nt;
};

struct Config {  // the quick grid's defaults (--full changes some, see main)
  int64_t warmup = 1, min_repeats = 2, max_repeats = 5;
  double budget_s = 3.0;
  torch::Device device = torch::kCPU;
  // conv RHS
  int64_t channels = 16, batch = 4, size = 16;
  // MLP RHS
  int64_t mlp_batch = 256, mlp_hidden = 64;
};

// The grid: the full product L x N_t for the main method; for the other methods the N_t sweep at
// the middle L (the quick grid also leaves out the largest N_t there), enough to compare methods
// without multiplying the run time.
std::vector<Point> make_grid(const std::string& rhs, const std::vector<std::string>& methods,
                             const std::vector<int64_t>& Ls, const std::vector<int64_t>& nts,
                             bool full) {
  std::vector<Point> out;
  const int64_t Lmid = Ls[Ls.size() / 2];
  const int64_t ntmax = *std::max_element(nts.begin(), nts.end());
  for (std::size_t m = 0; m < methods.size(); ++m) {
    const auto method = anode::method_from_string(methods[m]);
    for (int64_t L : Ls)
      for (int64_t nt : nts) {
        if (m == 0) {
          out.push_back({rhs, method, L, nt});
        } else if (L == Lmid && (full || nts.size() < 3 || nt < ntmax)) {
          out.push_back({rhs, method, L, nt});
        }
      }
  }
  return out;
}

template <class Func, class Make>
void run_point(const Point& p, const std::vector<ab::Mode>& modes, const Config& c, Make make_rhs,
               torch::IntArrayRef state_shape, ab::CsvWriter& csv, ab::Table& table) {
  for (const auto& mode : modes) {
    const auto opts =
        mode.apply(anode::ODEBlockOptions().method(p.method).steps(p.nt).t0(0.0).t1(1.0));
    std::string status = "ok";
    ab::Summary total, fwd, bwd;
    ab::RegionPeak peak;
    ab::StepSample last;
    int64_t params = 0;
    std::size_t repeats = 0;
    try {
      torch::manual_seed(0);
      auto net = std::make_shared<ab::ChainImpl<Func>>(make_rhs, p.L, opts);
      ab::det_init(*net, 1);
      net->to(c.device);
      for (const auto& t : net->parameters()) params += t.numel();
      auto x = ab::det_values(state_shape, 7, 1.0).to(c.device);
      auto target = ab::det_values(state_shape, 11, 1.0).to(c.device);
      torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1e-4));
      double warm = 0;
      for (int64_t i = 0; i < c.warmup; ++i) warm = ab::train_step(net, opt, x, target).total_s;
      const int n = ab::repeats_for(warm, static_cast<int>(c.min_repeats),
                                    static_cast<int>(c.max_repeats), c.budget_s);
      const auto timed =
          ab::time_steps([&] { return ab::train_step(net, opt, x, target); }, n, peak);
      last = timed.last;
      peak = timed.peak;
      repeats = timed.n;
      total = timed.total;
      fwd = timed.forward;
      bwd = timed.backward;
    } catch (const std::exception& e) {
      status = std::string("error: ") + e.what();
      status = status.substr(0, status.find('\n'));
    }
    int64_t state_numel = 1;
    for (auto s : state_shape) state_numel *= s;
    csv.row({p.rhs,
             anode::to_string(p.method),
             mode.name,
             mode.checkpoints,
             p.L,
             p.nt,
             state_shape[0],
             state_numel * 4,
             params,
             static_cast<int64_t>(at::get_num_threads()),
             c.warmup,
             static_cast<int64_t>(repeats),
             total.median,
             total.q25,
             total.q75,
             fwd.median,
             bwd.median,
             peak.tensor_bytes,
             peak.heap_bytes,
             last.evals_forward,
             last.evals_backward,
             status});
    table.add_row({p.rhs, anode::to_string(p.method), mode.name, std::to_string(p.L),
                   std::to_string(p.nt), ab::fixed(total.median, 1),
                   ab::human_bytes(peak.tensor_bytes), ab::human_bytes(peak.heap_bytes),
                   std::to_string(repeats), status});
    std::cerr << p.rhs << " " << anode::to_string(p.method) << " " << mode.name << " L=" << p.L
              << " N_t=" << p.nt << ": " << ab::fixed(total.median, 1) << " ms, "
              << ab::human_bytes(peak.tensor_bytes) << " (" << status << ")\n";
  }
}

}  // namespace

int main(int argc, char** argv) try {
  anode::memory::install_cpu_meter();
  ab::Cli cli("Step time and peak memory of each gradient mode over L blocks x N_t steps.",
              "bench_scaling");
  Config c;
  int64_t threads = 1;
  std::string device_name = "cpu", csv_path;
  std::vector<std::string> rhs_list{"conv", "mlp"};
  std::vector<std::string> mode_names{"backprop", "anode", "anode-k4", "adjoint"};
  std::vector<std::string> methods{"rk2", "euler", "rk4"};
  std::vector<int64_t> conv_L{1, 2, 4}, conv_nt{2, 4, 8, 16}, mlp_L{1}, mlp_nt{10, 100, 1000};
  cli.option("--threads", threads, "intra-op threads (0: LibTorch's default)");
  cli.option("--device", device_name, "cpu or cuda");
  cli.option("--warmup", c.warmup, "untimed steps first");
  cli.grid_option("--repeats", c.min_repeats, 5, "timed steps at least");
  cli.grid_option("--max-repeats", c.max_repeats, 20, "timed steps at most");
  cli.grid_option("--budget", c.budget_s, 20.0, "seconds per point that decide the repeats");
  cli.option("--rhs", rhs_list, "right-hand sides: conv, mlp");
  cli.option("--modes", mode_names, "gradient modes (anode-kN: N binomial checkpoints)");
  cli.option("--methods", methods, "methods; the first gets the full L x N_t grid");
  cli.grid_option("--channels", c.channels, 32, "conv RHS channels");
  cli.grid_option("--batch", c.batch, 8, "conv RHS batch");
  cli.grid_option("--size", c.size, 32, "conv RHS image side");
  cli.grid_option("--conv-L", conv_L, {1, 2, 4, 8});
  cli.grid_option("--conv-nt", conv_nt, {2, 4, 8, 16, 32, 64});
  cli.option("--mlp-batch", c.mlp_batch);
  cli.option("--mlp-hidden", c.mlp_hidden);
  cli.grid_option("--mlp-L", mlp_L, {1, 2, 4});
  cli.grid_option("--mlp-nt", mlp_nt, {10, 30, 100, 300, 1000});
  cli.option("--csv", csv_path, "write the CSV here instead of stdout");
  if (!cli.parse(argc, argv)) return 0;
  const bool full = cli.full;
  ab::set_threads(threads);
  c.device = torch::Device(device_name);

  std::vector<ab::Mode> modes;
  for (const auto& m : mode_names) modes.push_back(ab::Mode::parse(m));

  auto csv = ab::CsvWriter::to_path_or_stdout(csv_path, {"rhs",
                                                         "method",
                                                         "mode",
                                                         "checkpoints",
                                                         "L",
                                                         "nt",
                                                         "batch",
                                                         "state_bytes",
                                                         "params",
                                                         "threads",
                                                         "warmup",
                                                         "repeats",
                                                         "step_ms",
                                                         "step_ms_q25",
                                                         "step_ms_q75",
                                                         "fwd_ms",
                                                         "bwd_ms",
                                                         "peak_bytes",
                                                         "heap_peak_bytes",
                                                         "rhs_evals_fwd",
                                                         "rhs_evals_bwd",
                                                         "status"});
  ab::write_machine_info(csv);
  csv.meta("bench", "scaling");
  csv.meta("grid", full ? "full" : "quick");
  csv.meta("device", c.device.str());
  csv.meta("conv", "conv3x3-BN-ReLU-conv3x3-BN-ReLU, " + std::to_string(c.channels) +
                       " channels, batch " + std::to_string(c.batch) + ", " +
                       std::to_string(c.size) + "x" + std::to_string(c.size));
  csv.meta("mlp",
           "2-" + std::to_string(c.mlp_hidden) + "-2 tanh, batch " + std::to_string(c.mlp_batch));
  csv.meta("heap_meter", ab::HeapCounter::available() ? "LD_PRELOAD heapcount" : "absent");
  csv.write_header();

  ab::Table table(
      {"rhs", "method", "mode", "L", "N_t", "step ms", "peak tensors", "peak heap", "n", "status"});
  for (const auto& rhs : rhs_list) {
    if (rhs == "conv") {
      const auto o = ab::ConvRHSOptions().channels(c.channels).convs(2).batchnorm(true);
      auto make = [o] { return ab::ConvRHS(o); };
      for (const auto& p : make_grid("conv", methods, conv_L, conv_nt, full))
        run_point<ab::ConvRHSImpl>(p, modes, c, make, {c.batch, c.channels, c.size, c.size}, csv,
                                   table);
    } else if (rhs == "mlp") {
      const int64_t hidden = c.mlp_hidden;
      auto make = [hidden] { return ab::MlpRHS(2, hidden, ab::Act::Tanh); };
      for (const auto& p : make_grid("mlp", methods, mlp_L, mlp_nt, full))
        run_point<ab::MlpRHSImpl>(p, modes, c, make, {c.mlp_batch, 2}, csv, table);
    } else {
      throw std::invalid_argument("--rhs: unknown '" + rhs + "'; expected conv or mlp");
    }
  }
  std::cerr << '\n';
  table.print(std::cerr);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_scaling: " << e.what() << '\n';
  return 2;
}
