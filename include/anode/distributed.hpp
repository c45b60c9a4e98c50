#pragma once
// Data-parallel training on c10d (LibTorch's distributed engine: TCPStore, ProcessGroupGloo on
// CPU, ProcessGroupNCCL on CUDA). Optional: needs c10d's and Gloo's headers (Debian:
// libtorch-dev + libgloo-dev); CMake defines ANODE_WITH_DISTRIBUTED when they compile. The core
// headers never include this one.
//
//   auto group = anode::dist::init_from_env();          // RANK, WORLD_SIZE, MASTER_ADDR, ...
//   anode::dist::convert_sync_batchnorm(*model, group);  // optional: global BatchNorm statistics
//   anode::dist::DataParallel dp(model, group);          // broadcasts rank 0's parameters/buffers
//   for (...) {
//     dp.prepare();                   // before the forward pass
//     loss.backward();                // buckets are all-reduced while backward runs
//     dp.synchronize();               // waits: every rank now holds the mean gradient
//     optimizer.step();
//   }
//
// LibTorch 1.13 has no C++ DistributedDataParallel, and Debian's headers cannot include c10d's
// bucketing Reducer (reducer.hpp needs distributed/autograd headers the package lacks), so the
// reducer is here, in the way DDP's communication hooks work: a post-hook on each parameter's
// AccumulateGrad node (it runs once per backward, after .grad holds the parameter's whole
// gradient) marks it ready; a bucket (parameters in reverse registration order, up to
// bucket_cap_mb) is all-reduced asynchronously on the process group as soon as all its parameters
// are ready and every earlier bucket has been launched, so all ranks issue the same collectives
// in the same order; a callback queued on the autograd engine waits for them at the end of
// backward and writes the mean back into .grad. Collectives of SyncBatchNorm run on a second
// process group, so the two streams of collectives never interleave differently on two ranks.

#include <anode/sync_batchnorm.hpp>

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef ANODE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace dist {

/// The communicator type that Gloo and NCCL implement: c10d::ProcessGroup itself before
/// LibTorch 2.0; from 2.0 on a c10d::Backend, which a ProcessGroup dispatches to by device. The
/// collectives used here (allreduce, allgather, broadcast) have the same signatures on both, so
/// anode talks to the backend directly.
#if TORCH_VERSION_MAJOR >= 2
using Communicator = c10d::Backend;
#else
using Communicator = c10d::ProcessGroup;
#endif

/// Where this process stands in the run, as torchrun and cluster schedulers say it.
struct Environment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;   ///< the rank on this node (selects the GPU with NCCL)
  std::string master_addr;  ///< host of rank 0's TCPStore
  int64_t master_port = 0;

  /// Reads RANK, WORLD_SIZE, LOCAL_RANK (default: RANK), MASTER_ADDR and MASTER_PORT, checked.
  static Environment from_env() {
    auto get = [](const char* name) -> const char* { return std::getenv(name); };
    auto integer = [&](const char* name, bool required, int64_t fallback) -> int64_t {
      const char* v = get(name);
      if (v == nullptr || *v == '\0') {
        TORCH_CHECK(!required, "anode::dist: the environment variable ", name,
                    " is not set; launch with torchrun, --nproc-per-node, or set RANK, "
                    "WORLD_SIZE, MASTER_ADDR and MASTER_PORT");
        return fallback;
      }
      char* end = nullptr;
      const long long x = std::strtoll(v, &end, 10);
      TORCH_CHECK(end != v && *end == '\0', "anode::dist: the environment variable ", name,
                  " must be an integer, got '", v, "'");
      return static_cast<int64_t>(x);
    };
    Environment e;
    e.world_size = integer("WORLD_SIZE", true, 1);
    e.rank = integer("RANK", true, 0);
    e.local_rank = integer("LOCAL_RANK", false, e.rank);
    const char* addr = get("MASTER_ADDR");
    TORCH_CHECK(addr != nullptr && *addr != '\0',
                "anode::dist: MASTER_ADDR is not set (the host of rank 0, e.g. 127.0.0.1)");
    e.master_addr = addr;
    e.master_port = integer("MASTER_PORT", true, 0);
    e.check();
    return e;
  }

  void check() const {
    TORCH_CHECK(world_size >= 1, "anode::dist: WORLD_SIZE must be >= 1, got ", world_size);
    TORCH_CHECK(rank >= 0 && rank < world_size,
                "anode::dist: RANK must be in [0, WORLD_SIZE = ", world_size, "), got ", rank);
    TORCH_CHECK(local_rank >= 0, "anode::dist: LOCAL_RANK must be >= 0, got ", local_rank);
    TORCH_CHECK(world_size == 1 || !master_addr.empty(), "anode::dist: MASTER_ADDR is empty");
    TORCH_CHECK(world_size == 1 || (master_port > 0 && master_port < 65536),
                "anode::dist: MASTER_PORT must be in 1..65535, got ", master_port);
  }
};

