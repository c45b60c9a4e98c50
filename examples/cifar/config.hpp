#pragma once
// anode-cifar's command line (CLI11): the configuration of a run, its parser, and the usage text.
// The parser throws `UsageError` naming the option and the value it could not use, so that main
// can print the message with the usage text and exit 2, and tests can check the message.

#include "examples/cifar/amp.hpp"
#include "examples/cifar/cifar_data.hpp"
#include "examples/cifar/models.hpp"
#include "examples/cli_checks.hpp"

#include <CLI/CLI.hpp>

#include <anode/options.hpp>

#include <algorithm>
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

/// What `--help` says before the options.
inline constexpr const char* kDescription =
    "Trains an ODE network on CIFAR-10/100 (binary layout) with anode's ODE blocks.";

/// One training or evaluation run. Defaults are the official ANODE training script's.
struct Config {
  std::string data;                             ///< --data DIR (required)
  Kind dataset = Kind::Cifar10;                 ///< --dataset cifar10|cifar100
  std::string network = "resnet";               ///< --network (network_names())
  double width = 1.0;                           ///< --width X (channel multiplier)
  std::vector<int64_t> blocks;                  ///< --blocks a,b,c,d (empty: the network's default)
  anode::Method method = anode::Method::Euler;  ///< --method euler|rk2|rk4|bosh3|dopri5|tsit5
  int64_t nt = 2;  ///< --nt N (steps per ODE block; fixed-step methods)
  anode::Gradient gradient = anode::Gradient::Anode;  ///< --gradient anode|backprop|adjoint
  int64_t checkpoints = 0;                            ///< --checkpoints K (binomial, Anode only)
  bool keep_forward_checkpoints = false;              ///< --keep-forward-checkpoints
  int64_t memory_budget = 0;      ///< --memory-budget SIZE in bytes (0: none): an anode::MemoryPlan
  int64_t epochs = 350;           ///< --epochs N
  int64_t batch_size = 256;       ///< --batch-size N
  double lr = 0.1;                ///< --lr X (see schedules.hpp)
  std::string schedule = "step";  ///< --schedule step|onecycle
  double momentum = 0.9;          ///< --momentum X
  double weight_decay = 5e-4;     ///< --wd X
  std::string device = "cpu";     ///< --device cpu|cuda[:i]
  int64_t threads = 0;            ///< --threads N (0: LibTorch's default)
  Amp amp = Amp::Off;             ///< --amp off|bf16|fp16 (amp.hpp)
  bool channels_last = false;     ///< --channels-last (LibTorch >= 2.0)
  int64_t workers = 2;            ///< --workers N (loader threads; 0 loads on the main thread)
  int64_t limit = 0;              ///< --limit N (first N training images; 0: all)
  int64_t test_limit = 0;         ///< --test-limit N (first N test images; 0: all)
  uint64_t seed = 0;              ///< --seed N
  std::string out = "runs/cifar";  ///< --out DIR (checkpoint.pt, log.csv)
  bool resume = false;             ///< --resume (from OUT/checkpoint.pt)
  std::string evaluate;            ///< --evaluate CHECKPOINT (test only)
  std::string gradient_gap;        ///< --gradient-gap CHECKPOINT (the adjoint's gradient error)
  int64_t gap_batches = 4;         ///< --gap-batches N
  bool progress = true;            ///< --no-progress turns the progress bar off
  bool help = false;               ///< --help
  bool augment = true;             ///< --no-augment turns random crop and flip off
  // Data parallelism (needs anode built with c10d, ANODE_WITH_DISTRIBUTED).
  int64_t nproc_per_node = 1;  ///< --nproc-per-node N (start N local ranks)
  bool sync_bn = false;        ///< --sync-bn (BatchNorm statistics over all ranks)
  double dist_timeout = 300;   ///< --dist-timeout S (seconds a rendezvous or collective may wait)
  std::string backend;         ///< --backend gloo|nccl (empty: by device)
  bool float64 = false;        ///< --float64 (weights and images in double: exactness checks)
  double bucket_cap_mb = 25;   ///< --bucket-cap-mb X (gradient all-reduce bucket size)
  bool log_steps = false;      ///< --log-steps (every step's loss, full precision, on stdout)
  int64_t world_size = 1;      ///< not an option: the ranks of this run (main sets it)

