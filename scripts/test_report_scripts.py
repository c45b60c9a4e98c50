#!/usr/bin/python3
"""Tests of scripts/anode_report (what the report scripts share) and of the scripts' own parsing,
on small committed fixtures and on the results committed in docs/results/. Standard library only:

    python3 -m unittest discover -s scripts -p 'test_*.py'

The fixtures under scripts/testdata/gpu_check/ are the real output of GoogleTest 1.12 and CTest
3.25 (scripts/testdata/README.md says how they were made), so a parser that misreads those
formats fails here rather than on a lent GPU machine; those under scripts/testdata/report/ are
small results in the shapes scripts/report.py and scripts/bench_mlp.py write, with round figures
whose medians and ratios can be worked out by hand.
"""
import contextlib
import io
import math
import os
import sys
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from anode_report import baseline, machine, results, tables, targets, testlogs  # noqa: E402
import bench_mlp  # noqa: E402
import gpu_summary  # noqa: E402
import report  # noqa: E402

FIXTURES = os.path.join(HERE, "testdata", "gpu_check")
REPORT_FIXTURES = os.path.join(HERE, "testdata", "report")
KEPT_BASELINE = os.path.join(ROOT, "docs", "results", "benchmarks_libtorch1.13.md")
PEERS_NETWORK = "4 ODE blocks, RHS conv3x3-BN-ReLU-conv3x3-BN-ReLU, 32 channels, batch 8, 32x32"


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class ResultsCsv(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_metadata_lines_become_a_dict_and_cells_numbers(self):
        path = write(self.dir.name, "a.csv",
                     "# cpu=Intel Xeon  \n#torch=1.13\n# cpu=second value ignored\n"
                     "mode,nt,step_ms,status,note\nanode,8,1.5,ok,\n\nbackprop,16,nan,ok,x\n")
        meta, rows = results.read_csv(path)
        self.assertEqual(meta, {"cpu": "Intel Xeon", "torch": "1.13"})
        self.assertEqual(rows[0], {"mode": "anode", "nt": 8, "step_ms": 1.5, "status": "ok",
                                   "note": ""})
        self.assertIsInstance(rows[0]["nt"], int)
        self.assertTrue(math.isnan(rows[1]["step_ms"]))
        self.assertEqual(len(rows), 2)  # the blank line is not a row

    def test_without_numbers_the_cells_stay_as_written(self):
        path = write(self.dir.name, "b.csv", "# k=v\nnt,step_ms\n08,1.50\n")
        _meta, rows = results.read_csv(path, numbers=False)
        self.assertEqual(rows, [{"nt": "08", "step_ms": "1.50"}])

    def test_parse_number(self):
        self.assertEqual(results.parse_number("12"), 12)
        self.assertEqual(results.parse_number("-1"), -1)
        self.assertEqual(results.parse_number("1e3"), 1000.0)
        self.assertEqual(results.parse_number("float32"), "float32")
        self.assertEqual(results.parse_number(""), "")
        self.assertIsNone(results.parse_number(None))

    def test_concat_keeps_the_first_metadata_and_one_header(self):
        a = write(self.dir.name, "a.csv", "# impl=cpp\nimpl,nt\ncpp,2\n")
        b = write(self.dir.name, "b.csv", "# impl=py\n# torch=1.13\nimpl,nt\npy,2\npy,8\n")
        out = os.path.join(self.dir.name, "all.csv")
        results.concat_csvs([a, b], out)
        with open(out) as f:
            self.assertEqual(f.read(), "# impl=cpp\nimpl,nt\ncpp,2\npy,2\npy,8\n")
        meta, rows = results.read_csv(out)
        self.assertEqual(meta, {"impl": "cpp"})
        self.assertEqual([r["impl"] for r in rows], ["cpp", "py", "py"])

    def test_merged_metadata_takes_each_key_from_the_first_file_that_has_it(self):
        a = write(self.dir.name, "a.csv", "# cpu=A\nx\n1\n")
        b = write(self.dir.name, "b.csv", "# cpu=B\n# blas=openblas\nx\n1\n")
        self.assertEqual(results.merged_metadata([a, b]), {"cpu": "A", "blas": "openblas"})

    def test_reads_what_the_cpp_harness_writes(self):
        # benchmarks/harness/csv.hpp: "# key=value" lines, then the header, then the rows.
        path = write(self.dir.name, "h.csv", "# date=2026-11-26T16:27:57Z\n# cuda=none\n"
                     "rhs,L,nt,peak_bytes\nconv,4,16,123456789\n")
        meta, rows = results.read_csv(path)
        self.assertEqual(meta["date"], "2026-11-26T16:27:57Z")
        self.assertEqual(rows[0]["peak_bytes"], 123456789)


class Tables(unittest.TestCase):
    def test_markdown_table(self):
        self.assertEqual(tables.markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]),
                         "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 |  |")

    def test_text_table_pads_columns_and_strips_line_ends(self):
        self.assertEqual(tables.text_table(["N_t", "ms"], [["2", "10.5"], ["32", "n/a"]]),
                         ["N_t  ms", "---  ----", "2    10.5", "32   n/a"])
        self.assertEqual(tables.text_table(["what", ""], []), ["what", "----  "])

    def test_missing_values_read_n_a(self):
        for v in (None, "", float("nan")):
            self.assertEqual(tables.fmt(v), "n/a")
            self.assertEqual(tables.sci(v), "n/a")
        self.assertEqual(tables.mib(-1), "n/a")
        self.assertEqual(tables.fmt(1.234, 1), "1.2")
        self.assertEqual(tables.sci(0.000123), "1.2e-04")
        self.assertEqual(tables.mib(3 * 1024 * 1024), "3.0")

    def test_duration(self):
        self.assertEqual(tables.duration(187), "3m07s")
        self.assertEqual(tables.duration(3900), "1h05m")