/// Options of init_process_group.
///
/// Example:
/// ```
/// auto group = anode::dist::init_from_env(anode::dist::GroupOptions()
///                                             .backend("gloo")
///                                             .timeout(std::chrono::seconds(60)));
/// ```
struct GroupOptions {
  /// "gloo" or "nccl"; empty: nccl when `device` is CUDA, else gloo.
  TORCH_ARG(std::string, backend) = "";
  /// The device the model and its gradients live on.
  TORCH_ARG(c10::Device, device) = c10::Device(c10::DeviceType::CPU);
  /// How long the rendezvous and any collective may wait before it fails.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::seconds(300);
  /// Gloo's worker threads per process group.
  TORCH_ARG(int, gloo_threads) = 2;
};

/// One data-parallel run's communicators: two process groups over one TCPStore, "grads" (gradient
/// buckets, broadcasts, the caller's own reductions) and "stats" (SyncBatchNorm), so that the two
/// streams of collectives are matched independently.
class Group : public StatsGroup {
 public:
  Group(Environment env, std::string backend, c10::Device device, std::chrono::milliseconds timeout,
        c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Communicator> grads,
        c10::intrusive_ptr<Communicator> stats)
      : env_(std::move(env)),
        backend_(std::move(backend)),
        device_(device),
        timeout_(timeout),
        store_(std::move(store)),
        grads_(std::move(grads)),
        stats_(std::move(stats)) {}

  int64_t rank() const override { return env_.rank; }
  int64_t size() const override { return env_.world_size; }
  int64_t local_rank() const { return env_.local_rank; }
  const Environment& environment() const { return env_; }
  const std::string& backend() const { return backend_; }
  c10::Device device() const { return device_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  Communicator& grads() { return *grads_; }
  Communicator& stats() { return *stats_; }

  /// Waits for `work`; a failure or the timeout raises an error naming this rank and `what`.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const {
    try {
      work->wait(timeout_);
    } catch (const c10::Error& e) {
      fail(what, e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(what, e.what());
    }
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& t, const char* what) override {
    std::vector<torch::Tensor> in{t.contiguous()};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int64_t r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(in[0]));
    wait(stats_->allgather(out, in), what);
    return out[0];
  }

  void all_reduce_sum(torch::Tensor& t, const char* what) override {
    TORCH_CHECK(t.is_contiguous(), "anode::dist: all_reduce_sum needs a contiguous tensor");
    std::vector<torch::Tensor> ts{t};
    wait(stats_->allreduce(ts), what);
  }

  /// Sums `t` (contiguous) over the ranks on the "grads" group, in place.
  void all_reduce_sum_grads(torch::Tensor& t, const std::string& what) {
    TORCH_CHECK(t.is_contiguous(), "anode::dist: all_reduce_sum needs a contiguous tensor");
    std::vector<torch::Tensor> ts{t};
    wait(grads_->allreduce(ts), what);
  }

