// anode-cifar: trains ResNet18-ODE or SqueezeNext-23-ODE on CIFAR-10/100 with anode's ODE blocks,
// the C++ counterpart of the official ANODE train.py. See docs/cifar.md.
//
//   anode-cifar --data data/cifar-10-batches-bin --network resnet --width 0.25 --epochs 5
//   anode-cifar --data DIR --out runs/r18 --resume          # continue after Ctrl-C or a crash
//   anode-cifar --data DIR --evaluate runs/r18/checkpoint.pt
//   anode-cifar --data DIR --gradient-gap runs/r18/checkpoint.pt   # the adjoint's gradient error
//   anode-cifar --data DIR --nproc-per-node 2 --batch-size 64 --sync-bn  # data parallel, 2 ranks

#include "examples/cifar/gradient_gap.hpp"
#include "examples/cifar/launch.hpp"
#include "examples/cifar/trainer.hpp"

#include <torch/torch.h>
#include <anode/memory.hpp>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};

// First Ctrl-C: finish the current batch, save, exit. Second: the default action (exit now); the
// checkpoint on disk is still whole, since it is only ever replaced by a rename.
extern "C" void on_sigint(int) {
  g_stop.store(true);
  std::signal(SIGINT, SIG_DFL);
}

int evaluate(const cifar::Config& cli) {
  const auto meta = cifar::read_meta(cli.evaluate);
  cifar::Config c = cifar::config_from_meta(cli, meta);
  c.limit = 0;
  auto test = cifar::load_split(c.data, c.dataset, /*train=*/false);
  // The trainer wants a training split; the test split stands in, it is never trained on.
  cifar::Trainer trainer(c, test, test);
  trainer.load_weights(c.evaluate);
  std::cout << "checkpoint " << c.evaluate << ": ";
  trainer.model().pretty_print(std::cout);
  std::cout << "\n";
  const auto e = trainer.evaluate(trainer.test_split(), &g_stop);
  if (e.interrupted) return 130;
  std::cout << std::fixed << std::setprecision(4) << "test loss " << e.loss << "  accuracy "
            << std::setprecision(2) << 100 * e.accuracy << "% on " << e.images << " images\n";
  return 0;
}

// The reverse-time adjoint's gradient error at a checkpoint's weights (docs/paper_table.md uses it
// to explain how far the adjoint's accuracy falls behind ANODE's).
int gradient_gap(const cifar::Config& cli) {
  const auto meta = cifar::read_meta(cli.gradient_gap);
  cifar::Config c = cifar::config_from_meta(cli, meta);
  c.limit = 0;
  auto train_split = cifar::load_split(c.data, c.dataset, /*train=*/true);
  cifar::Trainer trainer(c, train_split, train_split.first(1));
  trainer.load_weights(c.gradient_gap);
  std::cout << "checkpoint " << c.gradient_gap << ": ";
  trainer.model().pretty_print(std::cout);
  std::cout << "\nbatchnorm,batch,mode,loss,rel_err_all,rel_err_ode_blocks,cosine\n"
            << std::setprecision(6);
  const auto batches = cifar::first_training_batches(trainer.train_split(), c.dataset, c.batch_size,
                                                     c.seed, c.gap_batches);
  for (const bool bn_train : {true, false}) {
    for (const auto& r :
         cifar::gradient_gap(trainer.model(), c.model_spec().ode, batches, bn_train))
      std::cout << (bn_train ? "batch-stats," : "running-stats,") << r.batch << "," << r.mode << ","
                << r.loss << "," << r.rel_all << "," << r.rel_ode << "," << r.cosine << "\n";
  }
  return 0;
}

