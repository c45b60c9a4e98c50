#pragma once
// Builds either network from a name, for the command line and the checkpoint loader.

#include "examples/cifar/classifier.hpp"
#include "examples/cifar/paper_nets.hpp"
#include "examples/cifar/resnet_ode.hpp"
#include "examples/cifar/sqnxt_ode.hpp"

#include <anode/options.hpp>

#include <memory>
#include <string>
#include <vector>

namespace cifar {

/// Everything that determines a model's architecture and solver.
struct ModelSpec {
  std::string network = "resnet";  ///< one of network_names()
  int64_t num_classes = 10;
  double width = 1.0;
  std::vector<int64_t> blocks;  ///< empty: the network's default
  anode::ODEBlockOptions ode;
};

/// The names `make_model` accepts, in the order the usage text lists them.
inline const std::vector<std::string>& network_names() {
  static const std::vector<std::string> names{"resnet", "sqnxt", "alexnet", "resnet4", "resnet10"};
  return names;
}

/// Whether `make_model` builds a network of this name.
inline bool is_network(const std::string& name) {
  for (const auto& n : network_names())
    if (n == name) return true;
  return false;
}

/// Whether the network takes `--blocks` (blocks per stage); the paper's three have fixed layouts.
inline bool takes_blocks(const std::string& name) {
  return name == "resnet" || name == "sqnxt";
}

/// The blocks per stage a network uses when none are given.
inline std::vector<int64_t> default_blocks(const std::string& network) {
  if (network == "sqnxt") return {6, 6, 8, 1};
  if (network == "resnet") return {2, 2, 2, 2};
  return {};
}

/// Constructs the network `spec.network` names; throws on an unknown name.
inline std::shared_ptr<ClassifierImpl> make_model(const ModelSpec& spec) {
  TORCH_CHECK(spec.blocks.empty() || takes_blocks(spec.network), "network '", spec.network,
              "' has a fixed layout and takes no blocks per stage; leave --blocks out");
  const auto blocks = spec.blocks.empty() ? default_blocks(spec.network) : spec.blocks;
  if (spec.network == "resnet") {
    return std::make_shared<ResNetODEImpl>(ResNetODEOptions()
                                               .num_classes(spec.num_classes)
                                               .width(spec.width)
                                               .blocks(blocks)
                                               .ode(spec.ode));
  }
  if (spec.network == "sqnxt") {
    return std::make_shared<SqNxtODEImpl>(SqNxtODEOptions()
                                              .num_classes(spec.num_classes)
                                              .width(spec.width)
                                              .blocks(blocks)
                                              .ode(spec.ode));
  }
  const auto paper =
      PaperNetOptions().num_classes(spec.num_classes).width(spec.width).ode(spec.ode);
  if (spec.network == "alexnet") return AlexNetODE(paper).ptr();
  if (spec.network == "resnet4") return ResNet4ODE(paper).ptr();
  if (spec.network == "resnet10") return ResNet10ODE(paper).ptr();
  TORCH_CHECK(false, "unknown network '", spec.network,
              "'; expected resnet, sqnxt, alexnet, resnet4 or resnet10");
}

}  // namespace cifar