  /// Copies rank `root`'s `t` (contiguous) into every rank's, on the "grads" group.
  void broadcast(torch::Tensor& t, int64_t root, const std::string& what) {
    TORCH_CHECK(t.is_contiguous(), "anode::dist: broadcast needs a contiguous tensor");
    std::vector<torch::Tensor> ts{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    wait(grads_->broadcast(ts, o), what);
  }

  /// Every rank reaches this point (or the timeout raises).
  void barrier(const std::string& what = "barrier") {
    auto t = torch::ones({1}, torch::TensorOptions().device(device_));
    all_reduce_sum_grads(t, what);
  }

 private:
  [[noreturn]] void fail(const std::string& what, const std::string& why) const {
    TORCH_CHECK(false, "anode::dist: rank ", env_.rank, " of ", env_.world_size, ": collective '",
                what, "' failed (", backend_, ", timeout ", timeout_.count() / 1000.0, " s): ", why,
                " -- another rank has probably exited or stopped; see its output");
  }

  Environment env_;
  std::string backend_;
  c10::Device device_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Communicator> grads_, stats_;
};

namespace detail {

inline bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

inline c10::intrusive_ptr<Communicator> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                  const Environment& env, const GroupOptions& o) {
  auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout());
  // Which interface Gloo binds: GLOO_SOCKET_IFNAME as PyTorch reads it; the loopback for a
  // single-host run on 127.0.0.1; else this host's name (falling back to the loopback).
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (is_loopback(env.master_addr)) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  opts->threads = o.gloo_threads();
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(env.rank),
                                                     static_cast<int>(env.world_size), opts);
}

inline c10::intrusive_ptr<Communicator> make_group(const std::string& backend,
                                                   const c10::intrusive_ptr<c10d::Store>& store,
                                                   const Environment& env, const GroupOptions& o) {
  if (backend == "gloo") return make_gloo(store, env, o);
#ifdef ANODE_WITH_NCCL
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = o.timeout();
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(env.rank),
                                                     static_cast<int>(env.world_size), opts);
#else
  TORCH_CHECK(false,
              "anode::dist: backend nccl is not available in this build (no "
              "ProcessGroupNCCL: a CPU LibTorch, or anode configured without "
              "ANODE_WITH_NCCL); use --backend gloo");
#endif
}

}  // namespace detail

/// Joins the run `env` describes: rank 0 serves a TCPStore on MASTER_ADDR:MASTER_PORT, every
/// rank connects to it and builds two process groups. Errors (a busy port, an unreachable master,
/// a rank that never comes within the timeout, an unknown backend) raise with what to do.
inline std::shared_ptr<Group> init_process_group(const Environment& env,
                                                 const GroupOptions& o = GroupOptions()) {
  env.check();
  std::string backend =
      o.backend().empty() ? (o.device().is_cuda() ? "nccl" : "gloo") : o.backend();
  TORCH_CHECK(backend == "gloo" || backend == "nccl", "anode::dist: unknown backend '", backend,
              "'; use gloo (CPU) or nccl (CUDA)");
  TORCH_CHECK(backend != "nccl" || o.device().is_cuda(),
              "anode::dist: backend nccl needs a CUDA device, the model is on ", o.device(),
              "; use gloo");
  TORCH_CHECK(o.timeout().count() > 0, "anode::dist: the timeout must be positive");
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<std::size_t>(env.world_size);
  so.waitWorkers = false;
  so.timeout = o.timeout();
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    const std::string why = dynamic_cast<const c10::Error*>(&e) != nullptr
                                ? static_cast<const c10::Error&>(e).what_without_backtrace()
                                : e.what();
    TORCH_CHECK(false, "anode::dist: rank ", env.rank, " of ", env.world_size, ": ",
                env.rank == 0 ? "cannot serve the rendezvous store on "
                              : "cannot reach rank 0's rendezvous store at ",
                env.master_addr, ":", env.master_port, " within ", o.timeout().count() / 1000.0,
                " s: ", why,
                env.rank == 0 ? " (is the port in use?)"
                              : " (is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?)");
  }
  auto make = [&](const char* prefix) {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    try {
      return detail::make_group(backend, prefixed, env, o);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "anode::dist: rank ", env.rank, " of ", env.world_size, ": building the ",
                  backend, " process group '", prefix, "' failed within ",
                  o.timeout().count() / 1000.0,
                  " s (did every rank start?): ", e.what_without_backtrace());
    }
  };
  auto grads = make("anode/grads/");
  auto stats = make("anode/stats/");
  return std::make_shared<Group>(env, backend, o.device(), o.timeout(), store, grads, stats);
}

