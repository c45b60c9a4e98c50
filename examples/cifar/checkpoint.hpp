#pragma once
// Training checkpoints: model, optimizer, random-generator state, the position in the run (epoch
// and batch, so that an interrupted epoch resumes where it stopped) and the run's settings. Written
// atomically: the archive goes to a temporary file in the same directory that is then renamed over
// the old checkpoint, so a crash or a second Ctrl-C never leaves a torn file behind.

#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>

namespace cifar {

/// Where a run stands.
struct TrainState {
  int64_t epoch = 1;    ///< the (1-based) epoch in progress or next to run
  int64_t batch = 0;    ///< batches of that epoch already trained
  double loss_sum = 0;  ///< sum of the per-image training loss over those batches
  int64_t correct = 0;  ///< correctly classified training images over those batches
  int64_t seen = 0;     ///< training images over those batches
  double seconds = 0;   ///< training time spent on that epoch so far
  double best_acc = 0;  ///< best test accuracy of the run so far
};

/// The run's settings as text, key -> value (see `run_meta` in trainer.hpp).
using Meta = std::map<std::string, std::string>;

namespace detail {

inline void write_rng(torch::serialize::OutputArchive& a, const std::string& key,
                      const c10::Device& device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  a.write(key, gen.get_state());
}

inline void read_rng(torch::serialize::InputArchive& a, const std::string& key,
                     const c10::Device& device) {
  torch::Tensor state;
  if (!a.try_read(key, state)) return;
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

inline std::string join_keys(const Meta& meta) {
  std::string keys;
  for (const auto& kv : meta) keys += (keys.empty() ? "" : ",") + kv.first;
  return keys;
}

/// Whether a module has any parameter or buffer, itself or below. Module::save writes an empty
/// archive for one that has none (a ReLU or max-pooling layer inside a Sequential), and such an
/// archive is not there when read back.
inline bool has_state(const torch::nn::Module& module) {
  return !module.parameters().empty() || !module.buffers().empty();
}

/// Module::load, except that children without parameters or buffers are skipped (Module::load
/// requires an archive for every child, which a stateless child does not get; see has_state).
inline void load_module(torch::nn::Module& module, torch::serialize::InputArchive& archive) {
  for (auto& p : module.named_parameters(/*recurse=*/false)) archive.read(p.key(), p.value());
  for (auto& b : module.named_buffers(/*recurse=*/false))
    archive.read(b.key(), b.value(), /*is_buffer=*/true);
  for (const auto& child : module.named_children()) {
    if (!has_state(*child.value())) continue;
    torch::serialize::InputArchive sub;
    archive.read(child.key(), sub);
    load_module(*child.value(), sub);
  }
}

/// Checks that every parameter and buffer of `module` has the same shape in `archive` (written by
/// Module::save, one nested archive per child). Module::load would otherwise silently replace a
/// tensor by one of another shape, leaving a model that fails (or, worse, runs) much later.
inline void check_shapes(const torch::nn::Module& module, torch::serialize::InputArchive& archive,
                         const std::string& prefix, const std::string& path) {
  auto check = [&](const std::string& key, const torch::Tensor& t, bool is_buffer) {
    torch::Tensor saved;
    TORCH_CHECK(archive.try_read(key, saved, is_buffer), "cifar: checkpoint '", path,
                "' does not fit this model: it has no ", is_buffer ? "buffer '" : "parameter '",
                prefix, key, "' (different network, width or blocks?)");
    TORCH_CHECK(saved.sizes() == t.sizes(), "cifar: checkpoint '", path,
                "' does not fit this model: '", prefix, key, "' has shape ", saved.sizes(),
                " there and ", t.sizes(), " here (different network, width or blocks?)");
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) check(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) check(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    if (!has_state(*child.value())) continue;  // not in the archive (see load_module)
    torch::serialize::InputArchive sub;
    TORCH_CHECK(archive.try_read(child.key(), sub), "cifar: checkpoint '", path,
                "' does not fit this model: it has no module '", prefix, child.key(),
                "' (different network, width or blocks?)");
    check_shapes(*child.value(), sub, prefix + child.key() + ".", path);
  }
}

}  // namespace detail

/// Writes the checkpoint to `path` atomically (temporary file + rename). `extra`, when set, writes
/// more entries into the archive (the fp16 loss scaler's state).
inline void save_checkpoint(
    const std::string& path, const torch::nn::Module& model,
    const torch::optim::Optimizer& optimizer, const TrainState& s, const Meta& meta,
    const c10::Device& device,
    const std::function<void(torch::serialize::OutputArchive&)>& extra = nullptr) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optim_archive;
  model.save(model_archive);
  optimizer.save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  detail::write_rng(archive, "rng/cpu", c10::Device(c10::DeviceType::CPU));
  if (!device.is_cpu()) detail::write_rng(archive, "rng/device", device);
  archive.write("state/epoch", s.epoch);
  archive.write("state/batch", s.batch);
  archive.write("state/loss_sum", s.loss_sum);
  archive.write("state/correct", s.correct);
  archive.write("state/seen", s.seen);
  archive.write("state/seconds", s.seconds);
  archive.write("state/best_acc", s.best_acc);
  archive.write("meta/keys", detail::join_keys(meta));
  for (const auto& kv : meta) archive.write("meta/" + kv.first, kv.second);
  if (extra) extra(archive);

