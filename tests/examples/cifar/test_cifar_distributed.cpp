// anode-cifar data parallel, end to end on synthetic data: `--nproc-per-node 2 --batch-size b`
// equals one process with `--batch-size 2b` (--sync-bn --no-augment --float64, same seed): every
// step's loss to 1e-9 and the same CSV rows (train loss, test accuracy); a bad environment is an
// error at start. Bounded: every run has a timeout (coreutils `timeout`).

#include "examples/cifar/synthetic.hpp"
#include "support/remove_tree.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(ANODE_WITH_DISTRIBUTED) && defined(ANODE_CIFAR_EXE)

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CifarDistributed : public ::testing::Test {
 protected:
  void SetUp() override {
    dir =
        std::filesystem::temp_directory_path() / ("anode_cifar_dist_" + std::to_string(::getpid()));
    anode_test::remove_tree(dir);
    cifar::write_synthetic(dir / "data", cifar::Kind::Cifar10, 40, 12, 5);
  }
  void TearDown() override { anode_test::remove_tree(dir); }

  /// Runs anode-cifar with `args` (and `env` before it); returns the exit status, output in `out`.
  int run(const std::string& env, const std::string& args, const std::string& name,
          std::string* out) {
    const auto log = dir / (name + ".txt");
    const std::string cmd = env + " timeout -k 5 120 " + std::string(ANODE_CIFAR_EXE) + " --data " +
                            (dir / "data").string() + " --out " + (dir / name).string() + " " +
                            args + " > " + log.string() + " 2>&1";
    const int status = std::system(cmd.c_str());
    *out = slurp(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  }

  std::filesystem::path dir;
};

std::vector<double> step_losses(const std::string& out) {
  std::vector<double> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    const auto p = line.find(" loss ");
    if (line.rfind("epoch ", 0) == 0 && line.find(" step ") != std::string::npos &&
        p != std::string::npos)
      v.push_back(std::stod(line.substr(p + 6)));
  }
  return v;
}

std::vector<std::string> csv_rows(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> rows;
  for (std::string l; std::getline(in, l);) {
    size_t pos = 0;  // epoch, lr, train loss, train acc, test loss, test acc
    for (int k = 0; k < 6; ++k) pos = l.find(',', pos) + 1;
    rows.push_back(l.substr(0, pos));
  }
  return rows;
}

TEST_F(CifarDistributed, TwoRanksEqualOneProcessWithTwiceTheBatch) {
  // 40 images, global batch 12: the last batch (4) splits 2 + 2.
  const std::string common =
      "--network resnet --width 0.0625 --epochs 2 --seed 7 --sync-bn --no-augment --float64 "
      "--threads 1 --workers 0 --no-progress --log-steps --dist-timeout 60";
  std::string one, two;
  ASSERT_EQ(run("", common + " --batch-size 12", "one", &one), 0) << one;
  ASSERT_EQ(
      run("", common + " --batch-size 6 --nproc-per-node 2 --bucket-cap-mb 0.01", "two", &two), 0)
      << two;
  EXPECT_NE(two.find("2 ranks x batch 6 (gloo, SyncBatchNorm"), std::string::npos) << two;
  const auto a = step_losses(one), b = step_losses(two);
  ASSERT_EQ(a.size(), 8u) << one;
  ASSERT_EQ(b.size(), a.size()) << two;
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_LE(std::abs(a[i] - b[i]), 1e-9 * std::abs(a[i])) << "step " << i;
  EXPECT_EQ(csv_rows(dir / "one" / "log.csv"), csv_rows(dir / "two" / "log.csv"));
  EXPECT_TRUE(std::filesystem::exists(dir / "two" / "checkpoint.pt"));
}

TEST_F(CifarDistributed, BadEnvironmentIsAnErrorAtStart) {
  std::string out;
  EXPECT_EQ(run("RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999", "--epochs 1",
                "bad_rank", &out),
            1);
  EXPECT_NE(out.find("RANK must be in [0, WORLD_SIZE = 2), got 2"), std::string::npos) << out;
  EXPECT_EQ(run("RANK=0 WORLD_SIZE=2 MASTER_PORT=29999", "--epochs 1", "no_addr", &out), 1);
  EXPECT_NE(out.find("MASTER_ADDR is not set"), std::string::npos) << out;
  // Rank 1 of 2 with nobody serving the store: gives up after --dist-timeout.
  EXPECT_EQ(run("RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1", "--dist-timeout 2",
                "no_master", &out),
            1);
  EXPECT_NE(out.find("cannot reach rank 0's rendezvous store"), std::string::npos) << out;
  // The last global batch must give every rank an image.
  EXPECT_NE(run("", "--limit 27 --batch-size 13 --nproc-per-node 2 --epochs 1", "tail", &out), 0);
  EXPECT_NE(out.find("fewer than the 2 ranks"), std::string::npos) << out;
}

// A rank killed mid-run: the other fails on its next collective, naming it; the launcher exits
// non-zero (well within --dist-timeout here: Gloo sees the closed connection) and leaves nothing
// running.
TEST_F(CifarDistributed, KilledRankFailsTheRun) {
  const auto log = dir / "killed.txt";
  const pid_t launcher = ::fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    std::FILE* f = std::freopen(log.c_str(), "w", stdout);
    (void)f;
    ::dup2(::fileno(stdout), 2);
    const std::string data = (dir / "data").string(), out = (dir / "killed").string();
    ::execl(ANODE_CIFAR_EXE, "anode-cifar", "--data", data.c_str(), "--out", out.c_str(),
            "--network", "resnet", "--width", "0.0625", "--epochs", "50", "--batch-size", "4",
            "--nproc-per-node", "2", "--threads", "1", "--workers", "0", "--no-progress",
            "--log-steps", "--dist-timeout", "30", static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto since = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Rank 1 is the launcher's second child; kill it once training runs.
  pid_t victim = -1;
  while (since() < 60 && victim < 0) {
    if (slurp(log).find("epoch 1 step 1 ") != std::string::npos) {
      std::ifstream children("/proc/" + std::to_string(launcher) + "/task/" +
                             std::to_string(launcher) + "/children");
      pid_t a = -1, b = -1;
      children >> a >> b;
      victim = b;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(victim, 0) << slurp(log);
  ::kill(victim, SIGKILL);
  int status = 0;
  bool done = false;
  while (since() < 120 && !done) {
    done = ::waitpid(launcher, &status, WNOHANG) == launcher;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!done) {
    ::kill(launcher, SIGKILL);  // its children die with it (PR_SET_PDEATHSIG)
    ::waitpid(launcher, &status, 0);
  }
  const std::string out = slurp(log);
  ASSERT_TRUE(done) << "the launcher hung after rank 1 was killed:\n" << out;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_NE(out.find("rank 1 was killed by signal 9"), std::string::npos) << out;
  EXPECT_NE(out.find("anode-cifar: rank 0: anode::dist: rank 0 of 2: collective '"),
            std::string::npos)
      << out;
}

}  // namespace

#else

TEST(CifarDistributed, NotBuilt) {
  GTEST_SKIP() << "anode-cifar was built without data parallelism (ANODE_WITH_DISTRIBUTED)";
}

#endif