/// init_process_group(Environment::from_env(), options).
inline std::shared_ptr<Group> init_from_env(const GroupOptions& o = GroupOptions()) {
  return init_process_group(Environment::from_env(), o);
}

/// Every anode::SyncBatchNorm of `module` takes its training statistics over `group`. Returns how
/// many there are. (LibTorch modules hold their submodules in typed members, so a torch::nn::
/// BatchNorm2d cannot be swapped for another module type: build the model with SyncBatchNorm.)
inline int64_t convert_sync_batchnorm(torch::nn::Module& module,
                                      const std::shared_ptr<Group>& group) {
  return set_sync_batchnorm_group(module, group);
}

/// Copies rank 0's `tensors` into every rank's (one broadcast per dtype), after checking that
/// every rank has the same number of tensors with the same shapes.
inline void broadcast_tensors(Group& group, const std::vector<torch::Tensor>& tensors,
                              const std::string& what) {
  torch::NoGradGuard no_grad;
  // The shapes agree? One all-gather of a small signature, so a mismatch is an error, not a
  // broadcast of the wrong bytes.
  int64_t numel = 0, hash = static_cast<int64_t>(tensors.size());
  for (const auto& t : tensors) {
    numel += t.defined() ? t.numel() : 0;
    for (auto s : t.defined() ? t.sizes() : c10::IntArrayRef{})
      hash = (hash * 1000003 + s) % (int64_t{1} << 40);
    hash = (hash * 31 + (t.defined() ? static_cast<int64_t>(t.scalar_type()) : -1)) %
           (int64_t{1} << 40);
  }
  auto sig = torch::tensor({static_cast<int64_t>(tensors.size()), numel, hash},
                           torch::TensorOptions().dtype(torch::kLong).device(group.device()));
  auto all = group.all_gather(sig, ("signature of " + what).c_str());
  for (int64_t r = 0; r < group.size(); ++r) {
    TORCH_CHECK(torch::equal(all[static_cast<std::size_t>(r)].cpu(), all[0].cpu()),
                "anode::dist: rank ", r, "'s ", what,
                " differ from rank 0's (count, elements, "
                "shape hash ",
                all[static_cast<std::size_t>(r)].cpu(), " vs ", all[0].cpu(),
                "): every rank must build the same model");
  }
  // Group by dtype, in order, and broadcast one flat buffer per dtype.
  std::vector<c10::ScalarType> types;
  for (const auto& t : tensors) {
    if (t.defined() && t.numel() > 0 &&
        std::find(types.begin(), types.end(), t.scalar_type()) == types.end())
      types.push_back(t.scalar_type());
  }
  for (auto type : types) {
    std::vector<torch::Tensor> same;
    for (const auto& t : tensors) {
      if (t.defined() && t.numel() > 0 && t.scalar_type() == type) same.push_back(t);
    }
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : same) flat_parts.push_back(t.detach().reshape({-1}));
    auto flat = torch::cat(flat_parts).to(group.device());
    group.broadcast(flat, 0, what);
    int64_t offset = 0;
    for (auto& t : same) {
      t.detach().copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
      offset += t.numel();
    }
  }
}

/// Rank 0's parameters and buffers into every rank's module.
inline void broadcast_module(Group& group, torch::nn::Module& module) {
  broadcast_tensors(group, module.parameters(), "parameters");
  broadcast_tensors(group, module.buffers(), "buffers");
}

