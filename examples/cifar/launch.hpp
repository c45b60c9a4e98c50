#pragma once
// anode-cifar --nproc-per-node N: starts N ranks of this program on this machine, as torchrun
// does for one node: each child is this executable with the same arguments and RANK, LOCAL_RANK,
// WORLD_SIZE, MASTER_ADDR (127.0.0.1 unless set) and MASTER_PORT (a free port unless set) in its
// environment. The launcher waits for all of them. When one fails, the others get the
// collective timeout (plus a grace period) to fail in turn, then are killed: the launcher never
// hangs, and exits with the first failure's status. Children die with the launcher
// (PR_SET_PDEATHSIG). Ctrl-C in a terminal reaches every rank (one process group); the launcher
// ignores it and waits for them to save and exit. POSIX (Linux) only.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace cifar {

/// Whether this process is a rank of a data-parallel run (its environment has WORLD_SIZE).
inline bool launched_as_rank() {
  const char* w = std::getenv("WORLD_SIZE");
  return w != nullptr && *w != '\0';
}

/// A TCP port on 127.0.0.1 that nobody listens on now.
inline int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot bind a socket to find a free port");
  return ntohs(a.sin_port);
}

namespace detail {
inline std::vector<pid_t>& launched_children() {
  static std::vector<pid_t> pids;
  return pids;
}
inline void forward_sigterm(int sig) {
  for (pid_t p : launched_children()) ::kill(p, sig);
}
}  // namespace detail

/// Runs `n` ranks of the program `argv` (argv[0] is not used: /proc/self/exe is) and waits.
/// `timeout_s`: the collective timeout of the ranks. Returns the exit status for main.
inline int launch_local(int n, char** argv, double timeout_s) {
  const char* addr = std::getenv("MASTER_ADDR");
  const char* port = std::getenv("MASTER_PORT");
  const std::string master_addr = addr != nullptr && *addr != '\0' ? addr : "127.0.0.1";
  const std::string master_port =
      port != nullptr && *port != '\0' ? port : std::to_string(free_local_port());
  std::signal(SIGINT, SIG_IGN);  // the ranks get the terminal's Ctrl-C themselves
  std::signal(SIGTERM, detail::forward_sigterm);
  auto& pids = detail::launched_children();
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::cerr << "anode-cifar: fork failed: " << std::strerror(errno) << "\n";
      for (pid_t p : pids) ::kill(p, SIGKILL);
      return 1;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", master_port.c_str(), 1);
      ::execv("/proc/self/exe", argv);
      std::cerr << "anode-cifar: cannot re-execute /proc/self/exe: " << std::strerror(errno)
                << "\n";
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  std::cerr << "anode-cifar: started " << n << " ranks (MASTER_ADDR " << master_addr
            << ", MASTER_PORT " << master_port << ")\n";
  int first_failure = 0;
  std::vector<bool> done(pids.size(), false);
  std::size_t running = pids.size();
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    for (std::size_t r = 0; r < pids.size(); ++r) {
      int status = 0;
      if (done[r] || ::waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      done[r] = true;
      --running;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0) {
        std::cerr << "anode-cifar: rank " << r << " "
                  << (WIFEXITED(status)
                          ? "exited with status " + std::to_string(code)
                          : "was killed by signal " + std::to_string(WTERMSIG(status)))
                  << "\n";
        if (first_failure == 0) {
          first_failure = code;
          // The others should fail within their collective timeout; then they are killed.
          deadline = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000) + 10000);
        }
      }
    }
    if (running > 0 && std::chrono::steady_clock::now() > deadline) {
      for (std::size_t r = 0; r < pids.size(); ++r) {
        if (done[r]) continue;
        std::cerr << "anode-cifar: rank " << r << " still running " << timeout_s
                  << " s after a failure: killing it\n";
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], nullptr, 0);
        done[r] = true;
        --running;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  pids.clear();
  return first_failure;
}

}  // namespace cifar
