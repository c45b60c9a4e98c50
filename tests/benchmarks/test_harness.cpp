// Tests of the benchmark harness (benchmarks/harness/): timing statistics, the CSV writer, the
// table printer, the flag parser, the machine description, the memory meters' accounting and the
// deterministic initialisation shared with the Python peers. Nothing here times anything.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "benchmarks/harness/cli.hpp"
#include "benchmarks/harness/csv.hpp"
#include "benchmarks/harness/machine.hpp"
#include "benchmarks/harness/meters.hpp"
#include "benchmarks/harness/models.hpp"
#include "benchmarks/harness/network.hpp"
#include "benchmarks/harness/stats.hpp"
#include "benchmarks/harness/table.hpp"
#include "support/testing.hpp"

#include <anode/memory.hpp>

#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace test_harness {

namespace ab = anode::bench;

// ---------------------------------------------------------------- timing statistics

TEST(HarnessStats, MedianOfOddAndEvenCounts) {
  EXPECT_DOUBLE_EQ(ab::quantile({3.0, 1.0, 2.0}, 0.5), 2.0);
  EXPECT_DOUBLE_EQ(ab::quantile({4.0, 1.0, 3.0, 2.0}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(ab::quantile({7.0}, 0.5), 7.0);
}

TEST(HarnessStats, QuantilesInterpolateLinearly) {
  const std::vector<double> v = {5, 1, 4, 2, 3};  // sorted: 1 2 3 4 5
  EXPECT_DOUBLE_EQ(ab::quantile(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(ab::quantile(v, 0.25), 2.0);
  EXPECT_DOUBLE_EQ(ab::quantile(v, 0.75), 4.0);
  EXPECT_DOUBLE_EQ(ab::quantile(v, 1.0), 5.0);
  EXPECT_DOUBLE_EQ(ab::quantile({0.0, 10.0}, 0.3), 3.0);  // numpy.quantile([0, 10], 0.3)
}

TEST(HarnessStats, BadInputThrows) {
  EXPECT_THROW(ab::quantile({}, 0.5), std::invalid_argument);
  EXPECT_THROW(ab::quantile({1.0}, 1.5), std::invalid_argument);
  EXPECT_THROW(ab::quantile({1.0}, -0.1), std::invalid_argument);
  EXPECT_THROW(ab::quantile({1.0}, std::nan("")), std::invalid_argument);
  EXPECT_THROW(ab::summarize({}), std::invalid_argument);
}

TEST(HarnessStats, SummaryIsRobustToOneOutlier) {
  const auto s = ab::summarize({10, 11, 9, 10, 1000});
  EXPECT_EQ(s.n, 5u);
  EXPECT_DOUBLE_EQ(s.median, 10.0);
  EXPECT_DOUBLE_EQ(s.min, 9.0);
  EXPECT_DOUBLE_EQ(s.max, 1000.0);
  EXPECT_DOUBLE_EQ(s.mean, 208.0);
  EXPECT_DOUBLE_EQ(s.q25, 10.0);
  EXPECT_DOUBLE_EQ(s.q75, 11.0);
  EXPECT_DOUBLE_EQ(s.relative_iqr(), 0.1);
}

// A fake clock: every now() advances 2 ms, so a timed run takes exactly 2 ms plus 2 ms per
// now() inside it. No real time is measured.
struct FakeClock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<FakeClock>;
  static constexpr bool is_steady = true;
  static inline int64_t ticks = 0;
  static time_point now() {
    ticks += 2'000'000;
    return time_point(duration(ticks));
  }
};

TEST(HarnessStats, TimeRunsWarmsUpThenTimesEachRun) {
  FakeClock::ticks = 0;
  int calls = 0;
  ab::TimingOptions o;
  o.warmup = 2;
  o.repeats = 5;
  const auto t = ab::time_runs<FakeClock>([&] { ++calls; }, o);
  EXPECT_EQ(calls, 7);  // 2 untimed + 5 timed
  ASSERT_EQ(t.size(), 5u);
  for (double s : t) EXPECT_NEAR(s, 0.002, 1e-12);
}

TEST(HarnessStats, TimeRunsRepeatsUntilMinSecondsWithinTheCap) {
  FakeClock::ticks = 0;
  ab::TimingOptions o;
  o.warmup = 0;
  o.repeats = 2;
  o.min_seconds = 0.011;  // 2 ms a run: six runs reach 12 ms
  o.max_repeats = 100;
  EXPECT_EQ(ab::time_runs<FakeClock>([] {}, o).size(), 6u);
  o.max_repeats = 4;  // the cap wins
  EXPECT_EQ(ab::time_runs<FakeClock>([] {}, o).size(), 4u);
}

TEST(HarnessStats, TimeRunsRejectsBadOptions) {
  ab::TimingOptions o;
  o.repeats = 0;
  EXPECT_THROW(ab::time_runs<FakeClock>([] {}, o), std::invalid_argument);
  o = {};
  o.warmup = -1;
  EXPECT_THROW(ab::time_runs<FakeClock>([] {}, o), std::invalid_argument);
  o = {};
  o.repeats = 5;
  o.max_repeats = 3;
  EXPECT_THROW(ab::time_runs<FakeClock>([] {}, o), std::invalid_argument);
}

// ---------------------------------------------------------------- CSV writer

TEST(HarnessCsv, NumbersRoundTripInFewestDigits) {
  EXPECT_EQ(ab::format_number(0.1), "0.1");
  EXPECT_EQ(ab::format_number(12.5), "12.5");
  EXPECT_EQ(ab::format_number(3.0), "3");
  EXPECT_EQ(ab::format_number(1e-12), "1e-12");
  EXPECT_EQ(ab::format_number(std::nan("")), "nan");
  EXPECT_EQ(ab::format_number(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(ab::format_number(-std::numeric_limits<double>::infinity()), "-inf");
  for (double v : {1.0 / 3.0, 2.0 / 7.0 * 1e-300, 123456789.123456789, -0.000731}) {
    EXPECT_EQ(std::stod(ab::format_number(v)), v);
  }
}

TEST(HarnessCsv, FieldsAreQuotedOnlyWhenNeeded) {
  EXPECT_EQ(ab::csv_escape("anode"), "anode");
  EXPECT_EQ(ab::csv_escape("a,b"), "\"a,b\"");
  EXPECT_EQ(ab::csv_escape("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(ab::csv_escape("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(ab::csv_escape(" padded"), "\" padded\"");
  EXPECT_EQ(ab::csv_escape(""), "");
}

TEST(HarnessCsv, WritesMetadataHeaderAndRows) {
  std::ostringstream os;
  ab::CsvWriter csv(os, {"mode", "nt", "ms", "ok"});
  csv.meta("torch", "1.13\nx");  // a line break in metadata is flattened
  csv.row({"anode", 8, 12.25, true});
  csv.row({std::string("a,b"), int64_t{-3}, 1e-7, false});
  EXPECT_EQ(os.str(),
            "# torch=1.13 x\n"
            "mode,nt,ms,ok\n"
            "anode,8,12.25,true\n"
            "\"a,b\",-3,1e-07,false\n");
  EXPECT_EQ(csv.rows(), 2u);
}

TEST(HarnessCsv, RejectsWrongWidthAndLateMetadata) {
  std::ostringstream os;
  ab::CsvWriter csv(os, {"a", "b"});
  EXPECT_THROW(csv.row({1}), std::invalid_argument);
  EXPECT_THROW(csv.row({1, 2, 3}), std::invalid_argument);
  csv.row({1, 2});
  EXPECT_THROW(csv.meta("late", "x"), std::logic_error);
  EXPECT_THROW(ab::CsvWriter(os, {}), std::invalid_argument);
}

TEST(HarnessCsv, HeaderAloneWhenNoRows) {
  std::ostringstream os;
  ab::CsvWriter csv(os, {"x"});
  csv.write_header();
  csv.write_header();  // once only
  EXPECT_EQ(os.str(), "x\n");
}

// ---------------------------------------------------------------- table printer

TEST(HarnessTable, AlignsTextLeftAndNumbersRight) {
  ab::Table t({"mode", "ms"});
  t.add_row({"Backprop", "9.5"});
  t.add_row({"Anode", "12.25"});
  std::ostringstream os;
  t.print(os);
  EXPECT_EQ(os.str(),
            "mode         ms\n"
            "---------------\n"
            "Backprop    9.5\n"
            "Anode     12.25\n");
  EXPECT_THROW(t.add_row({"only one"}), std::invalid_argument);
  ab::Table mixed({"k", "v"});  // one non-numeric cell makes the column text
  mixed.add_row({"a", "1"});
  mixed.add_row({"bb", "n/a"});
  mixed.add_row({"c", "x"});
  std::ostringstream m;
  mixed.print(m);
  EXPECT_EQ(m.str(), "k   v\n-------\na   1\nbb  n/a\nc   x\n");
}

TEST(HarnessTable, FormatsNumbersAndBytes) {
  EXPECT_EQ(ab::fixed(1.23456, 2), "1.23");
  EXPECT_EQ(ab::sci(0.000123456, 2), "1.23e-04");
  EXPECT_EQ(ab::human_bytes(512), "512 B");
  EXPECT_EQ(ab::human_bytes(1536), "1.50 KiB");
  EXPECT_EQ(ab::human_bytes(int64_t{3} << 20), "3.00 MiB");
  EXPECT_EQ(ab::human_bytes(-1), "n/a");
  EXPECT_TRUE(ab::Table::looks_numeric("-3.5"));
  EXPECT_TRUE(ab::Table::looks_numeric(".5"));
  EXPECT_TRUE(ab::Table::looks_numeric("4.00 MiB"));
  EXPECT_FALSE(ab::Table::looks_numeric("RK2"));
  EXPECT_FALSE(ab::Table::looks_numeric("-"));
}

// ---------------------------------------------------------------- flags

// The flags of a small benchmark program, as the bench_*.cpp declare theirs.
struct Flags {
  ab::Cli cli{"a test program", "bench"};
  std::vector<int64_t> nt{1};
  int64_t threads = 1, size = 8;
  std::string csv;
  std::vector<double> scale{1.0};
  std::vector<std::string> modes{"anode", "backprop"};
  Flags() {
    cli.option("--nt", nt, "steps per block");
    cli.option("--threads", threads, "intra-op threads");
    cli.grid_option("--size", size, 16, "image side");
    cli.option("--csv", csv, "write the CSV here");
    cli.grid_option("--scale", scale, {0.5, 1.0, 2.0});
    cli.option("--modes", modes);
  }
};

TEST(HarnessArgs, ParsesValuesListsAndSwitches) {
  const char* argv[] = {"bench", "--nt",    "2,4, 8",  "--threads=3", "--full",
                        "--csv", "out.csv", "--scale", "0.5,2"};
  Flags a;
  ASSERT_TRUE(a.cli.parse(9, argv));
  EXPECT_EQ(a.nt, (std::vector<int64_t>{2, 4, 8}));
  EXPECT_EQ(a.threads, 3);
  EXPECT_TRUE(a.cli.full);
  EXPECT_FALSE(a.cli.app.count("--quick"));
  EXPECT_EQ(a.csv, "out.csv");
  EXPECT_EQ(a.scale, (std::vector<double>{0.5, 2.0}));
  EXPECT_EQ(a.modes, (std::vector<std::string>{"anode", "backprop"}));
  EXPECT_EQ(a.size, 16);  // --full's default
  Flags b;
  const char* argv_b[] = {"bench", "--full", "--size", "4", "--threads", "010"};
  ASSERT_TRUE(b.cli.parse(6, argv_b));
  EXPECT_EQ(b.size, 4);                                      // given: wins over --full's default
  EXPECT_EQ(b.threads, 10);                                  // decimal, not octal
  EXPECT_EQ(b.scale, (std::vector<double>{0.5, 1.0, 2.0}));  // a list's --full default
  Flags c;
  const char* argv_c[] = {"bench"};
  ASSERT_TRUE(c.cli.parse(1, argv_c));
  EXPECT_FALSE(c.cli.full);
  EXPECT_EQ(c.size, 8);
  EXPECT_EQ(c.scale, (std::vector<double>{1.0}));
}

TEST(HarnessArgs, RejectsUnknownFlagsAndBadValues) {
  const char* argv[] = {"bench", "--ntt", "2"};
  EXPECT_THROW(Flags().cli.parse(3, argv), std::invalid_argument);
  EXPECT_TRUE(anode_test::throws_mentioning([&] { (void)(Flags().cli.parse(3, argv)); },
                                            {"--ntt"}));  // never declared
  const char* argv1[] = {"bench", "--threads", "x"};
  EXPECT_THROW(Flags().cli.parse(3, argv1), std::invalid_argument);
  EXPECT_TRUE(anode_test::throws_mentioning([&] { (void)(Flags().cli.parse(3, argv1)); },
                                            {"--threads = x"}));
  const char* argv2[] = {"bench", "positional"};
  EXPECT_THROW(Flags().cli.parse(2, argv2), std::invalid_argument);
  const char* argv3[] = {"bench", "--full=maybe"};
  EXPECT_THROW(Flags().cli.parse(2, argv3), std::invalid_argument);
  EXPECT_TRUE(anode_test::throws_mentioning([&] { (void)(Flags().cli.parse(2, argv3)); },
                                            {"--full = maybe"}));
}

TEST(HarnessArgs, HelpListsTheFlagsAndTheirDefaults) {
  Flags a;
  const std::string help = a.cli.usage();
  for (const char* flag : {"--help", "--full", "--quick", "--nt", "--threads", "--size", "--csv",
                           "--scale", "--modes"})
    EXPECT_NE(help.find(flag), std::string::npos) << flag << " missing from\n" << help;
  EXPECT_NE(help.find("full: 16"), std::string::npos) << help;  // --size under --full
  // A default reads "TEXT=anode,backprop" (CLI11 2.1, Debian 12) or "TEXT [anode,backprop]"
  // (CLI11 2.4, Debian 13).
  EXPECT_TRUE(help.find("=anode,backprop") != std::string::npos ||
              help.find("[anode,backprop]") != std::string::npos)
      << help;
  testing::internal::CaptureStdout();
  const char* argv[] = {"bench", "--help"};
  EXPECT_FALSE(a.cli.parse(2, argv));  // printed the help: the program stops
  EXPECT_EQ(testing::internal::GetCapturedStdout(), help);
}

// ---------------------------------------------------------------- machine description

TEST(HarnessMachine, DescribesTheMachineAndTheBuild) {
  const auto info = ab::machine_info();
  auto get = [&](const std::string& k) {
    for (const auto& kv : info)
      if (kv.first == k) return kv.second;
    return std::string("<missing>");
  };
  EXPECT_EQ(get("libtorch"), TORCH_VERSION);
  EXPECT_EQ(get("date").size(), 20u);  // 2024-05-01T12:00:00Z
  EXPECT_EQ(get("date").back(), 'Z');
  EXPECT_NE(get("cpu"), "<missing>");
  EXPECT_EQ(get("torch_threads"), std::to_string(at::get_num_threads()));
  EXPECT_NE(get("blas"), "<missing>");
  std::ostringstream os;
  ab::CsvWriter csv(os, {"x"});
  ab::write_machine_info(csv);
  EXPECT_NE(os.str().find("# libtorch="), std::string::npos);
}

// ---------------------------------------------------------------- memory meters

TEST(HarnessMemory, CpuMeterCountsATensorsBytesExactly) {
  anode::memory::install_cpu_meter();
  anode::memory::install_cpu_meter();  // idempotent
  ASSERT_TRUE(anode::memory::cpu_meter_installed());
  const int64_t before = anode::memory::cpu_current_bytes();
  const int64_t allocations = anode::memory::cpu_allocations();
  {
    auto t = torch::empty({1024}, torch::kFloat32);  // 4 KiB of storage
    EXPECT_EQ(anode::memory::cpu_current_bytes() - before, 4096);
    EXPECT_GE(anode::memory::cpu_peak_bytes(), before + 4096);
    EXPECT_EQ(anode::memory::cpu_allocations() - allocations, 1);
    auto d = torch::empty({3, 5}, torch::kFloat64);
    EXPECT_EQ(anode::memory::cpu_current_bytes() - before, 4096 + 120);
  }
  EXPECT_EQ(anode::memory::cpu_current_bytes(), before);
}

TEST(HarnessMemory, PeakSurvivesFreesAndResets) {
  anode::memory::install_cpu_meter();
  anode::memory::reset_cpu_peak();
  const int64_t base = anode::memory::cpu_current_bytes();
  EXPECT_EQ(anode::memory::cpu_peak_bytes(), base);
  { auto big = torch::empty({1 << 20}, torch::kFloat32); }  // 4 MiB, freed at once
  auto small = torch::empty({256}, torch::kFloat32);        // 1 KiB, kept
  EXPECT_EQ(anode::memory::cpu_peak_bytes() - base, 4 << 20);
  anode::memory::reset_cpu_peak();
  EXPECT_EQ(anode::memory::cpu_peak_bytes(), base + 1024);
}

TEST(HarnessMemory, PeakScopeAndRegionMeterMeasureAboveTheirBaseline) {
  anode::memory::install_cpu_meter();
  auto live = torch::zeros({1000}, torch::kFloat32);  // live before the region: not counted
  anode::memory::PeakScope scope(torch::kCPU);
  ab::RegionMeter meter(torch::kCPU);
  {
    auto a = torch::ones({2048}, torch::kFloat32);  // 8 KiB
    auto b = a.clone();                             // +8 KiB live together
  }
  EXPECT_EQ(scope.peak_bytes(), 16384);
  const auto p = meter.peak();
  EXPECT_EQ(p.tensor_bytes, 16384);
  // The heap counter is only there under LD_PRELOAD (the benchmark driver's runs), not in tests.
  if (ab::HeapCounter::available()) {
    EXPECT_GE(p.heap_bytes, 16384);
  } else {
    EXPECT_EQ(p.heap_bytes, -1);
    EXPECT_EQ(ab::HeapCounter::current_bytes(), -1);
  }
  EXPECT_GT(ab::max_rss_bytes(), 0);
  const auto m = ab::max_of({1, -1}, {-1, 5});
  EXPECT_EQ(m.tensor_bytes, 1);
  EXPECT_EQ(m.heap_bytes, 5);
}

TEST(HarnessMemory, AutogradGraphBytesShowUpInThePeak) {
  // A graph that saves its intermediates keeps them live until backward: the meter sees them.
  anode::memory::install_cpu_meter();
  auto w = torch::ones({4096}, torch::requires_grad());
  anode::memory::PeakScope scope(torch::kCPU);
  auto h = w;
  for (int i = 0; i < 4; ++i) h = torch::sin(h);  // each sin saves its 16 KiB input
  const int64_t with_graph = anode::memory::cpu_current_bytes() - scope.baseline_bytes();
  EXPECT_GE(with_graph, 4 * 16384);
  h.sum().backward();
  EXPECT_GE(scope.peak_bytes(), with_graph);
}

// ---------------------------------------------------------------- models and deterministic data

TEST(HarnessModels, DeterministicValuesFollowTheFormula) {
  const auto v = ab::det_values({2, 3}, 4, 0.5, torch::kFloat64);
  ASSERT_EQ(v.sizes(), (std::vector<int64_t>{2, 3}));
  for (int64_t j = 0; j < 6; ++j) {
    const double expect = 0.5 * std::sin(0.7548776662466927 * j + 1.2345 * 5);
    EXPECT_NEAR(v.view(-1)[j].item<double>(), expect, 1e-15);
  }
  EXPECT_TRUE(torch::equal(ab::det_values({7}, 1, 1.0), ab::det_values({7}, 1, 1.0)));
  EXPECT_FALSE(torch::equal(ab::det_values({7}, 1, 1.0), ab::det_values({7}, 2, 1.0)));
  EXPECT_EQ(ab::det_values({4}, 0, 1.0).dtype(), torch::kFloat32);
}

TEST(HarnessModels, DeterministicInitFollowsTheRule) {
  ab::ConvRHS f(ab::ConvRHSOptions().channels(8).convs(2).batchnorm(true));
  ab::det_init(*f, 100);
  const double fan_in = 8 * 3 * 3;
  const double sd = f->conv1->weight.std().item<double>();
  EXPECT_NEAR(sd * std::sqrt(fan_in), 1.0, 0.05);
  EXPECT_NEAR(f->bn1->weight.mean().item<double>(), 1.0, 0.05);
  EXPECT_LT(f->bn1->bias.abs().max().item<double>(), 0.1 + 1e-7);
  // Parameter i gets seed 100 + i: conv1.weight is parameter 0.
  EXPECT_TRUE(torch::equal(
      f->conv1->weight,
      ab::det_values(f->conv1->weight.sizes(), 100, std::sqrt(2.0 / fan_in), torch::kFloat64)
          .to(torch::kFloat32)));
  ab::ConvRHS g(ab::ConvRHSOptions().channels(8).convs(2).batchnorm(true));
  ab::det_init(*g, 100, 2.0);  // weight scale 2 doubles kernels, leaves BatchNorm alone
  EXPECT_TRUE(torch::allclose(g->conv2->weight, 2 * f->conv2->weight));
  EXPECT_TRUE(torch::equal(g->bn2->weight, f->bn2->weight));
}

TEST(HarnessModels, RightHandSidesKeepShapeAndCountEvaluations) {
  ab::ConvRHS f(ab::ConvRHSOptions().channels(4).convs(1).batchnorm(false).act(ab::Act::Tanh));
  auto z = torch::randn({2, 4, 5, 5});
  EXPECT_EQ(f->forward(z).sizes(), z.sizes());
  f->forward(z);
  EXPECT_EQ(f->evals, 2);
  EXPECT_TRUE(f->bn1.is_empty());
  EXPECT_TRUE(f->conv2.is_empty());
  ab::MlpRHS m(2, 64);
  EXPECT_EQ(m->forward(torch::randn({256, 2})).sizes(), (std::vector<int64_t>{256, 2}));
  EXPECT_EQ(m->evals, 1);
  EXPECT_THROW(ab::ConvRHS(ab::ConvRHSOptions().convs(3)), std::invalid_argument);
  EXPECT_EQ(ab::act_from_string("leaky"), ab::Act::LeakyReLU);
  EXPECT_THROW(ab::act_from_string("gelu"), std::invalid_argument);
  auto x = torch::tensor({-1.0, 2.0});
  EXPECT_TRUE(torch::allclose(ab::activate(x, ab::Act::LeakyReLU), torch::tensor({-0.1, 2.0})));
}

// ---------------------------------------------------------------- network helpers

TEST(HarnessNetwork, ModesParseByName) {
  const auto k = ab::Mode::parse("anode-k4");
  EXPECT_EQ(k.gradient, anode::Gradient::Anode);
  EXPECT_EQ(k.checkpoints, 4);
  EXPECT_EQ(k.apply(anode::ODEBlockOptions()).checkpoints(), 4);
  EXPECT_EQ(ab::Mode::parse("adjoint").gradient, anode::Gradient::Adjoint);
  EXPECT_EQ(ab::Mode::parse("Backprop").checkpoints, 0);
  EXPECT_THROW(ab::Mode::parse("adjoint-k2"), std::invalid_argument);
  EXPECT_THROW(ab::Mode::parse("anode-kx"), std::invalid_argument);
  EXPECT_THROW(ab::Mode::parse("anode-k0"), std::invalid_argument);
  EXPECT_THROW(ab::Mode::parse("anode-k4x"), std::invalid_argument);
  EXPECT_THROW(ab::Mode::parse("anode-kf"), std::invalid_argument);
  EXPECT_FALSE(k.keep_forward);
  const auto kf = ab::Mode::parse("anode-k8f");
  EXPECT_EQ(kf.checkpoints, 8);
  EXPECT_TRUE(kf.keep_forward);
  EXPECT_TRUE(kf.apply(anode::ODEBlockOptions()).keep_forward_checkpoints());
  EXPECT_TRUE(k.apply(anode::ODEBlockOptions()).verify_recompute());
  const auto nv = ab::Mode::parse("anode-k4-nv");
  EXPECT_EQ(nv.checkpoints, 4);
  EXPECT_FALSE(nv.apply(anode::ODEBlockOptions()).verify_recompute());
  EXPECT_EQ(nv.name, "anode-k4-nv");
  EXPECT_FALSE(ab::Mode::parse("anode-nv").verify);
  EXPECT_THROW(ab::Mode::parse("backprop-nv"), std::invalid_argument);
  EXPECT_ANY_THROW(ab::Mode::parse("exact"));
}

TEST(HarnessNetwork, ErrorsAndCosines) {
  const auto b = torch::tensor({3.0, 4.0});
  EXPECT_DOUBLE_EQ(ab::rel_err(b, b), 0.0);
  EXPECT_DOUBLE_EQ(ab::rel_err(torch::tensor({3.0, 4.5}), b), 0.1);
  EXPECT_DOUBLE_EQ(ab::rel_err(torch::zeros({2}), torch::zeros({2})), 0.0);
  EXPECT_TRUE(std::isinf(ab::rel_err(b, torch::zeros({2}))));
  EXPECT_NEAR(ab::cosine(b, 2 * b), 1.0, 1e-15);
  EXPECT_NEAR(ab::cosine(b, torch::tensor({-4.0, 3.0})), 0.0, 1e-15);
  EXPECT_TRUE(std::isnan(ab::cosine(b, torch::zeros({2}))));
}

TEST(HarnessNetwork, RepeatsFollowTheBudget) {
  EXPECT_EQ(ab::repeats_for(0.5, 2, 10, 3.0), 6);   // 3 s of 0.5 s steps
  EXPECT_EQ(ab::repeats_for(10.0, 2, 10, 3.0), 2);  // long steps: the minimum
  EXPECT_EQ(ab::repeats_for(0.001, 2, 10, 3.0), 10);
  EXPECT_EQ(ab::repeats_for(0.0, 1, 7, 3.0), 7);
}

TEST(HarnessNetwork, TimedStepsSummariseEachPhaseAndKeepTheHighestPeak) {
  int call = 0;
  auto fake = [&] {
    ab::StepSample s;
    ++call;
    s.forward_s = 0.001 * call;  // 1, 2, 3 ms
    s.backward_s = 0.010 * call;
    s.total_s = 0.100 * call;
    s.peak.tensor_bytes = call == 2 ? 500 : 100;
    s.evals_forward = call;
    return s;
  };
  ab::RegionPeak warm;
  warm.tensor_bytes = 300;
  const auto r = ab::time_steps(fake, 3, warm);
  EXPECT_EQ(call, 3);
  EXPECT_EQ(r.n, 3u);
  EXPECT_DOUBLE_EQ(r.forward.median, 2.0);
  EXPECT_DOUBLE_EQ(r.backward.median, 20.0);
  EXPECT_DOUBLE_EQ(r.total.median, 200.0);
  EXPECT_EQ(r.peak.tensor_bytes, 500);
  EXPECT_EQ(r.peak.heap_bytes, -1);  // never metered stays "no meter"
  EXPECT_EQ(r.last.evals_forward, 3);
}

TEST(HarnessNetwork, ChainCountsEvaluationsAndFlattensGradients) {
  anode::memory::install_cpu_meter();
  const auto opts = anode::ODEBlockOptions()
                        .method(anode::Method::RK2)
                        .steps(3)
                        .gradient(anode::Gradient::Backprop);
  auto make = [] { return ab::MlpRHS(2, 8, ab::Act::Tanh); };
  auto net = std::make_shared<ab::ChainImpl<ab::MlpRHSImpl>>(make, 2, opts);
  ab::det_init(*net, 1);
  EXPECT_EQ(net->blocks.size(), 2u);
  auto x = ab::det_values({4, 2}, 7, 1.0);
  auto target = ab::det_values({4, 2}, 11, 1.0);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.0));
  const auto s = ab::train_step(net, opt, x, target);
  EXPECT_EQ(s.evals_forward, 2 * 3 * 2);  // L blocks x N_t steps x 2 stages
  EXPECT_EQ(s.evals_backward, 0);         // Backprop does not re-run the RHS
  EXPECT_GT(s.peak.tensor_bytes, 0);
  EXPECT_GE(s.total_s, s.forward_s + s.backward_s);
  int64_t numel = 0;
  for (const auto& p : net->parameters()) numel += p.numel();
  const auto g = ab::flat_parameter_grads(net->parameters());
  EXPECT_EQ(g.numel(), numel);
  EXPECT_EQ(g.dtype(), torch::kFloat64);
  EXPECT_GT(g.norm().item<double>(), 0.0);
  net->set_options(ab::Mode::parse("anode").apply(opts));
  const auto s2 = ab::train_step(net, opt, x, target);
  EXPECT_EQ(s2.evals_backward, 2 * 3 * 2);  // Anode re-runs each block once in backward
  EXPECT_TRUE(torch::allclose(ab::flat_parameter_grads(net->parameters()), g, 1e-5, 1e-6));
}

}  // namespace test_harness
