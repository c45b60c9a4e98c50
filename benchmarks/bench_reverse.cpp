// Reverse-time reconstruction (the ANODE paper's central figure): solve forward N_t steps from
// z0 to z(1), then solve the same ODE backwards from z(1) to t = 0 with the same method and step,
// as the reverse-time adjoint must, and report ||z0 - z0_reconstructed|| / ||z0||, for conv
// right-hand sides with ReLU, leaky ReLU and tanh, as N_t varies and as the weights' scale grows.
// No gradients are involved: this is the state the Adjoint's backward pass starts from.
//
//   bench_reverse [--quick | --full] [--rhs relu,leaky,tanh] [--scale 1,4,16,32] [--csv out.csv]
//
// RHS: act(conv3x3(z) + b), weights scaled by --scale after the deterministic initialisation
// (std scale/sqrt(fan_in)). Each row also gives ||z(1)|| / ||z0||: how much the forward solve
// stretched the state.

#include "harness/cli.hpp"
#include "harness/csv.hpp"
#include "harness/machine.hpp"
#include "harness/network.hpp"
#include "harness/table.hpp"

#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include <iostream>
#include <string>
#include <vector>

namespace ab = anode::bench;

int main(int argc, char** argv) try {
  anode::memory::install_cpu_meter();
  ab::Cli cli("Reverse-time stability: solve forward, then backward, and compare.",
              "bench_reverse");
  int64_t threads = 1, channels = 8, batch = 4, size = 16;
  std::vector<std::string> rhs_list{"relu", "leaky", "tanh"}, methods{"euler", "rk2", "rk4"};
  std::vector<std::string> dtypes{"float32", "float64"};
  std::vector<int64_t> nts{1, 2, 4, 8, 16, 32, 64};
  std::vector<double> scales{1, 4, 16, 32};
  std::string csv_path;
  cli.option("--threads", threads, "intra-op threads (0: LibTorch's default)");
  cli.option("--rhs", rhs_list);
  cli.option("--methods", methods);
  cli.grid_option("--nt", nts, {1, 2, 4, 8, 16, 32, 64, 128, 256, 512});
  cli.grid_option("--scale", scales, {0.5, 1, 2, 4, 8, 16, 32},
                  "weight scales (std scale/sqrt(fan_in))");
  cli.option("--dtypes", dtypes);
  cli.option("--channels", channels);
  cli.option("--batch", batch);
  cli.option("--size", size);
  cli.option("--csv", csv_path, "write the CSV here instead of stdout");
  if (!cli.parse(argc, argv)) return 0;
  const bool full = cli.full;
  ab::set_threads(threads);

  auto csv = ab::CsvWriter::to_path_or_stdout(
      csv_path, {"rhs", "method", "nt", "scale", "dtype", "rel_err", "growth", "status"});
  ab::write_machine_info(csv);
  csv.meta("bench", "reverse");
  csv.meta("grid", full ? "full" : "quick");
  csv.meta("conv", "act(conv3x3(z) + b), " + std::to_string(channels) + " channels, batch " +
                       std::to_string(batch) + ", " + std::to_string(size) + "x" +
                       std::to_string(size));
  csv.write_header();

  torch::NoGradGuard no_grad;
  ab::Table table({"rhs", "method", "N_t", "scale", "dtype", "rel err", "growth"});
  const std::vector<int64_t> shape = {batch, channels, size, size};
  for (const auto& rhs : rhs_list) {
    const auto act = ab::act_from_string(rhs);
    for (const auto& mname : methods) {
      const auto method = anode::method_from_string(mname);
      for (double scale : scales) {
        for (const auto& dname : dtypes) {
          const auto dtype = dname == "float64" ? torch::kFloat64 : torch::kFloat32;
          ab::ConvRHS f(
              ab::ConvRHSOptions().channels(channels).convs(1).batchnorm(false).bias(true).act(
                  act));
          ab::det_init(*f, 5, scale);
          f->to(dtype);
          const auto z0 = ab::det_values(shape, 7, 1.0).to(dtype);
          for (int64_t nt : nts) {
            std::string status = "ok";
            double err = NAN, growth = NAN;
            try {
              const auto fwd = anode::ODEBlockOptions().method(method).steps(nt).t0(0.0).t1(1.0);
              const auto z1 = anode::odeint(f, z0, fwd);
              const auto z0r = anode::odeint(f, z1, anode::ODEBlockOptions(fwd).t0(1.0).t1(0.0));
              err = ab::rel_err(z0r.to(torch::kFloat64), z0.to(torch::kFloat64));
              growth = z1.norm().item<double>() / z0.norm().item<double>();
            } catch (const std::exception& e) {
              status = std::string("error: ") + e.what();
              status = status.substr(0, status.find('\n'));
            }
            csv.row({rhs, anode::to_string(method), nt, scale, dname, err, growth, status});
            table.add_row({rhs, anode::to_string(method), std::to_string(nt), ab::fixed(scale, 1),
                           dname, ab::sci(err), ab::fixed(growth, 2)});
          }
        }
      }
    }
  }
  table.print(std::cerr);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_reverse: " << e.what() << '\n';
  return 2;
}
