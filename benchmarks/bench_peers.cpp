// The C++ side of the side-by-side with the Python peers (benchmarks/python/peers.py): the same
// network (L ODE blocks, each RHS conv3x3-BN-ReLU-conv3x3-BN-ReLU as in the official ANODE
// code's ResNet, 32 channels), the same deterministic weights and data, the same method, loss and
// SGD step, the same timing rule and, under the LD_PRELOAD heap counter, the same memory meter.
//
//   bench_peers [--nt 2,8,32] [--modes backprop,anode,anode-k4,adjoint] [--dtype float32]
//               [--grad-dir DIR] [--threads 1] [--csv out.csv]
//
// One CSV row per (mode, N_t) with the columns peers.py writes. With --grad-dir, the gradients of
// the first step (at the initial weights: [dL/dx, dL/dtheta...], float64, raw little-endian) are
// written to DIR/anode-cpp_<mode>_nt<N>_<dtype>.f64 for scripts/report.py to compare.
// --no-time runs only that first step (for the float64 reference). --profile writes the LibTorch
// profiler's trace of one extra step (where the time goes).

#include "harness/cli.hpp"
#include "harness/csv.hpp"
#include "harness/machine.hpp"
#include "harness/network.hpp"
#include "harness/stats.hpp"
#include "harness/table.hpp"

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace ab = anode::bench;

namespace {

void write_f64(const std::string& path, const torch::Tensor& t) {
  // To the host first: a CUDA tensor's data pointer is device memory, which ofstream cannot read
  // (it wrote an empty file, silently, before this was found on the GPU).
  auto c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write '" + path + "'");
  f.write(reinterpret_cast<const char*>(c.data_ptr<double>()),
          static_cast<std::streamsize>(c.numel() * sizeof(double)));
  if (!f.flush()) throw std::runtime_error("writing '" + path + "' failed");
}

}  // namespace

