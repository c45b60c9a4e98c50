#pragma once
// Timing statistics for the benchmarks: quantiles of repeated runs, and a runner that times a
// callable after a warm-up. Torch-free, so it is tested on its own
// (tests/benchmarks/test_harness.cpp).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace anode {
namespace bench {

/// The `q`-quantile (0 <= q <= 1) of `samples` by linear interpolation between order statistics
/// (Hyndman & Fan type 7, numpy's and R's default): q = 0.5 is the median, the mean of the two
/// middle values for an even count. Throws on an empty sample or q outside [0, 1].
inline double quantile(std::vector<double> samples, double q) {
  if (samples.empty()) throw std::invalid_argument("anode::bench::quantile: no samples");
  if (!(q >= 0.0 && q <= 1.0))
    throw std::invalid_argument("anode::bench::quantile: q must lie in [0, 1], got " +
                                std::to_string(q));
  std::sort(samples.begin(), samples.end());
  const double pos = q * static_cast<double>(samples.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, samples.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return samples[lo] + frac * (samples[hi] - samples[lo]);
}

/// Summary of repeated measurements.
struct Summary {
  std::size_t n = 0;    ///< number of samples
  double min = 0.0;     ///< smallest sample
  double q25 = 0.0;     ///< first quartile
  double median = 0.0;  ///< the figure the benchmarks report
  double q75 = 0.0;     ///< third quartile
  double max = 0.0;     ///< largest sample
  double mean = 0.0;    ///< arithmetic mean (sensitive to outliers: prefer the median)
  /// Interquartile range relative to the median: a noise indicator (0 when perfectly steady).
  double relative_iqr() const { return median != 0.0 ? (q75 - q25) / median : 0.0; }
};

/// Summarizes `samples` (at least one).
inline Summary summarize(const std::vector<double>& samples) {
  if (samples.empty()) throw std::invalid_argument("anode::bench::summarize: no samples");
  Summary s;
  s.n = samples.size();
  s.min = *std::min_element(samples.begin(), samples.end());
  s.max = *std::max_element(samples.begin(), samples.end());
  s.q25 = quantile(samples, 0.25);
  s.median = quantile(samples, 0.5);
  s.q75 = quantile(samples, 0.75);
  double sum = 0.0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  return s;
}

/// How many times to run a measured callable.
struct TimingOptions {
  /// Untimed runs first (allocator warm-up, lazy initialisation, caches).
  int warmup = 1;
  /// Timed runs at least.
  int repeats = 5;
  /// Keep repeating (up to `max_repeats`) until the timed runs add up to this many seconds.
  double min_seconds = 0.0;
  /// Upper bound on the timed runs when `min_seconds` asks for more.
  int max_repeats = 100;
};

/// Runs `fn` `opts.warmup` times untimed, then times it `opts.repeats` times (more while the total
/// is under `opts.min_seconds`, at most `opts.max_repeats`) with `Clock` (steady by default; a
/// test may pass a fake one). Returns the durations in seconds, in run order. `fn` must finish its
/// work before returning (synchronize a CUDA stream inside it).
template <class Clock = std::chrono::steady_clock, class Fn>
std::vector<double> time_runs(Fn&& fn, const TimingOptions& opts = {}) {
  if (opts.warmup < 0 || opts.repeats < 1 || opts.max_repeats < opts.repeats)
    throw std::invalid_argument(
        "anode::bench::time_runs: need warmup >= 0 and 1 <= repeats <= max_repeats, got warmup=" +
        std::to_string(opts.warmup) + " repeats=" + std::to_string(opts.repeats) +
        " max_repeats=" + std::to_string(opts.max_repeats));
  for (int i = 0; i < opts.warmup; ++i) fn();
  std::vector<double> seconds;
  double total = 0.0;
  while (static_cast<int>(seconds.size()) < opts.repeats ||
         (total < opts.min_seconds && static_cast<int>(seconds.size()) < opts.max_repeats)) {
    const auto start = Clock::now();
    fn();
    const auto stop = Clock::now();
    const double s = std::chrono::duration<double>(stop - start).count();
    seconds.push_back(s);
    total += s;
  }
  return seconds;
}

}  // namespace bench
}  // namespace anode
