#!/usr/bin/python3
"""Tests of the Python side of the benchmark harness (no timing):

    /usr/bin/python3 -m unittest discover -s benchmarks/python -p 'test_*.py'

With HEAPCOUNT_LIB=/path/libheapcount.so it also checks the heap counter from Python.
"""
import math
import os
import subprocess
import sys
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import peers  # noqa: E402


class Statistics(unittest.TestCase):
    def test_quantiles_match_the_cpp_harness(self):
        self.assertEqual(common.quantile([3, 1, 2], 0.5), 2)
        self.assertEqual(common.quantile([4, 1, 3, 2], 0.5), 2.5)
        self.assertEqual(common.quantile([5, 1, 4, 2, 3], 0.25), 2)
        self.assertAlmostEqual(common.quantile([0, 10], 0.3), 3.0)

    def test_repeats_follow_the_budget(self):
        self.assertEqual(common.repeats_for(0.5, 2, 10, 3.0), 6)
        self.assertEqual(common.repeats_for(10.0, 2, 10, 3.0), 2)
        self.assertEqual(common.repeats_for(0.0, 1, 7, 3.0), 7)


class TorchodePeer(unittest.TestCase):
    """peer_torchode's midpoint tableau on torchode's fixed step is anode's RK2: the same N_t
    steps (RHS evaluations), the same solution and gradients as the hand-written midpoint loop."""

    def setUp(self):
        try:
            import torchode
        except ImportError:
            self.skipTest("torchode is not installed in this interpreter")
        self.to = torchode

    def test_midpoint_matches_the_hand_written_loop(self):
        import peer_torchode
        for nt in (2, 8):
            grads, outs = [], []
            for solve in (peer_torchode.make_solve(self.to, "midpoint", nt=nt),
                          lambda f, z, nt=nt: peers.midpoint_loop(f, z, nt)):
                torch.manual_seed(0)
                f = common.ConvRHS(4).double()
                z = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
                y = solve(f, z)
                self.assertEqual(f.nfe, 2 * nt)
                y.pow(2).sum().backward()
                outs.append(y.detach())
                grads.append(torch.cat([z.grad.reshape(-1)] +
                                       [p.grad.reshape(-1) for p in f.parameters()]))
            self.assertTrue(torch.allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12))
            self.assertTrue(torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12))


class DeterministicModel(unittest.TestCase):
    def test_values_follow_the_formula(self):
        v = common.det_values((2, 3), 4, 0.5, torch.float64).reshape(-1)
        for j in range(6):
            self.assertAlmostEqual(v[j].item(), 0.5 * math.sin(common.GOLDEN * j + 1.2345 * 5),
                                   places=15)
        self.assertEqual(common.det_values((4,), 0, 1.0).dtype, torch.float32)

    def test_parameter_order_and_init_rule_match_the_cpp_harness(self):
        f = common.ConvRHS(8)
        names = [n for n, _ in f.named_parameters()]
        self.assertEqual(names, ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight",
                                 "bn2.weight", "bn2.bias"])
        common.det_init(f, 100)
        fan_in = 8 * 9
        expect = common.det_values(tuple(f.conv1.weight.shape), 100, math.sqrt(2.0 / fan_in),
                                   torch.float64).to(torch.float32)
        self.assertTrue(torch.equal(f.conv1.weight, expect))
        self.assertAlmostEqual(f.bn1.weight.mean().item(), 1.0, delta=0.05)
        self.assertLessEqual(f.bn2.bias.abs().max().item(), 0.1 + 1e-7)

    def test_rhs_counts_evaluations_and_keeps_shape(self):
        f = common.ConvRHS(4)
        z = torch.randn(2, 4, 5, 5)
        self.assertEqual(f(0.0, z).shape, z.shape)
        self.assertEqual(f.nfe, 1)


class Solvers(unittest.TestCase):
    def test_midpoint_loop_is_second_order_on_a_linear_ode(self):
        f = lambda t, z: -z  # noqa: E731
        z0 = torch.ones(1, dtype=torch.float64)
        for nt in (4, 8):
            h = 1.0 / nt
            expect = (1 - h + h * h / 2) ** nt  # the midpoint rule's amplification factor
            self.assertAlmostEqual(peers.midpoint_loop(f, z0, nt).item(), expect, places=14)

    def test_absent_peers_are_skipped_with_a_reason(self):
        old = os.environ.pop("ANODE_OFFICIAL_PATH", None)
        try:
            with self.assertRaises(peers.Skip) as cm:
                peers.import_peer("anode-official")
            self.assertIn("ANODE_OFFICIAL_PATH is not set", str(cm.exception))
        finally:
            if old is not None:
                os.environ["ANODE_OFFICIAL_PATH"] = old
        self.assertIsNone(peers.import_peer("torch-backprop"))


class PeersCommandLine(unittest.TestCase):
    def test_nt_takes_one_value_or_a_list(self):
        self.assertEqual(peers.parse_nts("8"), [8])
        self.assertEqual(peers.parse_nts("2,8, 32"), [2, 8, 32])
        for bad in ("", "0", "2,x", "-1"):
            with self.assertRaises(Exception):
                peers.parse_nts(bad)

    def run_peers(self, *extra):
        import csv
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "rows.csv")
            subprocess.run([sys.executable, os.path.join(HERE, "peers.py"), "--impl",
                            "torch-backprop", "--L", "1", "--channels", "2", "--batch", "1",
                            "--size", "4", "--no-time", "--csv", out] + list(extra),
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            with open(out) as f:
                return list(csv.DictReader(line for line in f if not line.startswith("#")))

    def test_one_row_per_nt(self):
        rows = self.run_peers("--nt", "1,3")
        self.assertEqual([r["nt"] for r in rows], ["1", "3"])
        self.assertEqual([r["status"] for r in rows], ["ok", "ok"])
        # RK2: two evaluations of the right-hand side per step in the forward pass
        self.assertEqual([r["rhs_evals_fwd"] for r in rows], ["2", "6"])

    @unittest.skipIf(torch.cuda.is_available(), "this torch has CUDA")
    def test_cuda_without_a_device_is_a_row_saying_so(self):
        rows = self.run_peers("--nt", "2", "--device", "cuda")
        self.assertEqual(len(rows), 1)
        self.assertTrue(rows[0]["status"].startswith("error:"), rows[0]["status"])


class HeapCounter(unittest.TestCase):
    def test_absent_counter_reads_minus_one(self):
        if common.HeapCounter().available:
            self.skipTest("running under the heap counter")
        h = common.HeapCounter()
        self.assertEqual(h.current(), -1)
        self.assertEqual(h.peak(), -1)

    @unittest.skipUnless(os.environ.get("HEAPCOUNT_LIB"), "set HEAPCOUNT_LIB to libheapcount.so")
    def test_counter_sees_a_tensor_from_python(self):
        code = ("import sys; sys.path.insert(0, %r); import common, torch\n"
                "h = common.HeapCounter(); assert h.available\n"
                "h.reset_peak(); base = h.current()\n"
                "x = torch.empty(1 << 20); del x\n"
                "print(h.peak() - base, h.current() - base)\n" % HERE)
        env = dict(os.environ, LD_PRELOAD=os.environ["HEAPCOUNT_LIB"])
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout.split()
        peak, now = int(out[0]), int(out[1])
        self.assertGreaterEqual(peak, 4 << 20)  # the 4 MiB tensor was counted
        self.assertLess(now, 4 << 20)           # and given back


if __name__ == "__main__":
    unittest.main()