class Targets(unittest.TestCase):
    def test_met_missed_and_not_measured(self):
        t = targets.ANODE_VS_BACKPROP
        self.assertTrue(t.met(1.35))
        self.assertFalse(t.missed(1.35))
        self.assertTrue(t.missed(1.36))
        nan = float("nan")
        self.assertFalse(t.met(nan))
        self.assertFalse(t.missed(nan))
        self.assertEqual(t.verdict(1.0), "met")
        self.assertEqual(t.verdict(2.0, "MISSED"), "MISSED")

    def test_bounds_read_as_the_reports_print_them(self):
        self.assertEqual(targets.ANODE_VS_BACKPROP.bound(), "≤ 1.35")
        self.assertEqual(targets.BINOMIAL_K4_VS_BACKPROP.bound(ascii_only=True), "<= 1.8")
        self.assertEqual(targets.CPP_VS_OFFICIAL_ANODE.bound(), "≤ 0.75")


class Machine(unittest.TestCase):
    def test_anode_version_comes_from_the_header(self):
        with open(os.path.join(ROOT, "include", "anode", "version.hpp")) as f:
            self.assertIn(f'"{machine.anode_version(ROOT)}"', f.read())
        self.assertEqual(machine.anode_version(os.path.join(ROOT, "no-such-folder")), "?")

    def test_load_average_is_a_number(self):
        self.assertIsInstance(machine.load_average(), float)

    def test_loaded_library_of_a_program_without_it(self):
        self.assertEqual(machine.loaded_library(sys.executable, "libno-such-library.so"),
                         "unknown")


