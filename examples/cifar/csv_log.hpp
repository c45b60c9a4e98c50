#pragma once
// The per-epoch CSV log. Rows are flushed as they are written, so a crashed or interrupted run
// keeps every finished epoch; on resume, rows from the epoch being resumed on are dropped first,
// so the file never holds an epoch twice.

#include <c10/util/Exception.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace cifar {

/// One row of the log.
struct EpochRecord {
  int64_t epoch = 0;
  double lr = 0;
  double train_loss = 0, train_acc = 0;
  double test_loss = 0, test_acc = 0;
  double seconds = 0;        ///< wall time of the epoch's training and evaluation
  double images_per_s = 0;   ///< training throughput
  double peak_mem_mib = -1;  ///< peak tensor memory of the training pass (MiB); -1: unknown
};

class CsvLog {
 public:
  static constexpr const char* kHeader =
      "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s,peak_mem_mib";

  /// Opens `path` for appending after keeping only its rows with epoch < `first_epoch` (all of it
  /// is dropped when first_epoch <= 1, i.e. a fresh run).
  CsvLog(const std::string& path, int64_t first_epoch) : path_(path) {
    std::vector<std::string> keep;
    if (first_epoch > 1 && std::filesystem::exists(path)) {
      std::ifstream in(path);
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty() || line == kHeader) continue;
        try {
          if (std::stoll(line.substr(0, line.find(','))) < first_epoch) keep.push_back(line);
        } catch (const std::exception&) {
          // A torn last line from a crash: drop it.
        }
      }
    }
    std::ofstream out(path, std::ios::trunc);
    TORCH_CHECK(out, "cifar: cannot write the log '", path, "'");
    out << kHeader << '\n';
    for (const auto& l : keep) out << l << '\n';
  }

  void write(const EpochRecord& r) {
    std::ofstream out(path_, std::ios::app);
    TORCH_CHECK(out, "cifar: cannot append to the log '", path_, "'");
    out << format(r) << '\n';
    out.flush();
  }

  static std::string format(const EpochRecord& r) {
    std::ostringstream os;
    os << r.epoch << ',' << std::setprecision(6) << r.lr << ',' << std::fixed
       << std::setprecision(5) << r.train_loss << ',' << r.train_acc << ',' << r.test_loss << ','
       << r.test_acc << ',' << std::setprecision(2) << r.seconds << ',' << std::setprecision(1)
       << r.images_per_s << ',' << r.peak_mem_mib;
    return os.str();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace cifar
