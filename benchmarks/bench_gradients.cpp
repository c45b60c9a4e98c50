// Gradient accuracy (the ANODE paper's RQ1/RQ2) and OTD-vs-DTO consistency (RQ4): for each
// right-hand side, method and N_t, the gradients of one step in every mode, in float32 and
// float64, against the exact gradient of the discrete solve (float64 Backprop at the same method
// and N_t), and against a fine-grid float64 reference (RK4, --fine-nt steps: the continuous
// gradient, to which both the exact discrete gradient and the Adjoint's converge as dt -> 0).
//
//   bench_gradients [--quick | --full] [--rhs relu,leaky,tanh,conv_bn,mlp] [--csv out.csv]
//
// Right-hand sides (one block, loss 0.5 * mean((z(1) - target)^2)):
//   relu, leaky, tanh: act(conv3x3(z) + b);  conv_bn: relu(BN(conv3x3(z)));
//   mlp: 2-64-2 tanh MLP (smooth: where the Adjoint converges fastest).
// Error = ||g - g_ref|| / ||g_ref|| over [dL/dx, dL/dtheta] (also split into x and theta);
// cosine = <g, g_ref> / (||g|| ||g_ref||).

#include "harness/cli.hpp"
#include "harness/csv.hpp"
#include "harness/machine.hpp"
#include "harness/network.hpp"
#include "harness/table.hpp"

#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace ab = anode::bench;

namespace {

struct Grads {
  torch::Tensor x, theta;
  torch::Tensor all() const { return torch::cat({x, theta}); }
};

// One forward/backward of a fresh copy of the problem: weights and data are made in float32 and
// cast, so every dtype and mode sees the very same numbers.
template <class Func, class Make>
Grads gradients(Make make, torch::IntArrayRef shape, const anode::ODEBlockOptions& opts,
                torch::Dtype dtype) {
  auto net = std::make_shared<ab::ChainImpl<Func>>(make, 1, opts);
  ab::det_init(*net, 3);
  net->to(dtype);
  auto x = ab::det_values(shape, 7, 1.0).to(dtype).requires_grad_(true);
  auto target = ab::det_values(shape, 11, 1.0).to(dtype);
  ab::bench_loss(net->forward(x), target).backward();
  return {x.grad().detach().to(torch::kFloat64).reshape(-1),
          ab::flat_parameter_grads(net->parameters())};
}

}  // namespace