class GoogleTestJson(unittest.TestCase):
    def test_outcomes_of_every_case(self):
        run = testlogs.read_gtest_json(os.path.join(FIXTURES, "work", "tests", "test_cuda.json"))
        got = {c.name: c.outcome for c in run.cases}
        self.assertEqual(got, {"Cuda.Passes": testlogs.PASSED, "Cuda.Fails": testlogs.FAILED,
                               "Cuda.IsSkipped": testlogs.SKIPPED,
                               "Usage.Passes": testlogs.PASSED})
        fails = run.with_outcome(testlogs.FAILED)[0]
        self.assertIn("one is not two", fails.message)
        self.assertNotIn("\n", fails.message)
        self.assertEqual(run.seconds, 0.0)

    def test_a_filtered_run_lists_only_what_ran(self):
        run = testlogs.read_gtest_json(os.path.join(FIXTURES, "work", "tests",
                                                    "test_usage_cuda.json"))
        self.assertEqual(len(run.cases), 3)
        self.assertTrue(all(c.name.startswith("Cuda.") for c in run.cases))

    def test_time_and_disabled_tests(self):
        with tempfile.TemporaryDirectory() as d:
            path = write(d, "t.json", '{"time": "2.803s", "testsuites": [{"name": "S", '
                         '"testsuite": [{"name": "DISABLED_x", "status": "NOTRUN", '
                         '"result": "SUPPRESSED", "time": "0s"}]}]}')
            run = testlogs.read_gtest_json(path)
        self.assertAlmostEqual(run.seconds, 2.803)
        self.assertEqual(run.cases[0].outcome, testlogs.NOT_RUN)


class CTestJUnit(unittest.TestCase):
    def test_outcomes_of_a_run_stopped_by_its_stop_time(self):
        run = testlogs.read_ctest_junit(os.path.join(FIXTURES, "work", "tests", "ctest.xml"))
        got = {c.name: (c.outcome, c.message) for c in run.cases}
        self.assertEqual(got["unit.passes"], (testlogs.PASSED, ""))
        self.assertEqual(got["unit.fails"][0], testlogs.FAILED)
        self.assertEqual(got["lint.skipped"], (testlogs.SKIPPED, "SKIP_RETURN_CODE=77"))
        self.assertEqual(got["slow.times_out"][0], testlogs.FAILED)
        self.assertEqual(got["missing.not_run"], (testlogs.NOT_RUN, "Unable to find executable"))
        self.assertNotIn("slow.three", got)  # never started: the stop time came first

    def test_the_list_names_every_test(self):
        names = testlogs.read_ctest_list(os.path.join(FIXTURES, "work", "tests",
                                                      "ctest_list.json"))
        self.assertEqual(names, ["unit.passes", "unit.fails", "lint.skipped", "slow.times_out",
                                 "missing.not_run", "slow.two", "slow.three"])


