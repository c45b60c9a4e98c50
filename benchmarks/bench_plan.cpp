// The memory plan's time-memory curve against the fixed strategies, side by side in one run: for
// each network, every fixed strategy's step time and peak (Backprop, Anode, Anode with
// keep_latest_graph, binomial checkpoints 1/2/4/8 rebuilt and kept), then an anode::MemoryPlan at
// about ten budgets from the smallest feasible to Backprop's peak, each compared with the fastest
// fixed strategy whose measured peak fits that budget.
//
//   bench_plan [--nets peers8,peers32,resnet18] [--budgets 10] [--repeats 3] [--rounds 2]
//              [--above 1.01,1.02,1.05] [--pairs 0] [--pair-each 0] [--threads 1]
//              [--device cpu|cuda] [--csv out.csv]
//
// --above adds budgets at those multiples of Backprop's peak: where the plan, whose model errs
// towards more memory, first keeps every graph.
//
// The peak is the budget's quantity: the bytes one training step allocates from its forward's
// start to its backward's end, above what was live at its start, on the CPU meter (--device cuda:
// the counting CUDA meter, anode::memory::install_cuda_meter; each timed step ends with a device
// synchronisation, so that its time is the kernels' and not only their launches'). The step time
// is the whole training step (zero_grad, forward, backward, SGD step), the median of the timed
// steps over `--rounds` interleaved rounds (each round runs every strategy and budget once in
// turn, so that a machine's drift touches all alike). A plan's ratio to the fastest fixed
// strategy that fits its budget is paired by round: the median over rounds of the two medians'
// ratio within a round. A plan's first steps (its calibration and the first planned steps, which
// measure the kept graphs) are warm-up, not timed. --pairs then times the plan at exactly
// Backprop's peak step by step against Backprop, beside a replica of Backprop whose ratio to it
// is the noise floor: the target at that budget is a few per cent, below the spread of
// separately timed runners on a shared machine. --pair-each does the same for every budget up to
// Backprop's peak against the fastest fixed strategy that fits it.
//
// Networks: peers8 / peers32 are the peer comparison's network (4 ODE blocks, RHS
// conv3x3-BN-ReLU-conv3x3-BN-ReLU, 32 channels, batch 8, RK2) at 16x16 inputs with N_t 8 and 32;
// resnet18 is the CIFAR ResNet18-ODE at width 0.25 (Euler, N_t 2, batch 16, 32x32).

#include "harness/cli.hpp"
#include "harness/csv.hpp"
#include "harness/machine.hpp"
#include "harness/network.hpp"
#include "harness/stats.hpp"
#include "harness/table.hpp"

#include "examples/cifar/resnet_ode.hpp"

#include <torch/torch.h>
#include <anode/anode.hpp>
#include <anode/memory.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace ab = anode::bench;

