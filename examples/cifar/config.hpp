#pragma once
// anode-cifar's command line: the configuration of a run, its parser, and the usage text. The
// parser throws `UsageError` naming the option and the value it could not use, so that main can
// print the message with the usage text and exit 2, and tests can check the message.

#include "examples/cifar/cifar_data.hpp"
#include "examples/cifar/models.hpp"

#include <anode/options.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cifar {

/// A command-line mistake; what() names the option and the offending value.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One training or evaluation run. Defaults are the official ANODE training script's.
struct Config {
  std::string data;                             ///< --data DIR (required)
  Kind dataset = Kind::Cifar10;                 ///< --dataset cifar10|cifar100
  std::string network = "resnet";               ///< --network resnet|sqnxt|alexnet|resnet4|resnet10
  double width = 1.0;                           ///< --width X (channel multiplier)
  std::vector<int64_t> blocks;                  ///< --blocks a,b,c,d (empty: the network's default)
  anode::Method method = anode::Method::Euler;  ///< --method euler|rk2|rk4
  int64_t nt = 2;                               ///< --nt N (steps per ODE block)
  anode::Gradient gradient = anode::Gradient::Anode;  ///< --gradient anode|backprop|adjoint
  int64_t checkpoints = 0;                            ///< --checkpoints K (binomial, Anode only)
  bool keep_forward_checkpoints = false;              ///< --keep-forward-checkpoints
  int64_t epochs = 350;                               ///< --epochs N
  int64_t batch_size = 256;                           ///< --batch-size N
  double lr = 0.1;                                    ///< --lr X (scheduled, see lr_at)
  double momentum = 0.9;                              ///< --momentum X
  double weight_decay = 5e-4;                         ///< --wd X
  std::string device = "cpu";                         ///< --device cpu|cuda[:i]
  int64_t threads = 0;                                ///< --threads N (0: LibTorch's default)
  int64_t workers = 2;             ///< --workers N (loader threads; 0 loads on the main thread)
  int64_t limit = 0;               ///< --limit N (first N training images; 0: all)
  int64_t test_limit = 0;          ///< --test-limit N (first N test images; 0: all)
  uint64_t seed = 0;               ///< --seed N
  std::string out = "runs/cifar";  ///< --out DIR (checkpoint.pt, log.csv)
  bool resume = false;             ///< --resume (from OUT/checkpoint.pt)
  std::string evaluate;            ///< --evaluate CHECKPOINT (test only)
  bool progress = true;            ///< --no-progress turns the progress bar off
  bool help = false;               ///< --help

  /// The model this configuration describes, for a dataset of `num_classes` classes.
  ModelSpec model_spec() const {
    ModelSpec m;
    m.network = network;
    m.num_classes = layout(dataset).num_classes;
    m.width = width;
    m.blocks = blocks;
    m.ode = anode::ODEBlockOptions()
                .method(method)
                .steps(nt)
                .gradient(gradient)
                .checkpoints(checkpoints)
                .keep_forward_checkpoints(keep_forward_checkpoints);
    return m;
  }
};