  /// The model this configuration describes, for a dataset of `num_classes` classes.
  ModelSpec model_spec() const {
    ModelSpec m;
    m.network = network;
    m.num_classes = layout(dataset).num_classes;
    m.width = width;
    m.blocks = blocks;
    m.ode = anode::ODEBlockOptions().method(method);
    // An adaptive method chooses its own steps: --nt is for the fixed-step ones.
    if (!anode::tableau(method).adaptive()) m.ode.steps(nt);
    m.ode.gradient(gradient)
        .checkpoints(checkpoints)
        .keep_forward_checkpoints(keep_forward_checkpoints);
    return m;
  }
};

namespace detail {

/// "2,2,2,2" as 4 integers >= 1; empty when it is not that.
inline std::vector<int64_t> parse_blocks(const std::string& v) {
  std::vector<int64_t> blocks;
  std::stringstream ss(v);
  for (std::string item; std::getline(ss, item, ',');) {
    int64_t n = 0;
    if (!cli_checks::parse_integer(item, 1, n)) return {};
    blocks.push_back(n);
  }
  if (blocks.size() != 4) return {};
  return blocks;
}

/// "resnet, sqnxt, alexnet, resnet4 or resnet10".
inline std::string network_list() {
  const auto& names = network_names();
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

/// Declares anode-cifar's options on `app`, writing into `c`.
inline void add_options(CLI::App& app, Config& c) {
  using namespace cli_checks;
  // The last of a repeated option wins; --help shows each option's default.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.option_defaults()->always_capture_default();

  app.option_defaults()->group("data");

  app.add_option("--data", c.data,
                 "folder with data_batch_{1..5}.bin + test_batch.bin (CIFAR-10) or train.bin + "
                 "test.bin (CIFAR-100), or its parent")
      ->required()
      ->check(NonEmpty("a directory"));
  add_parsed(app, "--dataset", c.dataset, kind_from_string, "cifar10 | cifar100",
             to_string(c.dataset));
  app.add_option("--limit", c.limit, "train on the first N training images only (0: all)")
      ->transform(IntegerAtLeast(0));
  app.add_option("--test-limit", c.test_limit, "test on the first N test images only (0: all)")
      ->transform(IntegerAtLeast(0));
  app.add_option("--workers", c.workers, "data-loading threads (0: on the main thread)")
      ->transform(IntegerAtLeast(0));
  app.add_flag_function(
         "--no-augment", [&c](int64_t) { c.augment = false; },
         "no random crop or flip (otherwise drawn per image from seed, epoch and image)")
      ->check(NoValue());

  app.option_defaults()->group("model");
  app.add_option("--network", c.network,
                 network_list() +
                     " (resnet: ResNet18-ODE, sqnxt: SqNxt-23-ODE; the others: the "
                     "ANODE paper's table)")
      ->check(CLI::Validator(
          [](std::string& v) {
            return is_network(v) ? std::string() : "needs " + network_list() + ", got '" + v + "'";
          },
          ""));
  app.add_option("--width", c.width, "channel multiplier (e.g. 0.25 for quick CPU runs)")
      ->check(NumberAbove(0.0));
  app.add_option_function<std::string>(
         "--blocks", [&c](const std::string& v) { c.blocks = parse_blocks(v); },
         "blocks per stage [resnet 2,2,2,2; sqnxt 6,6,8,1; others fixed]")
      ->type_name("A,B,C,D")
      ->check(CLI::Validator(
          [](std::string& v) {
            return parse_blocks(v).empty()
                       ? "needs 4 comma-separated integers >= 1, got '" + v + "'"
                       : std::string();
          },
          ""));

  app.option_defaults()->group("ODE solver");
  add_parsed(app, "--method", c.method, anode::method_from_string,
             "euler | rk2 | rk4 (fixed steps, --nt) | bosh3 | dopri5 | tsit5 (adaptive)",
             anode::to_string(c.method));
  app.add_option("--nt", c.nt, "time steps per ODE block")->transform(IntegerAtLeast(1));
  add_parsed(app, "--gradient", c.gradient, anode::gradient_from_string,
             "anode | backprop | adjoint", anode::to_string(c.gradient));
  app.add_option("--checkpoints", c.checkpoints,
                 "anode only: keep K states per block (binomial); 0 keeps all")
      ->type_name("K")
      ->transform(IntegerAtLeast(0));
  app.add_flag("--keep-forward-checkpoints", c.keep_forward_checkpoints,
               "with --checkpoints: store them in the forward pass (faster, K states per block "
               "instead of K in all)")
      ->check(NoValue());
  // CLI11's size parser: 512MiB, 6GiB (powers of 1024), 2GB (powers of 1000), or bytes.
  app.add_option("--memory-budget", c.memory_budget,
                 "anode only: bytes one training step may use (e.g. 512MiB, 6GiB): the ODE blocks "
                 "share an anode::MemoryPlan, which decides per block what to keep and recompute "
                 "(on CUDA it measures with anode's CUDA meter, LibTorch 2.1 or later)")
      ->type_name("SIZE")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/true));

