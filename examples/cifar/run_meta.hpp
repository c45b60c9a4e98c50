#pragma once
// The settings a checkpoint records (its meta), the check that a resumed run agrees with them,
// and the Config that --evaluate and --gradient-gap rebuild the checkpoint's model from.

#include "examples/cifar/checkpoint.hpp"
#include "examples/cifar/config.hpp"

#include <c10/util/Exception.h>

#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace cifar {

/// The settings a checkpoint records. The ones in `resume_keys()` must agree when resuming.
inline Meta run_meta(const Config& c) {
  auto num = [](double x) {
    std::ostringstream os;
    os << std::setprecision(17) << x;
    return os.str();
  };
  std::string blocks;
  for (auto b : c.blocks.empty() ? default_blocks(c.network) : c.blocks)
    blocks += (blocks.empty() ? "" : ",") + std::to_string(b);
  return {{"network", c.network},
          {"dataset", to_string(c.dataset)},
          {"width", num(c.width)},
          {"blocks", blocks},
          {"method", anode::to_string(c.method)},
          {"nt", std::to_string(c.nt)},
          {"gradient", anode::to_string(c.gradient)},
          {"checkpoints", std::to_string(c.checkpoints)},
          {"batch-size", std::to_string(c.batch_size)},
          {"lr", num(c.lr)},
          {"schedule", c.schedule},
          {"momentum", num(c.momentum)},
          {"wd", num(c.weight_decay)},
          {"seed", std::to_string(c.seed)},
          {"limit", std::to_string(c.limit)},
          {"amp", to_string(c.amp)},
          {"epochs", std::to_string(c.epochs)},
          {"augment", c.augment ? "1" : "0"},
          {"world-size", std::to_string(c.world_size)},
          {"sync-bn", c.sync_bn ? "1" : "0"},
          {"float64", c.float64 ? "1" : "0"}};
}

/// Settings a resumed run must share with the checkpoint (--epochs, --device, --threads and
/// --workers may change; a different --epochs changes the schedule's milestones).
inline const std::vector<std::string>& resume_keys() {
  static const std::vector<std::string> keys{
      "network",     "dataset",    "width",   "blocks",     "method",  "nt",     "gradient",
      "checkpoints", "batch-size", "lr",      "momentum",   "wd",      "seed",   "limit",
      "schedule",    "amp",        "augment", "world-size", "sync-bn", "float64"};
  return keys;
}

/// Throws, naming the first setting that differs, unless a run with meta `now` may resume the
/// checkpoint `file` written with meta `saved`.
inline void check_resumable(const Meta& saved, const Meta& now, const std::string& file) {
  for (const auto& k : resume_keys()) {
    const auto it = saved.find(k);
    // Checkpoints from before --schedule existed were all trained with the step schedule, those
    // from before --amp in fp32, those from before data parallelism in one process, augmented,
    // without --sync-bn.
    const std::string was = it != saved.end()                  ? it->second
                            : k == "schedule"                  ? "step"
                            : k == "amp"                       ? "off"
                            : k == "augment"                   ? "1"
                            : k == "world-size"                ? "1"
                            : k == "sync-bn" || k == "float64" ? "0"
                                                               : "?";
    TORCH_CHECK(was == now.at(k), "cifar: --resume: checkpoint '", file, "' was written with --", k,
                " ", was, ", but this run has --", k, " ", now.at(k),
                "; use the same settings or another --out");
  }
}

/// A Config carrying the architecture and solver recorded in a checkpoint's meta (for --evaluate).
inline Config config_from_meta(Config c, const Meta& m) {
  auto get = [&](const std::string& k) {
    auto it = m.find(k);
    TORCH_CHECK(it != m.end(), "cifar: the checkpoint has no '", k, "' setting");
    return it->second;
  };
  c.network = get("network");
  c.dataset = kind_from_string(get("dataset"));
  c.width = std::stod(get("width"));
  c.blocks.clear();
  std::stringstream ss(get("blocks"));
  for (std::string b; std::getline(ss, b, ',');) c.blocks.push_back(std::stoll(b));
  c.method = anode::method_from_string(get("method"));
  c.nt = std::stoll(get("nt"));
  c.gradient = anode::gradient_from_string(get("gradient"));
  c.checkpoints = std::stoll(get("checkpoints"));
  return c;
}

}  // namespace cifar
