"""An earlier report read back, for what changed since (section 8 of docs/benchmarks.md).

docs/results/benchmarks_libtorch1.13.md is docs/benchmarks.md as scripts/report.py wrote it on
Debian's LibTorch 1.13, kept when the report moved to another LibTorch. The next report compares
its own figures with that file's, and only where both ran the same configuration: figures of
another grid, network, thread count or device differ for reasons other than the LibTorch.

What is read is the text of the tables as that run printed them (the comparison quotes them, it
does not recompute them), so a report's layout and this reader change together:
scripts/test_report_scripts.py reads the kept report to catch a change of one without the other.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

VERSIONS = "## Machine and versions"
PEERS = "## 5."


@dataclass
class Report:
    versions: Dict[str, str] = field(default_factory=dict)  # the machine-and-versions table
    grid: str = "?"  # quick, full or smoke: the "(grid: ...;" line under the command
    command: str = ""  # the command line the report names
    network: str = ""  # section 5's "Network: ..." sentence, without "Network: "
    peers: Dict[Tuple[str, int], Dict[str, str]] = field(default_factory=dict)

    @property
    def libtorch(self):
        return self.versions.get("LibTorch (C++)", "?")

    @property
    def threads(self):
        """The threads used, from "hardware threads / threads used" ("2 / 1" -> "1")."""
        return self.versions.get("hardware threads / threads used", "?").split("/")[-1].strip()

    @property
    def device(self):
        """--device of the command line, "cpu" when it names none (the default)."""
        words = self.command.split()
        for i, w in enumerate(words[:-1]):
            if w == "--device":
                return words[i + 1]
        return "cpu"


def table_cells(line):
    """The cells of a Markdown table line, stripped: "| a | b |" -> ["a", "b"]."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def is_rule(cells):
    return all(c and set(c) <= {"-", ":"} for c in cells)


def read_report(path):
    """A Report from a docs/benchmarks.md that scripts/report.py wrote."""
    rep = Report()
    section, header, in_command = "", None, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("```"):
                in_command = not in_command and not rep.command
                continue
            if in_command:
                rep.command = line.strip()
                continue
            if line.startswith("(grid: ") and rep.grid == "?":
                rep.grid = line[len("(grid: "):].split(";")[0].split(")")[0].strip()
            if line.startswith("## "):
                section, header = line, None
                continue
            if section.startswith(PEERS) and line.startswith("Network: ") and not rep.network:
                rep.network = line[len("Network: "):]
            if not line.startswith("|"):
                header = None  # a table ends at the first line that is not one of its rows
                continue
            cells = table_cells(line)
            if header is None:
                header = cells
                continue
            if is_rule(cells) or len(cells) != len(header):
                continue
            if section == VERSIONS and len(cells) == 2:
                rep.versions[cells[0]] = cells[1]
            elif section.startswith(PEERS) and header[:2] == ["implementation", "N_t"]:
                rep.peers[(cells[0], int(cells[1]))] = dict(zip(header, cells))
    return rep


def peers_mismatch(rep, grid, network, threads, device):
    """Why the peers figures of `rep` do not compare with a run of this grid, network ("4 ODE
    blocks, ..." as bench_peers writes it), thread count and device; "" when they do."""
    why = []
    if rep.grid != grid:
        why.append(f"grid {grid} here, {rep.grid} there")
    if not rep.network.startswith(network + ","):
        why.append(f"network {network!r} here, {rep.network.split(', RK2')[0]!r} there")
    if rep.threads != str(threads):
        why.append(f"{threads} thread(s) here, {rep.threads} there")
    if rep.device != device:
        why.append(f"device {device} here, {rep.device} there")
    return "; ".join(why)