int main(int argc, char** argv) try {
  anode::memory::install_cpu_meter();
  ab::Cli cli("anode's gradient modes on the peer network (the torchdiffeq comparison).",
              "bench_peers");
  int64_t threads = 1, L = 4, channels = 32, batch = 8, size = 32, warmup = 1;
  int64_t min_repeats = 1, max_repeats = 3;
  double budget = 8.0;
  bool no_time = false;
  std::vector<int64_t> nts{2, 8, 32};
  std::vector<std::string> mode_names{"backprop", "anode", "anode-k4", "adjoint"};
  std::string dtype_name = "float32", method_name = "rk2", grad_dir, profile, csv_path;
  std::string device_name = "cpu";
  cli.option("--threads", threads, "intra-op threads (0: LibTorch's default)");
  cli.option("--nt", nts, "steps per block");
  cli.option("--modes", mode_names, "gradient modes (anode-kN: N binomial checkpoints)");
  cli.option("--dtype", dtype_name, "float32 or float64")
      ->check(CLI::IsMember({"float32", "float64"}));
  cli.option("--method", method_name);
  cli.option("--L", L, "ODE blocks");
  cli.option("--channels", channels);
  cli.option("--batch", batch);
  cli.option("--size", size);
  cli.option("--warmup", warmup, "untimed steps first");
  cli.grid_option("--repeats", min_repeats, 5, "timed steps at least");
  cli.grid_option("--max-repeats", max_repeats, 20, "timed steps at most");
  cli.grid_option("--budget", budget, 60.0, "seconds per point for the repeats");
  cli.app.add_flag("--no-time", no_time, "only the first step, for its gradient");
  cli.option("--grad-dir", grad_dir, "write first-step gradients here");
  cli.option("--profile", profile,
             "after timing, profile one more step into this chrome-trace JSON ('%m' = mode)");
  cli.option("--csv", csv_path, "write the CSV here instead of stdout");
  cli.option("--device", device_name);
  if (!cli.parse(argc, argv)) return 0;
  ab::set_threads(threads);
  const auto method = anode::method_from_string(method_name);
  const torch::Device device(device_name);
  const auto dtype = dtype_name == "float64" ? torch::kFloat64
                     : dtype_name == "float32"
                         ? torch::kFloat32
                         : throw std::invalid_argument("--dtype: float32 or float64");

  auto csv = ab::CsvWriter::to_path_or_stdout(csv_path, {"impl",
                                                         "mode",
                                                         "method",
                                                         "L",
                                                         "nt",
                                                         "dtype",
                                                         "threads",
                                                         "warmup",
                                                         "repeats",
                                                         "step_ms",
                                                         "step_ms_q25",
                                                         "step_ms_q75",
                                                         "fwd_ms",
                                                         "bwd_ms",
                                                         "tensor_peak_bytes",
                                                         "heap_peak_bytes",
                                                         "max_rss_bytes",
                                                         "rhs_evals_fwd",
                                                         "rhs_evals_bwd",
                                                         "grad_file",
                                                         "status"});
  ab::write_machine_info(csv);
  csv.meta("bench", "peers");
  csv.meta("network", std::to_string(L) + " ODE blocks, RHS conv3x3-BN-ReLU-conv3x3-BN-ReLU, " +
                          std::to_string(channels) + " channels, batch " + std::to_string(batch) +
                          ", " + std::to_string(size) + "x" + std::to_string(size));
  csv.meta("heap_meter", ab::HeapCounter::available() ? "LD_PRELOAD heapcount" : "absent");
  csv.write_header();

  const auto o =
      ab::ConvRHSOptions().channels(channels).convs(2).batchnorm(true).act(ab::Act::ReLU);
  auto make = [o] { return ab::ConvRHS(o); };
  const std::vector<int64_t> shape = {batch, channels, size, size};
  ab::Table table({"mode", "N_t", "step ms", "fwd ms", "bwd ms", "peak tensors", "peak heap", "n"});

  for (int64_t nt : nts) {
    for (const auto& name : mode_names) {
      const auto mode = ab::Mode::parse(name);
      const auto opts = mode.apply(anode::ODEBlockOptions().method(method).steps(nt));
      std::string status = "ok", grad_file;
      ab::Summary total, fwd, bwd;
      ab::RegionPeak peak;
      ab::StepSample s;
      std::size_t n = 0;
      int64_t rss = -1;
      try {
        auto net = std::make_shared<ab::ChainImpl<ab::ConvRHSImpl>>(make, L, opts);
        ab::det_init(*net, 1);  // float32 weights first, then cast: every dtype has the same ones
        net->to(device, dtype);
        auto x = ab::det_values(shape, 7, 1.0).to(device, dtype).requires_grad_(true);
        auto target = ab::det_values(shape, 11, 1.0).to(device, dtype);
        torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1e-4));
        auto step = [&] {
          x.mutable_grad() = torch::Tensor();
          return ab::train_step(net, opt, x, target);
        };
        s = step();  // the first step: its gradient is the one compared
        if (!grad_dir.empty()) {
          grad_file = grad_dir + "/anode-cpp_" + name + "_nt" + std::to_string(nt) + "_" +
                      dtype_name + ".f64";
          write_f64(grad_file, torch::cat({x.grad().detach().to(torch::kFloat64).reshape(-1),
                                           ab::flat_parameter_grads(net->parameters())}));
        }
        if (!no_time) {
          double warm = s.total_s;
          for (int64_t i = 1; i < warmup; ++i) warm = step().total_s;
          const int reps = ab::repeats_for(warm, static_cast<int>(min_repeats),
                                           static_cast<int>(max_repeats), budget);
          const auto timed = ab::time_steps(step, reps, peak);
          s = timed.last;
          peak = timed.peak;
          n = timed.n;
          total = timed.total;
          fwd = timed.forward;
          bwd = timed.backward;
        } else {
          peak = s.peak;
        }
        rss =
            ab::max_rss_bytes();  // before the profiled step: the profiler's own memory is not ours
        if (!profile.empty()) {
          std::string path = profile;
          const auto at = path.find("%m");
          if (at != std::string::npos) path.replace(at, 2, name);
          torch::autograd::profiler::RecordProfile guard(path);
          step();
        }
      } catch (const std::exception& e) {
        status = std::string("error: ") + e.what();
        status = status.substr(0, status.find('\n'));
      }
      csv.row({"anode-cpp",
               name,
               anode::to_string(method),
               L,
               nt,
               dtype_name,
               static_cast<int64_t>(at::get_num_threads()),
               warmup,
               static_cast<int64_t>(n),
               total.median,
               total.q25,
               total.q75,
               fwd.median,
               bwd.median,
               peak.tensor_bytes,
               peak.heap_bytes,
               rss,
               s.evals_forward,
               s.evals_backward,
               grad_file,
               status});
      table.add_row({name, std::to_string(nt), ab::fixed(total.median, 1), ab::fixed(fwd.median, 1),
                     ab::fixed(bwd.median, 1), ab::human_bytes(peak.tensor_bytes),
                     ab::human_bytes(peak.heap_bytes), std::to_string(n)});
      std::cerr << "anode-cpp " << name << " N_t=" << nt << ": " << ab::fixed(total.median, 1)
                << " ms, " << ab::human_bytes(peak.tensor_bytes) << " (" << status << ")\n";
    }
  }
  std::cerr << '\n';
  table.print(std::cerr);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_peers: " << e.what() << '\n';
  return 2;
}