class GpuSummaryTests(unittest.TestCase):
    work = os.path.join(FIXTURES, "work")
    results_dir = os.path.join(FIXTURES, "results")

    def test_gtest_section_from_the_json(self):
        lines = gpu_summary.gtest_section(self.work, self.results_dir)
        self.assertIn("  test_cuda: ran 4 tests in 0.0 s", lines)
        self.assertIn("  test_usage's Cuda tests: ran 3 tests in 0.0 s", lines)
        self.assertIn("  passed 3, skipped 2, failed 2", lines)
        self.assertTrue(any(ln.startswith("  FAILED test_cuda: Cuda.Fails: t.cpp:4")
                            for ln in lines))
        # The figures the tests print come from the console log.
        self.assertIn("    Adjoint vs Backprop on CUDA, RK2, N_t 2/8/32: 0.0023 0.00014", lines)

    def test_gtest_section_says_when_a_program_left_no_json(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "test_cuda.log", "Segmentation fault\n")
            lines = gpu_summary.gtest_section(d, d)
        self.assertEqual(sum("no JSON result" in ln for ln in lines), 2)
        self.assertFalse(any(ln.startswith("  passed") for ln in lines))

    def test_ctest_section_names_what_did_not_pass_or_start(self):
        lines = gpu_summary.ctest_section(self.work, self.results_dir)
        self.assertIn("  ran 6 of 7: passed 1, failed 3, skipped 1, not run 1", lines)
        self.assertIn("  not run: missing.not_run (Unable to find executable), 0.0 s", lines)
        self.assertIn("  not started before the stage's time ran out: slow.three", lines)
        self.assertFalse(any("lint.skipped" in ln for ln in lines))

    def test_ctest_section_without_junit(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "ctest.log", "100% tests passed out of 24\n")  # CTest 4's wording
            lines = gpu_summary.ctest_section(d, d)
        self.assertTrue(any("no JUnit result" in ln for ln in lines))

    def test_no_logs_no_section(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(gpu_summary.gtest_section(d, d), [])
            self.assertEqual(gpu_summary.ctest_section(d, d), [])


class BenchMlp(unittest.TestCase):
    def test_committed_tables_follow_from_the_committed_csv(self):
        # docs/bench_mlp.md and docs/results/bench_mlp.csv come from the same run: the tables
        # rebuilt from the CSV (read back as the run held its rows) must be the document's.
        rows = bench_mlp.read_csv(os.path.join(ROOT, "docs", "results", "bench_mlp.csv"))
        with open(os.path.join(ROOT, "docs", "bench_mlp.md")) as f:
            doc = f.read()

        def ref_of(g):
            return "torchdiffeq-dopri5" if g.get("method") == "dopri5" else "torchdiffeq-rk2"
        blas = sorted({x["blas"] for x in rows})
        self.assertEqual(blas, ["openblas", "reference"])
        for name in blas:
            main = [x for x in rows if x["blas"] == name and x["batch"] == 256]
            table = bench_mlp.markdown_table(["method"] + bench_mlp.RATIO_COLUMNS,
                                             bench_mlp.ratio_rows(main, ["method"], ref_of))
            self.assertIn(table, doc)

    def test_a_row_that_did_not_run_has_no_step_time(self):
        with tempfile.TemporaryDirectory() as d:
            path = write(d, "m.csv", "round,blas,batch,method,impl,step_ms,status\n"
                         "0,openblas,256,rk2,torchdiffeq-rk2,,error: x\n")
            rows = bench_mlp.read_csv(path)
        self.assertNotIn("step_ms", rows[0])
        self.assertEqual(rows[0]["batch"], 256)

    def test_unpaired_rows_are_kept_only_when_asked(self):
        # torchdiffeq skipped in round 0: "a" has nothing to be divided by there.
        rows = [dict(method="rk2", impl="a", round=0, step_ms=2.0, rhs_evals_fwd=200,
                     rhs_evals_bwd=0)]
        ref_of = lambda g: "ref"  # noqa: E731
        self.assertEqual(bench_mlp.ratio_rows(rows, ["method"], ref_of), [])
        self.assertEqual(bench_mlp.ratio_rows(rows, ["method"], ref_of, unpaired=True),
                         [["rk2", "a", "2.00", "n/a", "200 / 0"]])

    def test_round_ratios_pair_rows_of_the_same_round(self):
        sel = [dict(impl="a", round=0, step_ms=2.0), dict(impl="ref", round=0, step_ms=4.0),
               dict(impl="a", round=1, step_ms=3.0), dict(impl="ref", round=1, step_ms=3.0),
               dict(impl="a", round=2)]
        self.assertEqual(bench_mlp.round_ratios(sel, "a", "ref"), [0.5, 1.0])


class ReportHelpers(unittest.TestCase):
    def test_profile_self_times_subtract_nested_events(self):
        trace = ('{"traceEvents": [{"ph": "X", "name": "outer", "ts": 0, "dur": 1000, "pid": 1, '
                 '"tid": 1}, {"ph": "X", "name": "inner", "ts": 100, "dur": 300, "pid": 1, '
                 '"tid": 1}, {"ph": "X", "name": "inner", "ts": 500, "dur": 200, "pid": 1, '
                 '"tid": 2}, {"ph": "i", "name": "marker", "ts": 0}]}')
        with tempfile.TemporaryDirectory() as d:
            times = report.profile_self_times(write(d, "p.json", trace))
        self.assertAlmostEqual(times["outer"], 0.7)  # 1000 us less the 300 us nested in it
        self.assertAlmostEqual(times["inner"], 0.5)  # its own thread's event is not nested
        self.assertNotIn("marker", times)

    def test_step_time_ratios_match_rhs_method_L_and_nt(self):
        row = dict(rhs="conv", method="RK2", L=1, nt=2)
        rows = [dict(row, mode="anode", step_ms=3.0), dict(row, mode="backprop", step_ms=2.0),
                dict(row, mode="backprop", step_ms=1.0, nt=4)]
        got = report.step_time_ratios(rows, "anode", "backprop")
        self.assertEqual([q for _r, q in got], [1.5])

    def test_findings_keep_the_order_sections_add_them(self):
        found = report.Findings()
        conv = [dict(mode="anode", L=2, nt=4, state_bytes=10, peak_bytes=300),
                dict(mode="backprop", L=1, nt=4, peak_bytes=100)]
        text = report.memory_model_lines(conv, found)
        self.assertIn("ratio 2.50 to 2.50 over 1 points", text[0])  # 300 / (2·10 + 100)
        self.assertEqual(found.targets[0][1:], ["2.50", "≤ 1.2", "**missed**"])
        self.assertEqual(len(found.misses), 1)


class CmakeCache(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def wheel(self, version):
        """A torch package folder holding only a version.py, as a wheel's does."""
        torch_pkg = os.path.join(self.dir.name, version, "site-packages", "torch")
        os.makedirs(torch_pkg)
        write(torch_pkg, "version.py", "__all__ = ['__version__']\n"
              f"__version__ = '{version}'\ndebug = False\n")
        return torch_pkg

    def build(self, torch_cmake):
        build_dir = os.path.join(self.dir.name, "build")
        os.makedirs(build_dir, exist_ok=True)
        write(build_dir, "CMakeCache.txt", "# This is the CMakeCache file.\n"
              "//Choose the type of build\nCMAKE_BUILD_TYPE:STRING=Release\n"
              "CMAKE_CXX_FLAGS_RELEASE:STRING=-O3 -DNDEBUG\n"
              f"Torch_DIR:PATH={torch_cmake}\n")
        return build_dir

    def test_the_flags_and_the_wheel_of_a_build(self):
        torch_pkg = self.wheel("2.15.0+cu132")
        cache = machine.cmake_cache(self.build(os.path.join(torch_pkg, "share", "cmake",
                                                            "Torch")))
        self.assertEqual(machine.build_flags(cache), "Release: `-O3 -DNDEBUG`")
        self.assertEqual(machine.wheel_torch_dir(cache), torch_pkg)
        self.assertEqual(machine.torch_package_version(torch_pkg), "2.15.0+cu132")
        debian = {"Torch_DIR": "/usr/lib/x86_64-linux-gnu/cmake/Torch"}
        self.assertEqual(machine.wheel_torch_dir(debian), "")
        self.assertEqual(machine.build_flags(machine.cmake_cache(self.dir.name)), "?")
        self.assertEqual(machine.torch_package_version(self.dir.name), "?")

    def test_a_build_of_the_other_libtorch_or_wheel_is_refused(self):
        built = self.wheel("2.15.0+cu132")
        build_dir = self.build(os.path.join(built, "share", "cmake", "Torch"))
        self.assertEqual(report.build_mismatch(build_dir, "pypi", built), "")
        why = report.build_mismatch(build_dir, "pypi", self.wheel("2.14.1"))
        self.assertIn("torch 2.15.0+cu132", why)
        self.assertIn("torch 2.14.1", why)
        self.assertIn("--libtorch pypi", report.build_mismatch(build_dir, "debian", ""))
        debian = self.build("/usr/lib/x86_64-linux-gnu/cmake/Torch")
        self.assertIn("not a torch wheel's", report.build_mismatch(debian, "pypi", built))
        self.assertEqual(report.build_mismatch(debian, "debian", ""), "")
        self.assertEqual(report.build_mismatch(os.path.join(self.dir.name, "none"), "pypi",
                                               built), "")


class ReportOptions(unittest.TestCase):
    def error_of(self, argv):
        """What parse_args says on stderr when it refuses `argv`."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as stop:
            report.parse_args(argv)
        self.assertEqual(stop.exception.code, 2)
        return err.getvalue()

    def test_pypi_without_a_venv_says_how_to_make_it(self):
        with tempfile.TemporaryDirectory() as d:
            msg = self.error_of(["--libtorch", "pypi", "--venv", d])
            self.assertIn(f"--libtorch pypi: no Python at {d}/bin/python", msg)
        self.assertIn("ANODE_LIBTORCH=pypi ANODE_PEERS=1 bash scripts/setup.sh", msg)

    def test_bad_values_are_named(self):
        self.assertIn("--libtorch conda: expected debian or pypi",
                      self.error_of(["--libtorch", "conda"]))
        self.assertIn("--venv /x: only read with --libtorch pypi",
                      self.error_of(["--venv", "/x"]))
        self.assertIn("--baseline-md /no/such.md: no such file",
                      self.error_of(["--baseline-md", "/no/such.md", "--reuse"]))

    def test_defaults_follow_the_libtorch(self):
        a = report.parse_args(["--reuse", "--libtorch", "pypi", "--venv", "/v"])
        self.assertEqual(a.build_dir, os.path.join(ROOT, "build-report-pypi"))
        self.assertEqual(a.data_dir, os.path.join(ROOT, "out", "report-pypi"))
        self.assertEqual(a.venv, "/v")
        a = report.parse_args(["--reuse", "--baseline-md", ""])
        self.assertEqual(a.build_dir, os.path.join(ROOT, "build-report"))
        self.assertEqual(a.baseline_md, "")

    def test_the_wheels_configure_is_that_of_the_ci_job(self):
        cmd = report.configure_command("/b", "pypi", "/t")
        self.assertIn("-DCMAKE_PREFIX_PATH=/t;/t/share/cmake", cmd)
        self.assertIn("-DANODE_DISTRIBUTED=OFF", cmd)
        debian = report.configure_command("/b", "debian")
        self.assertFalse([c for c in debian if "PREFIX_PATH" in c or "DISTRIBUTED" in c])
        env = report.wheel_env({"PATH": "/bin"})
        self.assertEqual((env["CUDACXX"], env["TORCH_CUDA_ARCH_LIST"]),
                         ("/usr/local/cuda/bin/nvcc", "9.0"))
        self.assertEqual(report.wheel_env({"CUDACXX": "/opt/nvcc"})["CUDACXX"], "/opt/nvcc")

    def test_the_command_line_names_the_libtorch(self):
        a = types.SimpleNamespace(full=False, smoke=True, threads=1, device="cuda",
                                  libtorch="pypi")
        self.assertEqual(report.command_line(a), "/usr/bin/python3 scripts/report.py "
                         "--libtorch pypi --smoke --device cuda")


class Versions(unittest.TestCase):
    def test_pip_peers_and_the_mlp_case_give_their_versions(self):
        with tempfile.TemporaryDirectory() as d:
            write(d, "peers_py_torchode_2.csv", "# python=3.11.2\n# torch=2.15.0+cu132\n"
                  "# peer_version=1.0.1\nimpl,nt\ntorchode,2\n")
            write(d, "peers_py_torchdiffeq_2.csv", "# peer_version=0.2.5\n"
                  "# peer_revision=657943ac0123456789\nimpl,nt\ntorchdiffeq,2\n")
            info = report.versions(d)
            self.assertEqual(info["torchode"], "1.0.1 (pip)")
            self.assertEqual(info["torchdiffeq"], "0.2.5 rev 657943ac0123")
            self.assertEqual(info["python torch"], "2.15.0+cu132")
        with tempfile.TemporaryDirectory() as d:  # --skip-peers: only the MLP case ran
            with open(os.path.join(REPORT_FIXTURES, "mlp.csv")) as f:
                write(d, "mlp.csv", f.read())
            info = report.versions(d)
        self.assertEqual((info["torchdiffeq"], info["torchode"], info["python torch"]),
                         ("0.2.5", "1.0.1", "2.15.0+cu132"))


class MlpSection(unittest.TestCase):
    def test_the_table_ratios_and_what_was_skipped(self):
        rows, skipped = report.read_mlp(os.path.join(REPORT_FIXTURES, "mlp.csv"))
        self.assertEqual(len(rows), 10)  # the two skipped rows did not run
        self.assertEqual(skipped, ["torchode-dopri5: skipped: torchode is not installed in "
                                   "/usr/bin/python3 and ANODE_TORCHODE_PATH is not set"])
        text = report.mlp_section(rows, skipped)
        # anode: 28 and 32 ms against torchdiffeq's 40 in the same rounds.
        self.assertIn("| rk2 | anode-anode | 30.00 | 0.75 (0.70–0.80) | 200 / 200 |", text)
        self.assertIn("| rk2 | torchode-rk2 | 90.00 | 2.25 (2.00–2.50) | 202 / 0 |", text)
        self.assertIn("| dopri5 | anode-anode | 7.00 | 0.70 (0.60–0.80) | 32 / 31 |", text)
        self.assertIn("its RK2 takes 202 forward evaluations, not 200", text)
        self.assertIn("Skipped: torchode-dopri5: skipped:", text)
        self.assertIn("2 alternating round(s) of 20 timed steps", text)
        self.assertIsNone(report.mlp_section([], skipped))


class Baseline(unittest.TestCase):
    def test_the_kept_libtorch_1_13_report_reads_back(self):
        # The reader and report.py's layout change together: the kept report must still read.
        rep = baseline.read_report(KEPT_BASELINE)
        self.assertEqual((rep.libtorch, rep.grid, rep.threads, rep.device),
                         ("1.13.0", "quick", "1", "cpu"))
        self.assertEqual(rep.versions["Python / torch"], "3.11.2 / 1.13.0a0")
        self.assertTrue(rep.network.startswith(PEERS_NETWORK + ", RK2"))
        self.assertEqual(len(rep.peers), 8 * 3)  # 8 implementations, N_t 2, 8, 32
        self.assertEqual(rep.peers[("anode-cpp/anode", 8)]["step ms"], "728")
        self.assertEqual(rep.peers[("torchdiffeq-adjoint", 32)]["peak heap MiB"], "35.8")
        self.assertEqual(baseline.peers_mismatch(rep, "quick", PEERS_NETWORK, 1, "cpu"), "")

    def test_the_command_line_gives_threads_and_device_and_other_tables_are_left_out(self):
        rep = baseline.read_report(os.path.join(REPORT_FIXTURES, "baseline_cuda.md"))
        self.assertEqual((rep.libtorch, rep.grid, rep.threads, rep.device),
                         ("2.15.0", "full", "2", "cuda"))
        self.assertEqual(sorted(rep.peers), [("anode-cpp/backprop", 2), ("torchode", 2)])
        why = baseline.peers_mismatch(rep, "quick", PEERS_NETWORK, 1, "cpu")
        self.assertEqual(why, "grid quick here, full there; 1 thread(s) here, 2 there; "
                              "device cpu here, cuda there")

    def test_another_network_is_not_compared(self):
        rep = baseline.read_report(KEPT_BASELINE)
        smoke = "2 ODE blocks, RHS conv3x3-BN-ReLU-conv3x3-BN-ReLU, 8 channels, batch 8, 8x8"
        why = baseline.peers_mismatch(rep, "quick", smoke, 1, "cpu")
        self.assertIn(f"network '{smoke}' here", why)
        self.assertNotIn("grid", why)


class ChangesSection(unittest.TestCase):
    here = dict(grid="quick", network=PEERS_NETWORK, threads=1, device="cpu",
                libtorch="2.15.0", torch="2.15.0+cu132", blas="mkl")
    current = {("anode-cpp/anode", 8): dict(step_ms=364.0, heap_peak_bytes=86.3 * tables.MIB),
               ("torchode", 8): dict(step_ms=900.0, heap_peak_bytes=100 * tables.MIB)}

    def mlp(self):
        then = report.comparable_mlp_rows(
            bench_mlp.read_csv(os.path.join(REPORT_FIXTURES, "bench_mlp_baseline.csv")), 256, 1)
        now, _skipped = report.read_mlp(os.path.join(REPORT_FIXTURES, "mlp.csv"))
        return then, now

    def test_peers_rows_then_and_now(self):
        rows = report.peers_changes(baseline.read_report(KEPT_BASELINE), self.current)
        # torchode is not in the 1.13 report: only what both measured is compared.
        self.assertEqual(rows, [["anode-cpp/anode", 8, "728", "364", "0.50", "86.3", "86.3"]])

    def test_mlp_rows_compare_openblas_at_batch_256_only(self):
        then, now = self.mlp()
        self.assertEqual({(r["blas"], r["batch"]) for r in then}, {("openblas", 256)})
        rows = {(r[0], r[1]): r[2:] for r in report.mlp_changes(then, now)}
        # then 45 and 50 ms (÷ torchdiffeq 1.25 in both rounds), now 28 and 32 (0.70, 0.80).
        self.assertEqual(rows[("rk2", "anode-anode")], ["47.50", "30.00", "0.63", "1.25", "0.75"])
        self.assertEqual(rows[("rk2", "torchode-rk2")], ["not run", "90.00", "n/a", "n/a", "2.25"])
        self.assertEqual(rows[("dopri5", "anode-anode")], ["8.00", "7.00", "0.88", "0.80", "0.70"])
        self.assertNotIn(("dopri5", "torchode-dopri5"), rows)  # skipped now

    def test_the_section_compares_only_the_same_configuration(self):
        rep = baseline.read_report(KEPT_BASELINE)
        then, now = self.mlp()
        text = report.changes_section(rep, KEPT_BASELINE, self.here, self.current, then,
                                      "x.csv", now)
        self.assertIn("LibTorch 1.13.0 (Python / torch 3.11.2 / 1.13.0a0)", text)
        self.assertIn("BLAS: generic there, mkl here", text)
        self.assertIn("the median over its 2 round(s), \"now\" over this run's 2", text)
        self.assertIn("| anode-cpp/anode | 8 | 728 | 364 | 0.50 | 86.3 | 86.3 |", text)
        self.assertIn("| rk2 | anode-anode | 47.50 | 30.00 | 0.63 | 1.25 | 0.75 |", text)
        smoke = dict(self.here, grid="smoke")
        text = report.changes_section(rep, KEPT_BASELINE, smoke, self.current, then, "x.csv", now)
        self.assertIn("not compared, the configurations differ (grid smoke here, quick there)",
                      text)
        self.assertNotIn("| anode-cpp/anode |", text)
        self.assertIn("| rk2 | anode-anode |", text)  # the MLP problem is the same at any grid
        self.assertIsNone(report.changes_section(None, "", self.here, self.current, [], "", now))
        two = report.comparable_mlp_rows(then, 256, 2)  # measured on one thread: not comparable
        self.assertEqual(two, [])


if __name__ == "__main__":
    unittest.main()
