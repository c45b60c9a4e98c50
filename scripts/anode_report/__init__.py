"""What the report scripts share: reading the benchmarks' results, writing tables, describing the
machine, the project's performance targets and the test runners' machine-readable output.

scripts/report.py, gpu_summary.py, paper_table.py, bench_mlp.py and plot_cifar_log.py import it
as `anode_report` (Python puts the script's folder, scripts/, first on the path). Standard library
only: gpu_summary.py runs under whichever python3 holds PyTorch, with nothing else installed.

Not to be confused with benchmarks/python/common.py, the Python twin of the C++ benchmark harness
(the same network, initialisation and meters as benchmarks/harness/models.hpp): that one needs
torch and is imported by the measuring processes; this one only reads what they wrote.

    results   CSV files with '# key=value' metadata lines (the harness's format)
    tables    Markdown and plain-text tables, number formats
    machine   the machine and software a report describes
    targets   the performance targets, each with its threshold, in one place
    testlogs  GoogleTest JSON and CTest JUnit results
    baseline  an earlier docs/benchmarks.md read back, for what changed since
"""