int train(cifar::Config c) {
  cifar::Trainer::GroupPtr group;
  if (cifar::launched_as_rank()) {
#ifdef ANODE_WITH_DISTRIBUTED
    const auto env = anode::dist::Environment::from_env();
    c.world_size = env.world_size;
    // One GPU per rank: --device cuda means this node's GPU LOCAL_RANK.
    if (c.device == "cuda" && env.world_size > 1)
      c.device = "cuda:" + std::to_string(env.local_rank);
    group = anode::dist::init_process_group(
        env, anode::dist::GroupOptions()
                 .backend(c.backend)
                 .device(cifar::device_of(c))
                 .timeout(std::chrono::milliseconds(static_cast<int64_t>(c.dist_timeout * 1000))));
#else
    throw cifar::UsageError(
        "WORLD_SIZE is set, but this anode-cifar was built without data parallelism (c10d and "
        "Gloo's headers: apt-get install libgloo-dev, then configure again)");
#endif
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto train_split = cifar::load_split(c.data, c.dataset, /*train=*/true);
  auto test_split = cifar::load_split(c.data, c.dataset, /*train=*/false);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cifar::Trainer trainer(c, train_split, test_split, group);
  // Rank 0 speaks for the run; the others only report errors.
  std::ostringstream quiet;
  std::ostream& out = trainer.rank() == 0 ? std::cout : quiet;
  if (trainer.rank() == 0) std::filesystem::create_directories(c.out);
  out << "anode-cifar: " << cifar::to_string(c.dataset) << " " << trainer.train_split().size()
      << " train / " << trainer.test_split().size() << " test images (loaded in " << load_s
      << " s), device " << trainer.device() << ", " << torch::get_num_threads() << " threads, "
      << c.workers << " loader threads";
  if (trainer.world_size() > 1 || group != nullptr)
    out << ", " << trainer.world_size() << " ranks x batch " << c.batch_size
#ifdef ANODE_WITH_DISTRIBUTED
        << " (" << group->backend() << (c.sync_bn ? ", SyncBatchNorm" : ", per-rank BatchNorm")
        << ", " << trainer.data_parallel()->num_buckets() << " gradient buckets)"
#endif
        ;
  out << "\nmodel: ";
  trainer.model().pretty_print(out);
  out << ", " << cifar::count_parameters(trainer.model()) << " parameters\n";
  if (c.log_steps && trainer.rank() == 0)
    trainer.on_batch = [&trainer](int64_t b, double loss) {
      std::cout << "epoch " << trainer.state().epoch << " step " << b << " loss "
                << std::setprecision(10) << loss << std::defaultfloat << std::endl;
    };
  if (c.resume) {
    trainer.resume();  // every rank reads rank 0's checkpoint (a path they all see)
    out << "resumed from " << trainer.checkpoint_path() << " at epoch " << trainer.state().epoch
        << ", batch " << trainer.state().batch << "\n";
  }
  if (!trainer.fit(&g_stop, out)) {
    out << "\ninterrupted: saved " << trainer.checkpoint_path() << " (epoch "
        << trainer.state().epoch << ", batch " << trainer.state().batch
        << "); continue with the same options and --resume\n";
    return 130;
  }
  out << "done: best test accuracy " << std::fixed << std::setprecision(2)
      << 100 * trainer.state().best_acc << "%, log " << trainer.log_path() << ", checkpoint "
      << trainer.checkpoint_path() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cifar::Config config;
  try {
    config = cifar::parse_args(std::vector<std::string>(argv + 1, argv + argc));
    if (config.help) {
      std::cout << cifar::usage();
      return 0;
    }
    cifar::device_of(config);  // a bad --device is a usage error, reported before any work
  } catch (const cifar::UsageError& e) {
    std::cerr << "anode-cifar: " << e.what() << "\n\n" << cifar::usage();
    return 2;
  }
  const bool as_rank = cifar::launched_as_rank();
  if ((as_rank || config.nproc_per_node > 1) &&
      (!config.evaluate.empty() || !config.gradient_gap.empty())) {
    std::cerr << "anode-cifar: --evaluate and --gradient-gap run in one process; leave out "
                 "--nproc-per-node (and WORLD_SIZE)\n";
    return 2;
  }
  if (!as_rank && config.nproc_per_node > 1) {
#ifdef ANODE_WITH_DISTRIBUTED
    return cifar::launch_local(static_cast<int>(config.nproc_per_node), argv, config.dist_timeout);
#else
    std::cerr << "anode-cifar: --nproc-per-node needs data parallelism, which this build lacks "
                 "(c10d and Gloo's headers: apt-get install libgloo-dev, then configure again)\n";
    return 2;
#endif
  }
  anode::memory::install_cpu_meter();  // before any tensor, so the peaks count everything
  if (config.threads > 0) torch::set_num_threads(static_cast<int>(config.threads));
  std::signal(SIGINT, on_sigint);
  try {
    if (!config.gradient_gap.empty()) return gradient_gap(config);
    return config.evaluate.empty() ? train(config) : evaluate(config);
  } catch (const c10::Error& e) {
    const char* rank = std::getenv("RANK");
    std::cerr << "anode-cifar: " << (as_rank && rank ? std::string("rank ") + rank + ": " : "")
              << e.what_without_backtrace() << "\n";
    // A failed rank must not wait in destructors on peers that are gone (Gloo's threads).
    if (as_rank) {
      std::cerr.flush();
      std::cout.flush();
      std::_Exit(1);
    }
  } catch (const cifar::UsageError& e) {
    std::cerr << "anode-cifar: " << e.what() << "\n\n" << cifar::usage();
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "anode-cifar: " << e.what() << "\n";
  }
  return 1;
}