  app.option_defaults()->group("training");
  app.add_option("--epochs", c.epochs, "epochs")->transform(IntegerAtLeast(1));
  app.add_option("--batch-size", c.batch_size, "batch size")->transform(IntegerAtLeast(1));
  app.add_option(
         "--lr", c.lr,
         "learning rate; with --schedule step, /10 after 150/350 and again after 250/350 of the "
         "epochs "
         "(the official schedule, scaled)")
      ->check(NumberAbove(0.0));
  app.add_option("--schedule", c.schedule,
                 "step: the official schedule (--lr, /10 twice, per epoch); onecycle: per batch, "
                 "linear from --lr/10 up to --lr over the first 15 % of the run, then linear down "
                 "to 0 (for short runs, e.g. on a GPU)")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v == "step" || v == "onecycle" ? std::string()
                                                  : "needs step or onecycle, got '" + v + "'";
          },
          ""));
  app.add_option("--momentum", c.momentum, "SGD momentum")
      ->check(NumberAbove(0.0, /*inclusive=*/true));
  app.add_option("--wd", c.weight_decay, "weight decay")
      ->check(NumberAbove(0.0, /*inclusive=*/true));
  app.add_option("--seed", c.seed, "seed of initialisation, data order and augmentation")
      ->transform(IntegerAtLeast(0));
  app.add_option("--device", c.device, "cpu | cuda | cuda:I")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v == "cpu" || v.rfind("cuda", 0) == 0
                       ? std::string()
                       : "needs cpu, cuda or cuda:I, got '" + v + "'";
          },
          ""));
  app.add_option("--threads", c.threads, "intra-op threads (0: LibTorch's default)")
      ->transform(IntegerAtLeast(0));
  add_parsed(app, "--amp", c.amp, amp_from_string,
             "off | bf16 (autocast, CPU or CUDA) | fp16 (autocast with dynamic loss scaling, "
             "CUDA only): the precision of the forward pass and loss",
             to_string(c.amp));
  app.add_flag("--channels-last", c.channels_last,
               "images and convolution weights in channels-last (NHWC) order (LibTorch >= 2.0)")
      ->check(NoValue());

  app.option_defaults()->group("data parallel (see docs/cifar.md)");
  app.add_option("--nproc-per-node", c.nproc_per_node,
                 "start N ranks on this machine (or launch the program N times with RANK, "
                 "WORLD_SIZE, MASTER_ADDR, MASTER_PORT set, as torchrun does); --batch-size is "
                 "per rank")
      ->transform(IntegerAtLeast(1));
  app.add_flag("--sync-bn", c.sync_bn, "BatchNorm statistics over the batches of all ranks")
      ->check(NoValue());
  app.add_flag("--float64", c.float64,
               "train in double precision (to compare runs to round-off, e.g. 2 ranks x batch b "
               "with one process x batch 2b)")
      ->check(NoValue());
  app.add_option("--bucket-cap-mb", c.bucket_cap_mb,
                 "largest gradient bucket (MiB); smaller buckets start all-reducing earlier in "
                 "backward")
      ->check(CLI::Range(0.001, 1024.0));
  app.add_option("--dist-timeout", c.dist_timeout,
                 "seconds the rendezvous or a collective may wait for the other ranks")
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--backend", c.backend, "gloo | nccl (default: nccl on CUDA, else gloo)")
      ->check(CLI::IsMember({"gloo", "nccl"}));

  app.option_defaults()->group("output");
  app.add_option("--out", c.out, "log.csv and checkpoint.pt go here")
      ->type_name("DIR")
      ->check(NonEmpty("a directory"));
  app.add_flag("--resume", c.resume, "continue from OUT/checkpoint.pt (same options required)")
      ->check(NoValue());
  app.add_option("--evaluate", c.evaluate, "only evaluate the checkpoint FILE on the test set")
      ->type_name("FILE")
      ->check(NonEmpty("a file"));
  app.add_option("--gradient-gap", c.gradient_gap,
                 "only compare the Adjoint's and Backprop's gradients with Anode's (exact) at the "
                 "weights of checkpoint FILE, on the first --gap-batches training batches")
      ->type_name("FILE")
      ->check(NonEmpty("a file"));
  app.add_option("--gap-batches", c.gap_batches, "batches --gradient-gap compares on")
      ->transform(IntegerAtLeast(1));
  app.add_flag_function(
         "--no-progress", [&c](int64_t) { c.progress = false; }, "no progress bar")
      ->check(NoValue());
  app.add_flag("--log-steps", c.log_steps,
               "print every training step's loss (the global batch's) with 10 digits")
      ->check(NoValue());
}

}  // namespace detail