inline std::string usage() {
  return R"(usage: anode-cifar --data DIR [options]

Trains ResNet18-ODE or SqueezeNext-23-ODE on CIFAR-10/100 (binary layout) with anode's ODE blocks.

data
  --data DIR            folder with data_batch_{1..5}.bin + test_batch.bin (CIFAR-10) or
                        train.bin + test.bin (CIFAR-100), or its parent
  --dataset NAME        cifar10 | cifar100                              [cifar10]
  --limit N             train on the first N training images only (0: all) [0]
  --test-limit N        test on the first N test images only (0: all)    [0]
  --workers N           data-loading threads                             [2]
model
  --network NAME        resnet (ResNet18-ODE) | sqnxt (SqNxt-23-ODE) |
                        alexnet | resnet4 | resnet10 (the ANODE paper's table) [resnet]
  --width X             channel multiplier (e.g. 0.25 for quick CPU runs) [1]
  --blocks A,B,C,D      blocks per stage [resnet 2,2,2,2; sqnxt 6,6,8,1; others fixed]
ODE solver
  --method NAME         euler | rk2 | rk4                                [euler]
  --nt N                time steps per ODE block                         [2]
  --gradient NAME       anode | backprop | adjoint                       [anode]
  --checkpoints K       anode only: keep K states per block (binomial); 0 keeps all [0]
  --keep-forward-checkpoints
                        with --checkpoints: store them in the forward pass (faster,
                        K states per block instead of K in all)
training
  --epochs N            epochs                                           [350]
  --batch-size N        batch size                                       [256]
  --lr X                initial learning rate; /10 after 150/350 and again after
                        250/350 of the epochs (the official schedule, scaled) [0.1]
  --momentum X          SGD momentum                                     [0.9]
  --wd X                weight decay                                     [5e-4]
  --seed N              seed of initialisation, data order and augmentation [0]
  --device NAME         cpu | cuda | cuda:I                              [cpu]
  --threads N           intra-op threads (0: LibTorch's default)         [0]
output
  --out DIR             log.csv and checkpoint.pt go here                [runs/cifar]
  --resume              continue from OUT/checkpoint.pt (same options required)
  --evaluate FILE       only evaluate the checkpoint FILE on the test set
  --no-progress         no progress bar
  --help                this text
)";
}

namespace detail {

inline int64_t parse_int(const std::string& opt, const std::string& v, int64_t min) {
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (v.empty() || used != v.size() || n < min) {
    throw UsageError("option " + opt + " needs an integer >= " + std::to_string(min) + ", got '" +
                     v + "'");
  }
  return static_cast<int64_t>(n);
}

inline double parse_double(const std::string& opt, const std::string& v, double min,
                           bool min_inclusive) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const bool ok =
      !v.empty() && used == v.size() && std::isfinite(x) && (min_inclusive ? x >= min : x > min);
  if (!ok) {
    std::ostringstream os;
    os << "option " << opt << " needs a number " << (min_inclusive ? ">= " : "> ") << min
       << ", got '" << v << "'";
    throw UsageError(os.str());
  }
  return x;
}

}  // namespace detail