  namespace fs = std::filesystem;
  const fs::path final_path(path);
  if (final_path.has_parent_path()) fs::create_directories(final_path.parent_path());
  const fs::path tmp = final_path.string() + ".tmp";
  archive.save_to(tmp.string());
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  TORCH_CHECK(!ec, "cifar: cannot move the checkpoint '", tmp.string(), "' to '", path,
              "': ", ec.message());
}

/// Reads only the settings a checkpoint was written with (to build the model it holds).
inline Meta read_meta(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cifar: checkpoint '", path, "' not found");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cifar: '", path,
                "' is not a readable checkpoint: ", e.what_without_backtrace());
  }
  c10::IValue v;
  TORCH_CHECK(archive.try_read("meta/keys", v), "cifar: '", path,
              "' is not an anode-cifar checkpoint (no meta/keys)");
  Meta meta;
  std::stringstream keys(v.toStringRef());
  for (std::string k; std::getline(keys, k, ',');) {
    c10::IValue value;
    archive.read("meta/" + k, value);
    meta[k] = value.toStringRef();
  }
  return meta;
}

/// Loads model weights (and, when given, the optimizer, the run state and the generators) from a
/// checkpoint written by `save_checkpoint` for the same architecture. `extra`, when set, reads what
/// save_checkpoint's `extra` wrote (with the run state only).
inline void load_checkpoint(
    const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
    TrainState* state, const c10::Device& device,
    const std::function<void(torch::serialize::InputArchive&)>& extra = nullptr) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cifar: checkpoint '", path, "' not found");
  torch::serialize::InputArchive archive;
  archive.load_from(path, device);
  torch::serialize::InputArchive model_archive;
  archive.read("model", model_archive);
  detail::check_shapes(model, model_archive, "", path);
  detail::load_module(model, model_archive);
  if (optimizer != nullptr) {
    torch::serialize::InputArchive optim_archive;
    archive.read("optimizer", optim_archive);
    optimizer->load(optim_archive);
  }
  if (state != nullptr) {
    c10::IValue v;
    auto read_int = [&](const char* key) {
      archive.read(key, v);
      return v.toInt();
    };
    auto read_double = [&](const char* key) {
      archive.read(key, v);
      return v.toDouble();
    };
    state->epoch = read_int("state/epoch");
    state->batch = read_int("state/batch");
    state->loss_sum = read_double("state/loss_sum");
    state->correct = read_int("state/correct");
    state->seen = read_int("state/seen");
    state->seconds = read_double("state/seconds");
    state->best_acc = read_double("state/best_acc");
    detail::read_rng(archive, "rng/cpu", c10::Device(c10::DeviceType::CPU));
    if (!device.is_cpu()) detail::read_rng(archive, "rng/device", device);
    if (extra) extra(archive);
  }
}

}  // namespace cifar
