#pragma once
// A one-line progress bar for an epoch: position, running loss and accuracy, images per second and
// the time left. On a terminal the line is redrawn in place (at most 5 times a second); otherwise
// (a log file under nohup) a line is written at every 10% so the log stays short.

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>

namespace cifar {

/// "1h02m03s", "4m05s", "6s".
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  const int64_t h = s / 3600, m = (s / 60) % 60;
  s %= 60;
  std::ostringstream os;
  if (h > 0) os << h << 'h' << std::setw(2) << std::setfill('0');
  if (h > 0 || m > 0) os << m << 'm' << std::setw(2) << std::setfill('0');
  os << s << 's';
  return os.str();
}

class ProgressBar {
 public:
  /// `total` batches, of which `done` were done before this bar started (a resumed epoch).
  ProgressBar(std::ostream& out, std::string label, int64_t total, int64_t done = 0,
              bool enabled = true, bool tty = isatty(fileno(stderr)) != 0)
      : out_(out),
        label_(std::move(label)),
        total_(total),
        start_done_(done),
        enabled_(enabled),
        tty_(tty),
        start_(Clock::now()),
        last_draw_(start_) {}

  /// Reports `done` batches finished in all, `images` images since this bar started.
  void update(int64_t done, int64_t images, double loss, double acc) {
    done_ = done;
    images_ = images;
    loss_ = loss;
    acc_ = acc;
    if (!enabled_) return;
    const auto now = Clock::now();
    if (tty_) {
      if (done < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
      out_ << '\r' << line() << "\x1b[K" << std::flush;
    } else {
      const int64_t decile = total_ > 0 ? (10 * done) / total_ : 10;
      if (decile == last_decile_ && done < total_) return;
      last_decile_ = decile;
      out_ << line() << '\n' << std::flush;
    }
    last_draw_ = now;
  }

  /// Ends the line (terminal) so that the next output starts on a fresh one.
  void finish() {
    if (enabled_ && tty_) out_ << '\n' << std::flush;
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double images_per_second() const {
    const double s = seconds();
    return s > 0 ? static_cast<double>(images_) / s : 0.0;
  }

  /// The bar's text: "label [#####.....]  45% 180/391 | loss 1.2345 acc 55.20% | 812 img/s | ETA".
  std::string line() const {
    constexpr int kWidth = 24;
    const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1;
    const int filled = static_cast<int>(frac * kWidth);
    std::ostringstream os;
    os << label_ << " [" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
       << std::setw(3) << static_cast<int>(100 * frac) << "% " << done_ << '/' << total_
       << std::fixed << std::setprecision(4) << " | loss " << loss_ << std::setprecision(2)
       << " acc " << 100 * acc_ << "% | " << std::setprecision(0) << images_per_second()
       << " img/s | ";
    const int64_t batches = done_ - start_done_;
    if (done_ >= total_) {
      os << "took " << format_duration(seconds());
    } else if (batches > 0) {
      const double per_batch = seconds() / static_cast<double>(batches);
      os << "ETA " << format_duration(per_batch * static_cast<double>(total_ - done_));
    } else {
      os << "ETA ?";
    }
    return os.str();
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream& out_;
  std::string label_;
  int64_t total_, start_done_;
  bool enabled_, tty_;
  Clock::time_point start_, last_draw_;
  int64_t done_ = 0, images_ = 0, last_decile_ = -1;
  double loss_ = 0, acc_ = 0;
};

}  // namespace cifar