namespace {

/// The device every network runs on (--device).
torch::Device& bench_device() {
  static torch::Device d(torch::kCPU);
  return d;
}

/// A network under test: its model (made with given block options), its input and target.
struct Bench {
  std::string name;
  std::function<std::shared_ptr<torch::nn::Module>(const anode::ODEBlockOptions&)> make;
  std::function<torch::Tensor(torch::nn::Module&, const torch::Tensor&)> forward;
  torch::Tensor x, target;
  anode::ODEBlockOptions solver;
  std::string description;
};

Bench peers(int64_t nt, int64_t size) {
  Bench b;
  b.name = "peers" + std::to_string(nt);
  const int64_t channels = 32, batch = 8;
  b.solver = anode::ODEBlockOptions().method(anode::Method::RK2).steps(nt);
  const auto o =
      ab::ConvRHSOptions().channels(channels).convs(2).batchnorm(true).act(ab::Act::ReLU);
  b.make = [o](const anode::ODEBlockOptions& opts) {
    auto net =
        std::make_shared<ab::ChainImpl<ab::ConvRHSImpl>>([o] { return ab::ConvRHS(o); }, 4, opts);
    ab::det_init(*net, 1);
    return std::static_pointer_cast<torch::nn::Module>(net);
  };
  b.forward = [](torch::nn::Module& m, const torch::Tensor& x) {
    return dynamic_cast<ab::ChainImpl<ab::ConvRHSImpl>&>(m).forward(x);
  };
  b.x = ab::det_values({batch, channels, size, size}, 7, 1.0);
  b.target = ab::det_values({batch, channels, size, size}, 11, 1.0);
  b.description = "4 ODE blocks, conv3x3-BN-ReLU-conv3x3-BN-ReLU, 32 channels, batch 8, " +
                  std::to_string(size) + "x" + std::to_string(size) + ", RK2, N_t " +
                  std::to_string(nt);
  return b;
}

Bench resnet18() {
  Bench b;
  b.name = "resnet18";
  b.solver = anode::ODEBlockOptions().method(anode::Method::Euler).steps(2);
  b.make = [](const anode::ODEBlockOptions& opts) {
    torch::manual_seed(1);
    auto net = cifar::ResNetODE(cifar::ResNetODEOptions().width(0.25).ode(opts));
    return std::static_pointer_cast<torch::nn::Module>(net.ptr());
  };
  b.forward = [](torch::nn::Module& m, const torch::Tensor& x) {
    return dynamic_cast<cifar::ResNetODEImpl&>(m).forward(x);
  };
  b.x = ab::det_values({16, 3, 32, 32}, 7, 1.0);
  b.target = ab::det_values({16, 10}, 11, 1.0);
  b.description = "CIFAR ResNet18-ODE, width 0.25, Euler N_t 2, batch 16, 32x32";
  return b;
}

/// One strategy (a fixed one, or a plan at a budget) with its model and optimizer.
struct Runner {
  std::string strategy;
  int64_t budget = 0;  // plans only
  std::shared_ptr<anode::MemoryPlan> plan;
  std::shared_ptr<torch::nn::Module> net;
  std::unique_ptr<torch::optim::SGD> opt;
  std::vector<double> ms;
  std::vector<std::vector<double>> by_round;  // the same samples, per interleaved round
  int64_t peak = 0;
  std::string status = "ok";
};

/// One training step: its time (ms) and its peak between the forward's start and the backward's
/// end.
std::pair<double, int64_t> train_step(const Bench& b, Runner& r) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  r.opt->zero_grad();
  int64_t peak = 0;
  {
    anode::memory::PeakScope scope(bench_device());
    auto loss = ab::bench_loss(b.forward(*r.net, b.x), b.target);
    loss.backward();
    peak = scope.peak_bytes();
  }
  r.opt->step();
  if (bench_device().is_cuda()) torch::cuda::synchronize();
  return {std::chrono::duration<double, std::milli>(clock::now() - t0).count(), peak};
}

Runner make_runner(const Bench& b, const std::string& strategy, const anode::ODEBlockOptions& o) {
  Runner r;
  r.strategy = strategy;
  r.net = b.make(o);
  r.net->to(bench_device(), torch::kFloat32);
  r.opt = std::make_unique<torch::optim::SGD>(r.net->parameters(), torch::optim::SGDOptions(1e-4));
  return r;
}

std::string decisions_of(const anode::MemoryPlan& p) {
  std::map<std::string, int> count;
  for (const auto& d : p.decisions()) ++count[anode::plan::to_string(d)];
  std::ostringstream s;
  bool first = true;
  for (const auto& [what, n] : count) {
    s << (first ? "" : "; ") << n << "x " << what;
    first = false;
  }
  return s.str();
}

}  // namespace

