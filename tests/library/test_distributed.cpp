// anode/distributed.hpp and anode/sync_batchnorm.hpp: data parallelism on c10d (Gloo over
// 127.0.0.1). Ranks are threads of this process, each with its own process groups over one
// TCPStore on a free port; the killed-rank test runs ranks as child processes (this program
// re-executed with ANODE_TEST_DIST_ROLE set). Every wait is bounded: Gloo's timeout, and a deadline
// after which children are killed.

#include "support/testing.hpp"

#include <anode/sync_batchnorm.hpp>

#ifdef ANODE_WITH_DISTRIBUTED
#include <anode/distributed.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace {

using anode::Gradient;
using anode_test::rel_err;
using namespace std::chrono_literals;

/// A port nobody listens on now (bound to port 0, then released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

anode::dist::Environment env_of(int64_t rank, int64_t world, int port) {
  anode::dist::Environment e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  return e;
}

/// Runs fn(rank, group) on `world` threads, one Group each; rethrows the first failure.
void run_ranks(int64_t world, const std::function<void(int64_t, anode::dist::Group&)>& fn,
               std::chrono::milliseconds timeout = 60s) {
  const int port = free_port();
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto g = anode::dist::init_process_group(env_of(r, world, port),
                                                 anode::dist::GroupOptions().timeout(timeout));
        fn(r, *g);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// The right-hand side: conv-BN-ReLU-conv-BN, as ResNet18-ODE's, with anode::SyncBatchNorm. No
// conv biases: before a BatchNorm their exact gradient is 0, and the computed one round-off noise.
class RhsImpl : public torch::nn::Cloneable<RhsImpl> {
 public:
  explicit RhsImpl(int64_t c) : c_(c) { reset(); }
  void reset() override {
    conv1 = register_module(
        "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(c_, c_, 3).padding(1).bias(false)));
    bn1 = register_module("bn1", anode::SyncBatchNorm(c_));
    conv2 = register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(c_, c_, 3).padding(1).bias(false)));
    bn2 = register_module("bn2", anode::SyncBatchNorm(c_));
  }
  torch::Tensor forward(torch::Tensor z) {
    return torch::tanh(bn2(conv2(torch::relu(bn1(conv1(z))))));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  anode::SyncBatchNorm bn1{nullptr}, bn2{nullptr};

 private:
  int64_t c_;
};
TORCH_MODULE(Rhs);

// stem conv + SyncBN, one ODE block, pooling, linear.
class NetImpl : public torch::nn::Cloneable<NetImpl> {
 public:
  explicit NetImpl(anode::ODEBlockOptions ode) : ode_(std::move(ode)) { reset(); }
  void reset() override {
    stem = register_module(
        "stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1).bias(false)));
    bn = register_module("bn", anode::SyncBatchNorm(4));
    block = register_module("block", anode::ODEBlock<RhsImpl>(Rhs(4), ode_));
    fc = register_module("fc", torch::nn::Linear(4, 3));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto h = torch::relu(bn(stem(x)));
    h = block->forward(h);
    return fc(h.mean({2, 3}));
  }
  torch::nn::Conv2d stem{nullptr};
  anode::SyncBatchNorm bn{nullptr};
  anode::ODEBlock<RhsImpl> block{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  anode::ODEBlockOptions ode_;
};
TORCH_MODULE(Net);

anode::ODEBlockOptions ode_for(const std::string& mode) {
  auto o = anode::ODEBlockOptions().method(anode::Method::RK2).steps(4);
  if (mode == "backprop") return o.gradient(Gradient::Backprop);
  if (mode == "anode") return o.gradient(Gradient::Anode);
  if (mode == "anode_checkpoints") return o.gradient(Gradient::Anode).checkpoints(2);
  return o.gradient(Gradient::Adjoint);
}

struct Data {
  torch::Tensor x, y;
};
Data make_data(int64_t n) {
  auto gen = at::detail::createCPUGenerator(1234);
  auto x = torch::randn({n, 3, 6, 6}, gen, torch::kDouble);
  auto y = torch::randint(0, 3, {n}, gen, torch::kLong);
  return {x, y};
}
/// Rank r's part of a global batch: every world-th sample from r, as DistributedSampler takes.
Data shard(const Data& d, int64_t r, int64_t world) {
  auto idx = torch::arange(r, d.x.size(0), world, torch::kLong);
  return {d.x.index_select(0, idx), d.y.index_select(0, idx)};
}

std::vector<torch::Tensor> grads_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters())
    out.push_back(p.grad().defined() ? p.grad().clone() : p.grad());
  return out;
}
std::vector<torch::Tensor> copies(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

class Distributed : public anode_test::Seeded {};

// Two ranks x batch b with SyncBatchNorm = one process on the 2b batch (plain BatchNorm
// semantics), for every gradient mode: gradients after backward, the same bits on both ranks,
// running statistics, and the parameters over several SGD steps.
class ExactGradients : public Distributed, public ::testing::WithParamInterface<std::string> {};

TEST_P(ExactGradients, TwoRanksEqualOneProcessWithTwiceTheBatch) {
  const std::string mode = GetParam();
  const int64_t world = 2, b = 4, steps = 3;
  Net reference(ode_for(mode));
  reference->to(torch::kDouble);
  Net initial = std::dynamic_pointer_cast<NetImpl>(reference->clone());
  const auto data = make_data(world * b * steps);

  // One process, batch 2b (no group: SyncBatchNorm is torch::nn::BatchNorm2d).
  std::vector<std::vector<torch::Tensor>> ref_grads, ref_params;
  torch::optim::SGD ref_opt(reference->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (int64_t s = 0; s < steps; ++s) {
    auto idx = torch::arange(s * world * b, (s + 1) * world * b, torch::kLong);
    ref_opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(
        reference->forward(data.x.index_select(0, idx)), data.y.index_select(0, idx));
    loss.backward();
    ref_grads.push_back(grads_of(*reference));
    ref_opt.step();
    ref_params.push_back(copies(reference->parameters()));
  }
  const auto ref_buffers = copies(reference->buffers());

  std::mutex mutex;
  std::vector<std::vector<std::vector<torch::Tensor>>> rank_grads(world), rank_params(world);
  std::vector<std::vector<torch::Tensor>> rank_buffers(world);
  std::vector<int64_t> replays(world), buckets(world);
  std::vector<Net> replicas;
  for (int64_t r = 0; r < world; ++r)
    replicas.push_back(std::dynamic_pointer_cast<NetImpl>(initial->clone()));
  run_ranks(world, [&](int64_t r, anode::dist::Group& g) {
    auto model = replicas[static_cast<std::size_t>(r)];
    auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
    EXPECT_EQ(anode::dist::convert_sync_batchnorm(*model, group), 3);
    // Small buckets, so that several are in flight during backward.
    anode::dist::DataParallel dp(model, group,
                                 anode::dist::DataParallelOptions().bucket_cap_mb(0.0005));
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int64_t s = 0; s < steps; ++s) {
      auto idx = torch::arange(s * world * b, (s + 1) * world * b, torch::kLong);
      const auto part = shard({data.x.index_select(0, idx), data.y.index_select(0, idx)}, r, world);
      dp.prepare();
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(part.x), part.y);
      loss.backward();
      dp.synchronize();
      auto gs = grads_of(*model);
      opt.step();
      std::lock_guard<std::mutex> lock(mutex);
      rank_grads[static_cast<std::size_t>(r)].push_back(gs);
      rank_params[static_cast<std::size_t>(r)].push_back(copies(model->parameters()));
    }
    std::lock_guard<std::mutex> lock(mutex);
    rank_buffers[static_cast<std::size_t>(r)] = copies(model->buffers());
    replays[static_cast<std::size_t>(r)] = model->block->func()->bn1->replays();
    buckets[static_cast<std::size_t>(r)] = dp.num_buckets();
  });

  EXPECT_GT(buckets[0], 2) << "the test wants several buckets";
  for (int64_t s = 0; s < steps; ++s) {
    const auto& g0 = rank_grads[0][static_cast<std::size_t>(s)];
    const auto& g1 = rank_grads[1][static_cast<std::size_t>(s)];
    const auto& gr = ref_grads[static_cast<std::size_t>(s)];
    ASSERT_EQ(g0.size(), gr.size());
    for (std::size_t i = 0; i < gr.size(); ++i) {
      ASSERT_TRUE(g0[i].defined() && g1[i].defined()) << mode << " step " << s << " param " << i;
      EXPECT_TRUE(torch::equal(g0[i], g1[i]))
          << mode << ": ranks differ, step " << s << " param " << i;
      EXPECT_LE(rel_err(g0[i], gr[i]), 1e-10) << mode << " step " << s << " param " << i;
    }
    const auto& p0 = rank_params[0][static_cast<std::size_t>(s)];
    const auto& p1 = rank_params[1][static_cast<std::size_t>(s)];
    for (std::size_t i = 0; i < p0.size(); ++i) {
      EXPECT_TRUE(torch::equal(p0[i], p1[i])) << mode << ": parameters differ, step " << s;
      EXPECT_LE(rel_err(p0[i], ref_params[static_cast<std::size_t>(s)][i]), 1e-10) << mode;
    }
  }
  for (std::size_t i = 0; i < ref_buffers.size(); ++i) {
    EXPECT_TRUE(torch::equal(rank_buffers[0][i], rank_buffers[1][i])) << mode << " buffer " << i;
    if (ref_buffers[i].is_floating_point()) {
      EXPECT_LE(rel_err(rank_buffers[0][i], ref_buffers[i]), 1e-10) << mode << " buffer " << i;
    } else {
      EXPECT_TRUE(torch::equal(rank_buffers[0][i], ref_buffers[i])) << mode << " buffer " << i;
    }
  }
  // Anode's recompute replays the forward's statistics (no second collective); the others never.
  if (mode.rfind("anode", 0) == 0) {
    EXPECT_GT(replays[0], 0) << mode;
  } else {
    EXPECT_EQ(replays[0], 0) << mode;
  }
}
INSTANTIATE_TEST_SUITE_P(Modes, ExactGradients,
                         ::testing::Values("backprop", "anode", "anode_checkpoints", "adjoint"));

// Without overlap (all buckets after backward) the result is the same bits.
TEST_F(Distributed, OverlapOffGivesTheSameGradients) {
  Net net(ode_for("anode"));
  net->to(torch::kDouble);
  const auto data = make_data(8);
  std::vector<std::vector<std::vector<torch::Tensor>>> got(
      2, std::vector<std::vector<torch::Tensor>>(2));
  std::mutex mutex;
  for (int overlap = 0; overlap < 2; ++overlap) {
    std::vector<Net> replicas{std::dynamic_pointer_cast<NetImpl>(net->clone()),
                              std::dynamic_pointer_cast<NetImpl>(net->clone())};
    run_ranks(2, [&](int64_t r, anode::dist::Group& g) {
      auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
      auto model = replicas[static_cast<std::size_t>(r)];
      anode::dist::convert_sync_batchnorm(*model, group);
      anode::dist::DataParallel dp(
          model, group, anode::dist::DataParallelOptions().bucket_cap_mb(0.0005).overlap(overlap));
      const auto part = shard(data, r, 2);
      dp.prepare();
      torch::nn::functional::cross_entropy(model->forward(part.x), part.y).backward();
      dp.synchronize();
      EXPECT_EQ(dp.last_stats().launched_in_backward > 0, overlap == 1);
      std::lock_guard<std::mutex> lock(mutex);
      got[static_cast<std::size_t>(overlap)][static_cast<std::size_t>(r)] = grads_of(*model);
    });
  }
  for (std::size_t i = 0; i < got[0][0].size(); ++i) {
    EXPECT_TRUE(torch::equal(got[0][0][i], got[1][0][i])) << "param " << i;
    EXPECT_TRUE(torch::equal(got[0][1][i], got[1][1][i])) << "param " << i;
  }
}

// Weights loaded after construction (Tensor::set_, as torch::load and InputArchive::read do) give
// the parameters new gradient accumulators; prepare() hooks those, so backward still overlaps.
TEST_F(Distributed, WeightsLoadedLaterStayHooked) {
  Net net(ode_for("backprop"));
  net->to(torch::kDouble);
  const auto data = make_data(8);
  std::vector<Net> replicas{std::dynamic_pointer_cast<NetImpl>(net->clone()),
                            std::dynamic_pointer_cast<NetImpl>(net->clone())};
  std::mutex mutex;
  std::vector<std::vector<torch::Tensor>> got(2);
  run_ranks(2, [&](int64_t r, anode::dist::Group& g) {
    auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
    auto model = replicas[static_cast<std::size_t>(r)];
    anode::dist::DataParallel dp(model, group,
                                 anode::dist::DataParallelOptions().bucket_cap_mb(0.0005));
    auto p0 = model->parameters()[0];
    const auto before = torch::autograd::impl::grad_accumulator(p0);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.set_(p.detach().clone());
    }
    EXPECT_NE(torch::autograd::impl::grad_accumulator(p0), before) << "set_ kept the accumulator";
    const auto part = shard(data, r, 2);
    dp.prepare();
    torch::nn::functional::cross_entropy(model->forward(part.x), part.y).backward();
    dp.synchronize();
    EXPECT_EQ(dp.last_stats().launched_in_backward, dp.num_buckets());
    std::lock_guard<std::mutex> lock(mutex);
    got[static_cast<std::size_t>(r)] = grads_of(*model);
  });
  for (std::size_t i = 0; i < got[0].size(); ++i) EXPECT_TRUE(torch::equal(got[0][i], got[1][i]));
}

