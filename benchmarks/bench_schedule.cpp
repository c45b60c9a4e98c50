// How long the binomial (Revolve) schedule takes to generate, for the step counts and checkpoint
// budgets a solve meets. Generation runs once per backward pass, so it must stay far below the
// cost of the steps it schedules. (Moved here from a unit test: tests assert no timings.)
//
//   bench_schedule [--reps 1000]

#include "harness/cli.hpp"

#include <anode/gradient/schedule.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>

namespace sch = anode::schedule;

int main(int argc, char** argv) {
  try {
    anode::bench::Cli cli("How long the binomial (Revolve) schedule takes to generate.",
                          "bench_schedule");
    int64_t reps = 1000;
    cli.option("--reps", reps, "generations timed per small case");
    if (!cli.parse(argc, argv)) return 0;
    using Clock = std::chrono::steady_clock;
    auto micros = [](Clock::duration d) {
      return std::chrono::duration<double, std::micro>(d).count();
    };
    std::cout << "steps,checkpoints,microseconds,backward_actions\n";
    for (int64_t k : {1, 4, 8, 63}) {
      std::size_t actions = 0;
      const auto start = Clock::now();
      for (int64_t i = 0; i < reps; ++i) actions = sch::binomial_schedule(64, k).backward.size();
      std::cout << 64 << "," << k << "," << micros(Clock::now() - start) / static_cast<double>(reps)
                << "," << actions << "\n";
    }
    for (int64_t k : {0, 1, 4, 16, 64}) {
      const auto start = Clock::now();
      const auto s = sch::binomial_schedule(10000, k);
      std::cout << 10000 << "," << k << "," << micros(Clock::now() - start) << ","
                << s.backward.size() << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_schedule: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