int main(int argc, char** argv) try {
  anode::memory::install_cpu_meter();
  std::string device = "cpu";
  ab::Cli cli("The memory plan's time-memory curve against the fixed strategies.", "bench_plan");
  std::vector<std::string> nets{"peers8", "peers32", "resnet18"};
  int64_t threads = 1, n_budgets = 10, repeats = 3, rounds = 2, size = 16, pairs = 0, pair_each = 0;
  std::string csv_path;
  std::vector<double> above;
  bool print_plans = false;
  cli.option("--nets", nets, "peers8, peers32, resnet18");
  cli.option("--above", above, "more budgets, as multiples (> 1) of Backprop's peak");
  cli.app.add_flag("--print-plans", print_plans, "print each plan (operator<<) after its run");
  cli.option("--budgets", n_budgets, "plan budgets from the smallest feasible to Backprop's peak");
  cli.option("--repeats", repeats, "timed steps per strategy and round");
  cli.option("--rounds", rounds, "interleaved rounds");
  cli.option("--pairs", pairs,
             "then this many paired steps of Backprop, the plan at Backprop's peak and a replica "
             "of Backprop (the noise floor), in rotating order");
  cli.option("--pair-each", pair_each,
             "then, for each budget up to Backprop's peak, this many paired steps of the plan and "
             "the fastest fixed strategy that fits it, in alternating order");
  cli.option("--size", size, "the peers network's input size");
  cli.option("--threads", threads, "intra-op threads (0: LibTorch's default)");
  cli.option("--device", device, "cpu, or cuda (the counting CUDA meter measures)");
  cli.option("--csv", csv_path, "write the CSV here instead of stdout");
  if (!cli.parse(argc, argv)) return 0;
  if (n_budgets < 2 || repeats < 1 || rounds < 1 || pairs < 0 || pair_each < 0)
    throw std::invalid_argument(
        "--budgets must be >= 2, --repeats and --rounds >= 1, --pairs and --pair-each >= 0");
  for (double a : above) {
    if (!(a > 1.0 && a < 100.0))
      throw std::invalid_argument("--above: " + std::to_string(a) +
                                  " is not a multiple of Backprop's peak above 1 (e.g. 1.02)");
  }
  if (device == "cuda") {
    if (!torch::cuda::is_available())
      throw std::invalid_argument("--device cuda: no CUDA device is available here");
    anode::memory::install_cuda_meter();
    bench_device() = torch::Device(torch::kCUDA, 0);
  } else if (device != "cpu") {
    throw std::invalid_argument("--device: '" + device + "' is neither cpu nor cuda");
  }
  ab::set_threads(threads);

  auto csv = ab::CsvWriter::to_path_or_stdout(
      csv_path,
      {"net", "strategy", "budget_bytes", "peak_bytes", "step_ms", "step_ms_q25", "step_ms_q75",
       "repeats", "fastest_fitting", "fastest_fitting_ms", "ratio", "decisions", "status"});
  std::vector<Bench> benches;
  for (const auto& name : nets) {
    benches.push_back(name == "peers8"    ? peers(8, size)
                      : name == "peers32" ? peers(32, size)
                      : name == "resnet18"
                          ? resnet18()
                          : throw std::invalid_argument("--nets: unknown network '" + name + "'"));
  }
  for (auto& b : benches) {
    b.x = b.x.to(bench_device());
    b.target = b.target.to(bench_device());
  }
  ab::write_machine_info(csv);
  csv.meta("bench", "plan");
  csv.meta("device", bench_device().str());
  for (const auto& b : benches) csv.meta("network_" + b.name, b.description);
  csv.write_header();

  for (const auto& b : benches) {
    std::cerr << "== " << b.name << ": " << b.description << "\n";
    const int64_t nt = b.solver.steps();
    // The fixed strategies.
    std::vector<Runner> fixed;
    fixed.push_back(make_runner(b, "backprop", b.solver.with_gradient(anode::Gradient::Backprop)));
    fixed.push_back(make_runner(b, "anode", b.solver));
    fixed.push_back(
        make_runner(b, "anode-latest", anode::ODEBlockOptions(b.solver).keep_latest_graph(true)));
    for (int64_t k : {1, 2, 4, 8}) {
      if (k >= nt) continue;
      fixed.push_back(make_runner(b, "anode-k" + std::to_string(k),
                                  anode::ODEBlockOptions(b.solver).checkpoints(k)));
      fixed.push_back(make_runner(
          b, "anode-k" + std::to_string(k) + "f",
          anode::ODEBlockOptions(b.solver).checkpoints(k).keep_forward_checkpoints(true)));
    }
    for (auto& r : fixed) {
      const auto [ms, peak] = train_step(b, r);  // warm-up
      (void)ms;
      r.peak = peak;
    }
    const int64_t backprop_peak = fixed[0].peak;
    // The smallest feasible budget, from a calibration step.
    int64_t smallest = 0;
    {
      Runner probe = make_runner(b, "probe", b.solver);
      probe.plan = std::make_shared<anode::MemoryPlan>(int64_t{1} << 40);
      for (auto& blk : anode::ode_blocks(*probe.net)) blk->options.memory_plan(probe.plan);
      train_step(b, probe);
      smallest = probe.plan->cheapest_peak_bytes();
    }
    std::vector<Runner> plans;
    std::vector<int64_t> budgets;
    for (int64_t i = 0; i < n_budgets; ++i)
      budgets.push_back(smallest +
                        (std::max(backprop_peak, smallest) - smallest) * i / (n_budgets - 1));
    for (double a : above)
      budgets.push_back(static_cast<int64_t>(a * static_cast<double>(backprop_peak)));
    for (const int64_t budget : budgets) {
      Runner r = make_runner(b, "plan", b.solver);
      r.budget = budget;
      r.plan = std::make_shared<anode::MemoryPlan>(budget);
      for (auto& blk : anode::ode_blocks(*r.net)) blk->options.memory_plan(r.plan);
      try {
        for (int w = 0; w < 4; ++w) r.peak = std::max(r.peak, train_step(b, r).second);
      } catch (const std::exception& e) {
        r.status = std::string("error: ") + e.what();
        r.status = r.status.substr(0, r.status.find('\n'));
      }
      plans.push_back(std::move(r));
    }
    std::cerr << "  smallest feasible " << ab::human_bytes(smallest) << ", Backprop's peak "
              << ab::human_bytes(backprop_peak) << "\n";
    // Timed, in interleaved rounds.
    for (int64_t round = 0; round < rounds; ++round) {
      for (auto* group : {&fixed, &plans}) {
        for (auto& r : *group) {
          if (r.status != "ok") continue;
          r.by_round.emplace_back();
          for (int64_t i = 0; i < repeats; ++i) {
            try {
              const auto [ms, peak] = train_step(b, r);
              r.ms.push_back(ms);
              r.by_round.back().push_back(ms);
              r.peak = std::max(r.peak, peak);
            } catch (const std::exception& e) {
              r.status = std::string("error: ") + e.what();
              r.status = r.status.substr(0, r.status.find('\n'));
              break;
            }
          }
        }
      }
      std::cerr << "  round " << round + 1 << "/" << rounds << " done\n";
    }
    // Paired: Backprop, the plan at exactly Backprop's peak and a second Backprop (whose ratio to
    // the first is the noise floor of two identical strategies), one step each in rotating order,
    // each step's time divided by Backprop's in the same triple.
    struct Paired {
      std::vector<double> plan, replica, backprop, plan_ratio, replica_ratio;
    } paired;
    Runner* at_peak = nullptr;
    for (auto& r : plans) {
      if (r.budget == backprop_peak && r.status == "ok") at_peak = &r;
    }
    if (pairs > 0 && at_peak != nullptr && fixed[0].status == "ok") {
      Runner replica =
          make_runner(b, "backprop", b.solver.with_gradient(anode::Gradient::Backprop));
      (void)train_step(b, replica);
      for (int64_t i = 0; i < pairs; ++i) {
        std::vector<Runner*> order{&fixed[0], at_peak, &replica};
        std::rotate(order.begin(), order.begin() + i % 3, order.end());
        std::map<Runner*, double> t;
        for (Runner* r : order) {
          const auto [ms, peak] = train_step(b, *r);
          t[r] = ms;
          r->peak = std::max(r->peak, peak);
        }
        paired.backprop.push_back(t[&fixed[0]]);
        paired.plan.push_back(t[at_peak]);
        paired.replica.push_back(t[&replica]);
        paired.plan_ratio.push_back(t[at_peak] / t[&fixed[0]]);
        paired.replica_ratio.push_back(t[&replica] / t[&fixed[0]]);
      }
      const auto bp = ab::summarize(paired.backprop);
      for (const auto& [what, ms, ratio, peak, budget] :
           {std::make_tuple(std::string("plan-paired"), paired.plan, paired.plan_ratio,
                            at_peak->peak, backprop_peak),
            std::make_tuple(std::string("backprop-replica-paired"), paired.replica,
                            paired.replica_ratio, replica.peak, int64_t{0})}) {
        const auto s = ab::summarize(ms);
        const double q = ab::summarize(ratio).median;
        csv.row({b.name, what, budget, peak, s.median, s.q25, s.q75, pairs, std::string("backprop"),
                 bp.median, q, what == "plan-paired" ? decisions_of(*at_peak->plan) : std::string(),
                 std::string("ok")});
        std::cerr << "  " << what << ": " << pairs << " paired steps, median ratio to Backprop "
                  << ab::fixed(q, 3) << " (quartiles " << ab::fixed(ab::quantile(ratio, 0.25), 3)
                  << ", " << ab::fixed(ab::quantile(ratio, 0.75), 3) << ")\n";
      }
    }
    ab::Table table(
        {"strategy", "budget", "peak", "step ms", "fastest fitting", "ratio", "plan", "status"});
    // A strategy that failed (its status says why) has no samples.
    const auto summary = [](const Runner& r) {
      return r.ms.empty() ? ab::Summary{} : ab::summarize(r.ms);
    };
    for (auto& r : fixed) {
      const auto s = summary(r);
      csv.row({b.name, r.strategy, int64_t{0}, r.peak, s.median, s.q25, s.q75,
               static_cast<int64_t>(r.ms.size()), std::string(), 0.0, 0.0, std::string(),
               r.status});
      table.add_row(
          {r.strategy, "", ab::human_bytes(r.peak), ab::fixed(s.median, 1), "", "", "", r.status});
    }
    for (auto& r : plans) {
      const auto s = summary(r);
      // The fastest fixed strategy whose measured peak fits this budget.
      Runner* best = nullptr;
      double best_ms = std::numeric_limits<double>::infinity();
      for (auto& f : fixed) {
        if (f.status != "ok" || f.peak > r.budget || f.ms.empty()) continue;
        const double m = ab::summarize(f.ms).median;
        if (m < best_ms) {
          best_ms = m;
          best = &f;
        }
      }
      // The ratio is paired by round: the median over rounds of this plan's median step time in
      // a round over the fastest fitting strategy's in the same round, so that a machine's drift
      // between rounds cancels.
      double ratio = 0.0;
      if (best) {
        std::vector<double> per_round;
        for (std::size_t k = 0; k < r.by_round.size() && k < best->by_round.size(); ++k) {
          if (r.by_round[k].empty() || best->by_round[k].empty()) continue;
          per_round.push_back(ab::summarize(r.by_round[k]).median /
                              ab::summarize(best->by_round[k]).median);
        }
        if (!per_round.empty()) ratio = ab::summarize(per_round).median;
      }
      std::string status = r.status;
      if (status == "ok" && r.plan->overshoots() > 0)
        status = "above budget in " + std::to_string(r.plan->overshoots()) + " steps";
      const std::string what = r.plan ? decisions_of(*r.plan) : "";
      csv.row({b.name, "plan", r.budget, r.peak, s.median, s.q25, s.q75,
               static_cast<int64_t>(r.ms.size()), best ? best->strategy : std::string("none"),
               best ? best_ms : 0.0, ratio, what, status});
      // --pair-each: the plan and that strategy, one step each in alternating order.
      if (pair_each > 0 && best != nullptr && r.status == "ok" && r.budget <= backprop_peak) {
        std::vector<double> mine, theirs, q;
        for (int64_t i = 0; i < pair_each; ++i) {
          double tp = 0, tb = 0;
          if (i % 2 == 0) {
            tp = train_step(b, r).first;
            tb = train_step(b, *best).first;
          } else {
            tb = train_step(b, *best).first;
            tp = train_step(b, r).first;
          }
          mine.push_back(tp);
          theirs.push_back(tb);
          q.push_back(tp / tb);
        }
        const auto sm = ab::summarize(mine);
        const double pq = ab::summarize(q).median;
        csv.row({b.name, "plan-vs-fastest-paired", r.budget, r.peak, sm.median, sm.q25, sm.q75,
                 pair_each, best->strategy, ab::summarize(theirs).median, pq, what,
                 std::string("ok")});
        std::cerr << "  plan at " << ab::human_bytes(r.budget) << " vs " << best->strategy << ": "
                  << pair_each << " paired steps, median ratio " << ab::fixed(pq, 3) << "\n";
      }
      table.add_row({"plan", ab::human_bytes(r.budget), ab::human_bytes(r.peak),
                     ab::fixed(s.median, 1), best ? best->strategy : "none", ab::fixed(ratio, 3),
                     what, status.substr(0, 60)});
    }
    table.print(std::cerr);
    std::cerr << "\n";
    if (print_plans) {
      for (const auto& r : plans)
        std::cerr << "plan at " << ab::human_bytes(r.budget) << ":\n" << *r.plan << "\n\n";
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "bench_plan: " << e.what() << '\n';
  return 2;
}