// Rank 0's parameters and buffers reach every rank at construction.
TEST_F(Distributed, BroadcastsRankZerosStateAtStart) {
  Net net(ode_for("backprop"));
  std::vector<Net> replicas;
  for (int r = 0; r < 3; ++r) {
    replicas.push_back(std::dynamic_pointer_cast<NetImpl>(net->clone()));
    torch::NoGradGuard no_grad;
    for (auto& p : replicas.back()->parameters()) p.add_(static_cast<double>(r));
    for (auto& b : replicas.back()->buffers()) b.add_(r);
  }
  const auto expected_p = copies(replicas[0]->parameters());
  const auto expected_b = copies(replicas[0]->buffers());
  ASSERT_FALSE(torch::equal(replicas[1]->parameters()[0], expected_p[0]));
  run_ranks(3, [&](int64_t r, anode::dist::Group& g) {
    auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
    anode::dist::DataParallel dp(replicas[static_cast<std::size_t>(r)], group);
  });
  for (int r = 0; r < 3; ++r) {
    const auto ps = replicas[static_cast<std::size_t>(r)]->parameters();
    const auto bs = replicas[static_cast<std::size_t>(r)]->buffers();
    for (std::size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(torch::equal(ps[i], expected_p[i]));
    for (std::size_t i = 0; i < bs.size(); ++i) EXPECT_TRUE(torch::equal(bs[i], expected_b[i]));
  }
}

// Different models on two ranks: a clear error, not a broadcast of the wrong bytes.
TEST_F(Distributed, DifferentModelsAreAnError) {
  auto a = std::make_shared<torch::nn::LinearImpl>(3, 4);
  auto b = std::make_shared<torch::nn::LinearImpl>(4, 3);
  std::vector<std::shared_ptr<torch::nn::Module>> models{a, b};
  std::string error = "(no error)";
  try {
    run_ranks(2, [&](int64_t r, anode::dist::Group& g) {
      auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
      anode::dist::DataParallel dp(models[static_cast<std::size_t>(r)], group);
    });
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  EXPECT_NE(error.find("differ from rank 0's"), std::string::npos) << error;
}

// A replayed SyncBatchNorm call whose input differs from the forward's raises.
TEST_F(Distributed, ReplayOfDifferentInputRaises) {
  run_ranks(2, [&](int64_t r, anode::dist::Group& g) {
    auto group = std::shared_ptr<anode::dist::Group>(&g, [](anode::dist::Group*) {});
    anode::SyncBatchNorm bn(3);
    bn->to(torch::kDouble);
    bn->set_group(group);
    auto x = torch::randn({4, 3, 2, 2}, torch::kDouble) + static_cast<double>(r);
    auto nbt = bn->num_batches_tracked.clone();
    bn->forward(x);
    EXPECT_EQ(bn->collectives(), 1);
    bn->num_batches_tracked.copy_(nbt);  // what anode's recompute does
    bn->forward(x);                      // replayed: no collective
    EXPECT_EQ(bn->replays(), 1);
    bn->num_batches_tracked.copy_(nbt);
    try {
      bn->forward(x + 1);
      ADD_FAILURE() << "no error";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("local statistics differ"), std::string::npos);
    }
  });
}

// --- bad environments fail fast -----------------------------------------------------------------

class ScopedEnv {
 public:
  explicit ScopedEnv(std::vector<std::pair<std::string, const char*>> vars) {
    for (auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved_.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      if (v != nullptr) {
        ::setenv(k.c_str(), v, 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
  }
  ~ScopedEnv() {
    for (auto& [k, v] : saved_) {
      if (v) {
        ::setenv(k.c_str(), v->c_str(), 1);
      } else {
        ::unsetenv(k.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "(no error)";
}

TEST_F(Distributed, BadEnvironmentsFailFast) {
  const auto t0 = std::chrono::steady_clock::now();
  {
    ScopedEnv env({{"RANK", "2"},
                   {"WORLD_SIZE", "2"},
                   {"MASTER_ADDR", "127.0.0.1"},
                   {"MASTER_PORT", "29500"}});
    EXPECT_NE(error_of([] {
                anode::dist::Environment::from_env();
              }).find("RANK must be in [0, WORLD_SIZE = 2), got 2"),
              std::string::npos);
  }
  {
    ScopedEnv env(
        {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", nullptr}, {"MASTER_PORT", "29500"}});
    EXPECT_NE(error_of([] { anode::dist::Environment::from_env(); }).find("MASTER_ADDR is not set"),
              std::string::npos);
  }
  {
    ScopedEnv env({{"RANK", "0"}, {"WORLD_SIZE", nullptr}});
    EXPECT_NE(error_of([] { anode::dist::Environment::from_env(); }).find("WORLD_SIZE is not set"),
              std::string::npos);
  }
  {
    ScopedEnv env({{"RANK", "x"}, {"WORLD_SIZE", "2"}});
    EXPECT_NE(error_of([] { anode::dist::Environment::from_env(); }).find("must be an integer"),
              std::string::npos);
  }
  {
    ScopedEnv env({{"RANK", "0"},
                   {"WORLD_SIZE", "2"},
                   {"MASTER_ADDR", "127.0.0.1"},
                   {"MASTER_PORT", "70000"}});
    EXPECT_NE(error_of([] { anode::dist::Environment::from_env(); }).find("MASTER_PORT must be"),
              std::string::npos);
  }
  // An unreachable master: rank 1 gives up within the timeout, saying so.
  const auto e = error_of([] {
    anode::dist::init_process_group(env_of(1, 2, free_port()),
                                    anode::dist::GroupOptions().timeout(2s));
  });
  EXPECT_NE(e.find("cannot reach rank 0's rendezvous store"), std::string::npos) << e;
  // A port in use on rank 0.
  const int port = free_port();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::listen(fd, 1);
  const auto busy = error_of([port] {
    anode::dist::init_process_group(env_of(0, 2, port), anode::dist::GroupOptions().timeout(2s));
  });
  ::close(fd);
  EXPECT_NE(busy.find("cannot serve the rendezvous store"), std::string::npos) << busy;
  // Unknown backend, NCCL on CPU.
  EXPECT_NE(error_of([] {
              anode::dist::init_process_group(env_of(0, 1, 1),
                                              anode::dist::GroupOptions().backend("mpi"));
            }).find("unknown backend 'mpi'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              anode::dist::init_process_group(env_of(0, 1, 1),
                                              anode::dist::GroupOptions().backend("nccl"));
            }).find("needs a CUDA device"),
            std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
}

// --- a killed rank ------------------------------------------------------------------------------

// The worker role of this program: trains a few steps; the victim (rank 1) kills itself at step 2.
TEST(DistributedWorker, Role) {
  const char* role = std::getenv("ANODE_TEST_DIST_ROLE");
  if (role == nullptr) GTEST_SKIP() << "run by KilledRankMakesTheOtherExitWithAnError";
  try {
    auto group = anode::dist::init_from_env(anode::dist::GroupOptions().timeout(20s));
    torch::manual_seed(0);
    Net model(ode_for("anode"));
    model->to(torch::kDouble);
    anode::dist::convert_sync_batchnorm(*model, group);
    anode::dist::DataParallel dp(model, group);
    const auto data = make_data(8);
    for (int step = 0; step < 50; ++step) {
      if (group->rank() == 1 && step == 2) ::raise(SIGKILL);
      dp.prepare();
      torch::nn::functional::cross_entropy(model->forward(data.x), data.y).backward();
      dp.synchronize();
    }
    // Rank 0 must not get here.
    std::cerr << "worker " << group->rank() << ": finished without error\n";
    std::_Exit(0);
  } catch (const c10::Error& e) {
    // As a program does: the message, a non-zero exit (no destructors waiting on dead peers).
    std::cerr << e.what_without_backtrace() << "\n";
    std::_Exit(1);
  }
}

TEST_F(Distributed, KilledRankMakesTheOtherExitWithAnError) {
  const int port = free_port();
  const std::string log = ::testing::TempDir() + "anode_dist_rank0_" + std::to_string(::getpid());
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::setenv("ANODE_TEST_DIST_ROLE", "worker", 1);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", "2", 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      if (r == 0) {
        std::FILE* f = std::freopen(log.c_str(), "w", stderr);
        (void)f;
      }
      ::execl("/proc/self/exe", "test_distributed", "--gtest_filter=DistributedWorker.Role",
              static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  // Both must end within the deadline; rank 0 non-zero.
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  std::vector<int> status(2, -1);
  std::vector<bool> done(2, false);
  while ((!done[0] || !done[1]) && std::chrono::steady_clock::now() < deadline) {
    for (int r = 0; r < 2; ++r) {
      if (!done[r] && ::waitpid(pids[r], &status[r], WNOHANG) == pids[r]) done[r] = true;
    }
    std::this_thread::sleep_for(50ms);
  }
  for (int r = 0; r < 2; ++r) {
    if (!done[r]) {
      ::kill(pids[r], SIGKILL);
      ::waitpid(pids[r], &status[r], 0);
    }
  }
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string out = ss.str();
  std::remove(log.c_str());
  ASSERT_TRUE(done[0]) << "rank 0 hung after rank 1 died; its output:\n" << out;
  EXPECT_TRUE(WIFSIGNALED(status[1]) && WTERMSIG(status[1]) == SIGKILL);
  EXPECT_FALSE(WIFEXITED(status[0]) && WEXITSTATUS(status[0]) == 0) << out;
  EXPECT_NE(out.find("anode::dist: rank 0 of 2: collective '"), std::string::npos) << out;
}

}  // namespace

#else  // !ANODE_WITH_DISTRIBUTED

TEST(Distributed, NotBuilt) {
  GTEST_SKIP() << "anode was configured without c10d/Gloo (ANODE_WITH_DISTRIBUTED off)";
}

#endif

// SyncBatchNorm without a group is torch::nn::BatchNorm2d, call for call (built either way).
TEST(SyncBatchNormLocal, EqualsTorchBatchNorm) {
  torch::manual_seed(0);
  anode::SyncBatchNorm ours(torch::nn::BatchNormOptions(5).momentum(0.3));
  torch::nn::BatchNorm2d theirs(torch::nn::BatchNormOptions(5).momentum(0.3));
  auto x = torch::randn({6, 5, 3, 3}, torch::requires_grad());
  for (int i = 0; i < 3; ++i) {
    auto a = ours->forward(x), b = theirs->forward(x);
    EXPECT_TRUE(torch::equal(a, b));
    auto ga = torch::autograd::grad({a.square().sum()}, {x, ours->weight})[1];
    auto gb = torch::autograd::grad({b.square().sum()}, {x, theirs->weight})[1];
    EXPECT_TRUE(torch::equal(ga, gb));
  }
  EXPECT_TRUE(torch::equal(ours->running_mean, theirs->running_mean));
  EXPECT_TRUE(torch::equal(ours->running_var, theirs->running_var));
  EXPECT_TRUE(torch::equal(ours->num_batches_tracked, theirs->num_batches_tracked));
  const auto names = ours->named_parameters().keys(),
             theirs_names = theirs->named_parameters().keys();
  EXPECT_EQ(names, theirs_names);
  EXPECT_EQ(ours->named_buffers().keys(), theirs->named_buffers().keys());
  ours->eval();
  theirs->eval();
  EXPECT_TRUE(torch::equal(ours->forward(x), theirs->forward(x)));
}