/// Options of DataParallel.
///
/// Example:
/// ```
/// anode::dist::DataParallel dp(model, group, anode::dist::DataParallelOptions().bucket_cap_mb(4));
/// ```
struct DataParallelOptions {
  /// The largest bucket, in MiB of gradients (DDP's default, 25).
  TORCH_ARG(double, bucket_cap_mb) = 25.0;
  /// Launch each bucket's all-reduce from the gradient hooks while backward runs (true), or all of
  /// them in synchronize(), after backward (false: no overlap, for comparison).
  TORCH_ARG(bool, overlap) = true;
  /// Broadcast rank 0's parameters and buffers at construction.
  TORCH_ARG(bool, broadcast_at_start) = true;
};

/// How the last backward's communication went (times in seconds from the first gradient ready).
struct CommStats {
  int64_t buckets = 0;
  int64_t bytes = 0;
  /// Buckets whose all-reduce started before the end of backward (overlapping it).
  int64_t launched_in_backward = 0;
  /// When each bucket was launched; and when backward's computation ended (the end callback).
  std::vector<double> launch_s;
  double backward_end_s = 0;
  /// Time spent waiting for the all-reduces after backward ended (exposed communication).
  double wait_s = 0;
};

namespace detail {

/// The reducer's state, shared with the hooks (which hold it weakly).
struct ReducerState : std::enable_shared_from_this<ReducerState> {
  struct Bucket {
    std::vector<std::size_t> params;  // indices into `params`, in bucket order
    std::vector<int64_t> offsets;
    int64_t numel = 0;  // gradient elements (plus one "defined" flag per param)
    c10::ScalarType dtype = c10::ScalarType::Undefined;
    c10::Device device = c10::Device(c10::DeviceType::CPU);
    std::size_t pending = 0;
    torch::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };

  std::shared_ptr<Group> group;
  std::vector<torch::Tensor> params;
  std::vector<std::size_t> bucket_of;
  std::vector<bool> ready;
  std::vector<Bucket> buckets;
  std::size_t next_bucket = 0;
  bool in_backward = false;  // a hook fired and the end callback is queued
  bool reduced = false;      // the end callback reduced since the last synchronize()
  std::chrono::steady_clock::time_point first_ready;
  CommStats stats;

  double since_first() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - first_ready).count();
  }

  void reset() {
    std::fill(ready.begin(), ready.end(), false);
    for (auto& b : buckets) {
      b.pending = b.params.size();
      b.work.reset();
    }
    next_bucket = 0;
    in_backward = false;
  }

  void launch(std::size_t bi) {
    torch::NoGradGuard no_grad;
    auto& b = buckets[bi];
    const int64_t np = static_cast<int64_t>(b.params.size());
    b.flat = torch::zeros({b.numel + np}, torch::TensorOptions().dtype(b.dtype).device(b.device));
    for (int64_t j = 0; j < np; ++j) {
      const auto& p = params[b.params[static_cast<std::size_t>(j)]];
      const auto& g = p.grad();
      if (!g.defined()) continue;
      b.flat.narrow(0, b.offsets[static_cast<std::size_t>(j)], p.numel()).copy_(g.reshape({-1}));
      b.flat[b.numel + j] = 1;  // this rank has a gradient for it
    }
    std::vector<torch::Tensor> ts{b.flat};
    b.work = group->grads().allreduce(ts);
    stats.launch_s.push_back(since_first());
    if (in_backward) ++stats.launched_in_backward;
  }

  void launch_ready_in_order() {
    while (next_bucket < buckets.size() && buckets[next_bucket].pending == 0) launch(next_bucket++);
  }

  void mark_ready(std::size_t i) {
    if (!in_backward) {
      in_backward = true;
      first_ready = std::chrono::steady_clock::now();
      stats = CommStats();
      stats.buckets = static_cast<int64_t>(buckets.size());
      // Runs when this backward's computation is done, inside backward() (errors surface there).
      torch::autograd::Engine::get_default_engine().queue_callback(
          [self = shared_from_this()] { self->finish(); });
    }
    auto& b = buckets[bucket_of[i]];
    if (ready[i]) {
      TORCH_CHECK(bucket_of[i] >= next_bucket, "anode::dist::DataParallel: parameter ", i,
                  " received a gradient twice in one backward after its bucket was all-reduced "
                  "(a parameter reached twice through reentrant backward?); its gradient would "
                  "be wrong");
      return;
    }
    ready[i] = true;
    --b.pending;
    launch_ready_in_order();
  }

  /// Launches what is left, in order, waits, and writes the means into .grad.
  void finish() {
    torch::NoGradGuard no_grad;
    stats.backward_end_s = in_backward ? since_first() : 0;
    if (!in_backward) {
      first_ready = std::chrono::steady_clock::now();
      stats = CommStats();
      stats.buckets = static_cast<int64_t>(buckets.size());
    }
    in_backward = false;  // the buckets launched from here on did not overlap
    try {
      while (next_bucket < buckets.size()) launch(next_bucket++);
      const auto t0 = std::chrono::steady_clock::now();
      const double world = static_cast<double>(group->size());
      for (std::size_t bi = 0; bi < buckets.size(); ++bi) {
        auto& b = buckets[bi];
        group->wait(b.work, "all-reduce of gradient bucket " + std::to_string(bi) + " of " +
                                std::to_string(buckets.size()));
        stats.bytes += b.numel * static_cast<int64_t>(c10::elementSize(b.dtype));
        const auto flags = b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size()))
                               .to(torch::kCPU, torch::kDouble);
        const double* has = flags.data_ptr<double>();
        for (std::size_t j = 0; j < b.params.size(); ++j) {
          auto& p = params[b.params[j]];
          if (has[j] == 0) continue;  // no rank has a gradient for it
          auto mean = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes()).div(world);
          if (p.grad().defined()) {
            p.mutable_grad().copy_(mean);
          } else {
            p.mutable_grad() = mean.to(p.device());
          }
        }
      }
      stats.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } catch (...) {
      reset();
      throw;
    }
    reset();
    reduced = true;
  }
};