int main(int argc, char** argv) try {
  anode::memory::install_cpu_meter();
  ab::Cli cli("Gradient error of each mode against Backprop and a fine float64 reference.",
              "bench_gradients");
  int64_t threads = 1, fine_nt = 512, channels = 4, batch = 2, size = 8, mlp_batch = 64;
  std::vector<std::string> rhs_list{"relu", "leaky", "tanh", "conv_bn", "mlp"};
  std::vector<std::string> mode_names{"backprop", "anode", "anode-k2", "adjoint"};
  std::vector<std::string> methods{"euler", "rk2", "rk4"};
  std::vector<int64_t> nts{1, 2, 4, 8, 16, 32, 64};
  std::string csv_path;
  cli.option("--threads", threads, "intra-op threads (0: LibTorch's default)");
  cli.option("--rhs", rhs_list, "right-hand sides");
  cli.option("--modes", mode_names, "gradient modes (anode-kN: N binomial checkpoints)");
  cli.option("--methods", methods);
  cli.grid_option("--nt", nts, {1, 2, 4, 8, 16, 32, 64, 128, 256}, "steps per block");
  cli.grid_option("--fine-nt", fine_nt, 2048, "RK4 steps of the reference");
  cli.grid_option("--channels", channels, 8);
  cli.grid_option("--batch", batch, 4);
  cli.grid_option("--size", size, 16);
  cli.option("--mlp-batch", mlp_batch);
  cli.option("--csv", csv_path, "write the CSV here instead of stdout");
  if (!cli.parse(argc, argv)) return 0;
  const bool full = cli.full;
  ab::set_threads(threads);

  auto csv = ab::CsvWriter::to_path_or_stdout(
      csv_path, {"rhs", "method", "nt", "mode", "dtype", "rel_err_x", "rel_err_theta", "rel_err",
                 "cos", "rel_err_fine", "cos_fine", "status"});
  ab::write_machine_info(csv);
  csv.meta("bench", "gradients");
  csv.meta("grid", full ? "full" : "quick");
  csv.meta("conv", std::to_string(channels) + " channels, batch " + std::to_string(batch) + ", " +
                       std::to_string(size) + "x" + std::to_string(size) + ", one block");
  csv.meta("mlp", "2-64-2 tanh, batch " + std::to_string(mlp_batch) + ", one block");
  csv.meta("fine_reference", "float64 Backprop, RK4, " + std::to_string(fine_nt) + " steps");
  csv.write_header();

  ab::Table table({"rhs", "method", "N_t", "mode", "dtype", "err vs exact", "cos", "err vs fine"});
  for (const auto& rhs : rhs_list) {
    // The problem as a function of (options, dtype), whatever the RHS's type.
    std::function<Grads(const anode::ODEBlockOptions&, torch::Dtype)> grads_of;
    if (rhs == "mlp") {
      auto make = [] { return ab::MlpRHS(2, 64, ab::Act::Tanh); };
      const std::vector<int64_t> shape = {mlp_batch, 2};
      grads_of = [make, shape](const anode::ODEBlockOptions& o, torch::Dtype d) {
        return gradients<ab::MlpRHSImpl>(make, shape, o, d);
      };
    } else {
      auto o = ab::ConvRHSOptions().channels(channels).convs(1);
      if (rhs == "conv_bn") {
        o.batchnorm(true).bias(false).act(ab::Act::ReLU);
      } else {
        o.batchnorm(false).bias(true).act(ab::act_from_string(rhs));
      }
      auto make = [o] { return ab::ConvRHS(o); };
      const std::vector<int64_t> shape = {batch, channels, size, size};
      grads_of = [make, shape](const anode::ODEBlockOptions& opt, torch::Dtype d) {
        return gradients<ab::ConvRHSImpl>(make, shape, opt, d);
      };
    }
    const auto fine = grads_of(anode::ODEBlockOptions()
                                   .method(anode::Method::RK4)
                                   .steps(fine_nt)
                                   .gradient(anode::Gradient::Backprop),
                               torch::kFloat64)
                          .all();
    for (const auto& mname : methods) {
      const auto method = anode::method_from_string(mname);
      for (int64_t nt : nts) {
        const auto base = anode::ODEBlockOptions().method(method).steps(nt);
        const auto exact = grads_of(
            anode::ODEBlockOptions(base).gradient(anode::Gradient::Backprop), torch::kFloat64);
        for (const auto& name : mode_names) {
          const auto mode = ab::Mode::parse(name);
          for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
            const std::string dname = dtype == torch::kFloat32 ? "float32" : "float64";
            std::string status = "ok";
            double ex = NAN, et = NAN, ea = NAN, c = NAN, ef = NAN, cf = NAN;
            try {
              const auto g = grads_of(mode.apply(base), dtype);
              ex = ab::rel_err(g.x, exact.x);
              et = ab::rel_err(g.theta, exact.theta);
              ea = ab::rel_err(g.all(), exact.all());
              c = ab::cosine(g.all(), exact.all());
              ef = ab::rel_err(g.all(), fine);
              cf = ab::cosine(g.all(), fine);
            } catch (const std::exception& e) {
              status = std::string("error: ") + e.what();
              status = status.substr(0, status.find('\n'));
            }
            csv.row(
                {rhs, anode::to_string(method), nt, name, dname, ex, et, ea, c, ef, cf, status});
            table.add_row({rhs, anode::to_string(method), std::to_string(nt), name, dname,
                           ab::sci(ea), ab::fixed(c, 6), ab::sci(ef)});
          }
        }
      }
      std::cerr << "gradients: " << rhs << " " << mname << " done\n";
    }
  }
  std::cerr << '\n';
  table.print(std::cerr);
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_gradients: " << e.what() << '\n';
  return 2;
}