/// The usage text (`--help`), generated by CLI11 from the options.
inline std::string usage() {
  Config c;
  CLI::App app(kDescription, "anode-cifar");
  detail::add_options(app, c);
  return app.help();
}

/// Parses the arguments (without the program name). Throws UsageError on any mistake.
inline Config parse_args(const std::vector<std::string>& args) {
  Config c;
  CLI::App app(kDescription, "anode-cifar");
  detail::add_options(app, c);
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));  // CLI11 takes them reversed
  } catch (const CLI::CallForHelp&) {
    c.help = true;
    return c;
  } catch (const CLI::ParseError& e) {
    throw UsageError(cli_checks::message(e));
  }
  if (!c.blocks.empty() && !takes_blocks(c.network))
    throw UsageError("option --blocks: network " + c.network +
                     " has a fixed layout (see docs/paper_networks.md); leave --blocks out");
  if (c.checkpoints > 0 && c.gradient != anode::Gradient::Anode)
    throw UsageError("option --checkpoints " + std::to_string(c.checkpoints) +
                     " needs --gradient anode, got --gradient " + anode::to_string(c.gradient));
  if (c.memory_budget < 0)
    throw UsageError("option --memory-budget must be > 0, got " + std::to_string(c.memory_budget));
  if (c.memory_budget > 0 && c.gradient != anode::Gradient::Anode)
    throw UsageError(std::string("option --memory-budget needs --gradient anode, got --gradient ") +
                     anode::to_string(c.gradient));
  if (c.memory_budget > 0 && (c.checkpoints > 0 || c.keep_forward_checkpoints))
    throw UsageError(
        "option --memory-budget decides what --checkpoints and "
        "--keep-forward-checkpoints would; leave them out");
  if (c.keep_forward_checkpoints && c.checkpoints == 0)
    throw UsageError("option --keep-forward-checkpoints needs --checkpoints K >= 1");
  const std::string precision_error = precision_options_error(c.amp, c.device, c.channels_last);
  if (!precision_error.empty()) throw UsageError(precision_error);
  if (c.resume && !c.evaluate.empty())
    throw UsageError("options --resume and --evaluate exclude each other");
  if (!c.gradient_gap.empty() && (c.resume || !c.evaluate.empty()))
    throw UsageError("option --gradient-gap excludes --resume and --evaluate");
  return c;
}

}  // namespace cifar