/// Post-hook on a parameter's AccumulateGrad node: .grad holds its gradient of this backward.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<ReducerState> state, std::size_t index)
      : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto s = state_.lock()) s->mark_ready(index_);
    return outputs;
  }

 private:
  std::weak_ptr<ReducerState> state_;
  std::size_t index_;
};

}  // namespace detail

/// Data-parallel training of one module replica per rank: broadcast at start, bucketed gradient
/// averaging overlapping backward, SyncBatchNorm tape resets. After synchronize() every
/// parameter's .grad is the mean over ranks of the ranks' .grad (an undefined .grad counting as
/// zero; a parameter without a gradient on every rank keeps an undefined one), the same bits on
/// every rank. One backward per synchronize() (no gradient accumulation over several backwards).
class DataParallel {
 public:
  DataParallel(std::shared_ptr<torch::nn::Module> module, std::shared_ptr<Group> group,
               DataParallelOptions options = DataParallelOptions())
      : module_(std::move(module)), options_(std::move(options)) {
    TORCH_CHECK(module_ != nullptr, "anode::dist::DataParallel: the module is null");
    TORCH_CHECK(group != nullptr, "anode::dist::DataParallel: the group is null");
    TORCH_CHECK(options_.bucket_cap_mb() > 0,
                "anode::dist::DataParallel: bucket_cap_mb must be "
                "> 0, got ",
                options_.bucket_cap_mb());
    if (options_.broadcast_at_start()) broadcast_module(*group, *module_);
    state_ = std::make_shared<detail::ReducerState>();
    state_->group = std::move(group);
    for (const auto& p : module_->parameters()) {
      if (p.requires_grad()) state_->params.push_back(p);
    }
    build_buckets();
    state_->ready.assign(state_->params.size(), false);
    state_->reset();
    if (options_.overlap()) {
      hooks_.resize(state_->params.size());
      hook_all();
    }
  }
  /// The same, for a module holder (`Net net(...); DataParallel dp(net, group);`).
  template <typename M>
  DataParallel(const torch::nn::ModuleHolder<M>& module, std::shared_ptr<Group> group,
               DataParallelOptions options = DataParallelOptions())
      : DataParallel(std::static_pointer_cast<torch::nn::Module>(module.ptr()), std::move(group),
                     std::move(options)) {}
  ~DataParallel() {
    for (auto& [acc, key] : hooks_) {
      if (acc) acc->del_post_hook(key);
    }
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Call before each training forward pass: clears SyncBatchNorm's statistics tapes, checks that
  /// the module still has the parameters this reducer averages, and hooks any gradient
  /// accumulator autograd replaced (loading weights with Tensor::set_, as torch::load and
  /// InputArchive::read do, gives a parameter a new one: without this, its gradient would still
  /// be averaged, by synchronize(), but no longer during backward).
  void prepare() {
    reset_sync_batchnorm(*module_);
    std::size_t n = 0;
    for (const auto& p : module_->parameters()) {
      if (!p.requires_grad()) continue;
      TORCH_CHECK(n < state_->params.size() &&
                      p.unsafeGetTensorImpl() == state_->params[n].unsafeGetTensorImpl(),
                  "anode::dist::DataParallel: the module's parameter ", n,
                  " is not the one this DataParallel averages (parameters were replaced or their "
                  "requires_grad changed after it was built): build the DataParallel again");
      ++n;
    }
    TORCH_CHECK(n == state_->params.size(), "anode::dist::DataParallel: the module has ", n,
                " parameters requiring grad, ", state_->params.size(),
                " when the DataParallel was built: build it again");
    if (options_.overlap()) hook_all();
  }

  /// After backward: every rank's .grad becomes the mean over ranks. With overlap the end of
  /// backward already did it (then this only returns); without, it all-reduces here.
  void synchronize() {
    if (!state_->reduced) state_->finish();
    state_->reduced = false;
  }

  /// The last backward's communication.
  const CommStats& last_stats() const { return state_->stats; }
  int64_t num_buckets() const { return static_cast<int64_t>(state_->buckets.size()); }
  Group& group() { return *state_->group; }
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

 private:
  /// Puts the ready hook on each parameter's current gradient accumulator (once).
  void hook_all() {
    for (std::size_t i = 0; i < state_->params.size(); ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(state_->params[i]);
      TORCH_CHECK(acc != nullptr, "anode::dist::DataParallel: parameter ", i,
                  " has no gradient accumulator (not a leaf?)");
      auto& [held, key] = hooks_[i];
      if (held == acc) continue;
      if (held) held->del_post_hook(key);
      key = acc->add_post_hook(std::make_unique<detail::ReadyHook>(state_, i));
      held = acc;  // keeps the accumulator alive, so the hook stays
    }
  }

  void build_buckets() {
    auto& s = *state_;
    const double cap = options_.bucket_cap_mb() * 1024.0 * 1024.0;
    s.bucket_of.assign(s.params.size(), 0);
    // Reverse registration order: roughly the order backward produces the gradients.
    for (std::size_t k = s.params.size(); k-- > 0;) {
      const auto& p = s.params[k];
      const double bytes = static_cast<double>(p.numel() * static_cast<int64_t>(p.element_size()));
      bool fits = !s.buckets.empty() && s.buckets.back().dtype == p.scalar_type() &&
                  s.buckets.back().device == p.device();
      if (fits) {
        const auto& b = s.buckets.back();
        fits = static_cast<double>(b.numel * static_cast<int64_t>(p.element_size())) + bytes <= cap;
      }
      if (!fits) {
        detail::ReducerState::Bucket b;
        b.dtype = p.scalar_type();
        b.device = p.device();
        s.buckets.push_back(std::move(b));
      }
      auto& b = s.buckets.back();
      b.params.push_back(k);
      b.offsets.push_back(b.numel);
      b.numel += p.numel();
      s.bucket_of[k] = s.buckets.size() - 1;
    }
  }

  std::shared_ptr<torch::nn::Module> module_;
  DataParallelOptions options_;
  std::shared_ptr<detail::ReducerState> state_;
  // std::shared_ptr<Node> before LibTorch 2.1, c10::intrusive_ptr<Node> since.
  using NodePtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<torch::Tensor>()));
  std::vector<std::pair<NodePtr, uintptr_t>> hooks_;
};

}  // namespace dist
}  // namespace anode
