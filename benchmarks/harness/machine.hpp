#pragma once
// What a benchmark ran on: CPU, cores, load, LibTorch version and build, threads, compiler, date.
// Printed as `# key=value` metadata in front of every CSV, so that each figure carries the
// conditions it was measured under.

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "csv.hpp"

#include <ctime>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(ANODE_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#endif

namespace anode {
namespace bench {

/// The 1-minute load average from /proc/loadavg (-1 where unavailable). On a shared machine a
/// load above the thread count means the timings are noisy.
inline double load_average_1min() {
  std::ifstream f("/proc/loadavg");
  double v = -1.0;
  if (f) f >> v;
  return f ? v : -1.0;
}

/// "model name" from /proc/cpuinfo, or "unknown".
inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown";
}

/// Now, in UTC, as ISO 8601 ("2024-05-01T12:00:00Z").
inline std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// The `KEY=value` entry of LibTorch's build settings (at::show_config()), or "unknown".
inline std::string torch_build_setting(const std::string& key) {
  const std::string cfg = at::show_config();
  const auto pos = cfg.find(key + "=");
  if (pos == std::string::npos) return "unknown";
  const auto start = pos + key.size() + 1;
  const auto end = cfg.find_first_of(",\n", start);
  return cfg.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

/// Ordered key/value description of the machine and the build.
inline std::vector<std::pair<std::string, std::string>> machine_info() {
  std::vector<std::pair<std::string, std::string>> info;
  info.emplace_back("date", utc_now_iso8601());
  info.emplace_back("cpu", cpu_model());
  info.emplace_back("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
  info.emplace_back("torch_threads", std::to_string(at::get_num_threads()));
  info.emplace_back("load_avg_1min", format_number(load_average_1min()));
  info.emplace_back("libtorch", TORCH_VERSION);
  info.emplace_back("blas", torch_build_setting("BLAS_INFO"));
  info.emplace_back("parallel_backend", at::get_parallel_info().find("OpenMP") != std::string::npos
                                            ? "OpenMP"
                                            : "native");
  std::string cuda = "none";
  if (torch::cuda::is_available()) {
    cuda = std::to_string(torch::cuda::device_count()) + " device(s)";
#if defined(ANODE_WITH_CUDA)
    cuda += ": " + std::string(at::cuda::getDeviceProperties(0)->name);
#endif
  }
  info.emplace_back("cuda", cuda);
#if defined(__clang__)
  info.emplace_back("compiler", std::string("clang ") + __clang_version__);
#elif defined(__GNUC__)
  info.emplace_back("compiler", std::string("gcc ") + __VERSION__);
#else
  info.emplace_back("compiler", "unknown");
#endif
#if defined(NDEBUG)
  info.emplace_back("build", "optimized (NDEBUG)");
#else
  info.emplace_back("build", "debug (asserts on): do not trust the timings");
#endif
  return info;
}

/// Writes `machine_info()` as CSV metadata lines.
inline void write_machine_info(CsvWriter& csv) {
  for (const auto& kv : machine_info()) csv.meta(kv.first, kv.second);
}

/// Writes `machine_info()` as "key: value" lines (for human-readable output).
inline void print_machine_info(std::ostream& os) {
  for (const auto& kv : machine_info()) os << kv.first << ": " << kv.second << '\n';
}

}  // namespace bench
}  // namespace anode