/// Parses the arguments (without the program name). Throws UsageError on any mistake.
inline Config parse_args(const std::vector<std::string>& args) {
  Config c;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string opt = args[i], value;
    bool has_inline = false;
    if (const auto eq = opt.find('='); opt.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = opt.substr(eq + 1);  // --opt=value
      opt = opt.substr(0, eq);
      has_inline = true;
    }
    auto next = [&]() -> std::string {
      if (has_inline) return value;
      if (i + 1 >= args.size()) throw UsageError("option " + opt + " needs a value");
      return args[++i];
    };
    auto flag = [&]() {
      if (has_inline) throw UsageError("option " + opt + " takes no value, got '" + value + "'");
    };
    auto choice = [&](auto parse_fn) {
      const std::string v = next();
      try {
        return parse_fn(v);
      } catch (const c10::Error& e) {
        throw UsageError("option " + opt + ": " + e.what_without_backtrace());
      }
    };
    if (opt == "--data") {
      c.data = next();
      if (c.data.empty()) throw UsageError("option --data needs a directory, got ''");
    } else if (opt == "--dataset") {
      c.dataset = choice([](const std::string& v) { return kind_from_string(v); });
    } else if (opt == "--network") {
      c.network = next();
      if (!is_network(c.network))
        throw UsageError(
            "option --network needs resnet, sqnxt, alexnet, resnet4 or resnet10, got '" +
            c.network + "'");
    } else if (opt == "--width") {
      c.width = detail::parse_double(opt, next(), 0.0, false);
    } else if (opt == "--blocks") {
      const std::string v = next();
      c.blocks.clear();
      std::stringstream ss(v);
      for (std::string item; std::getline(ss, item, ',');)
        c.blocks.push_back(detail::parse_int(opt, item, 1));
      if (c.blocks.size() != 4)
        throw UsageError("option --blocks needs 4 comma-separated integers >= 1, got '" + v + "'");
    } else if (opt == "--method") {
      c.method = choice([](const std::string& v) { return anode::method_from_string(v); });
    } else if (opt == "--nt") {
      c.nt = detail::parse_int(opt, next(), 1);
    } else if (opt == "--gradient") {
      c.gradient = choice([](const std::string& v) { return anode::gradient_from_string(v); });
    } else if (opt == "--checkpoints") {
      c.checkpoints = detail::parse_int(opt, next(), 0);
    } else if (opt == "--epochs") {
      c.epochs = detail::parse_int(opt, next(), 1);
    } else if (opt == "--batch-size") {
      c.batch_size = detail::parse_int(opt, next(), 1);
    } else if (opt == "--lr") {
      c.lr = detail::parse_double(opt, next(), 0.0, false);
    } else if (opt == "--momentum") {
      c.momentum = detail::parse_double(opt, next(), 0.0, true);
    } else if (opt == "--wd") {
      c.weight_decay = detail::parse_double(opt, next(), 0.0, true);
    } else if (opt == "--device") {
      c.device = next();
      if (c.device != "cpu" && c.device.rfind("cuda", 0) != 0)
        throw UsageError("option --device needs cpu, cuda or cuda:I, got '" + c.device + "'");
    } else if (opt == "--threads") {
      c.threads = detail::parse_int(opt, next(), 0);
    } else if (opt == "--workers") {
      c.workers = detail::parse_int(opt, next(), 0);
    } else if (opt == "--limit") {
      c.limit = detail::parse_int(opt, next(), 0);
    } else if (opt == "--test-limit") {
      c.test_limit = detail::parse_int(opt, next(), 0);
    } else if (opt == "--seed") {
      c.seed = static_cast<uint64_t>(detail::parse_int(opt, next(), 0));
    } else if (opt == "--out") {
      c.out = next();
      if (c.out.empty()) throw UsageError("option --out needs a directory, got ''");
    } else if (opt == "--keep-forward-checkpoints") {
      flag();
      c.keep_forward_checkpoints = true;
    } else if (opt == "--resume") {
      flag();
      c.resume = true;
    } else if (opt == "--evaluate") {
      c.evaluate = next();
      if (c.evaluate.empty()) throw UsageError("option --evaluate needs a file, got ''");
    } else if (opt == "--no-progress") {
      flag();
      c.progress = false;
    } else if (opt == "--help" || opt == "-h") {
      c.help = true;
    } else {
      throw UsageError("unknown option '" + args[i] + "'");
    }
  }
  if (c.help) return c;
  if (c.data.empty()) throw UsageError("option --data is required");
  if (!c.blocks.empty() && !takes_blocks(c.network))
    throw UsageError("option --blocks: network " + c.network +
                     " has a fixed layout (see docs/paper_networks.md); leave --blocks out");
  if (c.checkpoints > 0 && c.gradient != anode::Gradient::Anode)
    throw UsageError("option --checkpoints " + std::to_string(c.checkpoints) +
                     " needs --gradient anode, got --gradient " + anode::to_string(c.gradient));
  if (c.keep_forward_checkpoints && c.checkpoints == 0)
    throw UsageError("option --keep-forward-checkpoints needs --checkpoints K >= 1");
  if (c.resume && !c.evaluate.empty())
    throw UsageError("options --resume and --evaluate exclude each other");
  return c;
}

/// The learning rate of (1-based) `epoch` of `epochs`: the official schedule (divided by 10 after
/// epoch 150 and again after 250 of 350) with its milestones scaled to `epochs`, rounded up so
/// that a short run starts with at least one epoch at the full rate.
inline double lr_at(double base, int64_t epoch, int64_t epochs) {
  const auto milestone = [epochs](int64_t m) { return (m * epochs + 349) / 350; };
  if (epoch > milestone(250)) return base / 100.0;
  if (epoch > milestone(150)) return base / 10.0;
  return base;
}

}  // namespace cifar
