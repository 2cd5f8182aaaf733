"""Start-up cost of the ``deep-prl`` command: CPU seconds of quick commands, with baselines.

    python benchmarks/bench_startup.py [--repeats 5]

Each command runs in a fresh interpreter, ``--repeats`` times; the figure is the median of the
child's user + system CPU seconds (from the kernel's resource usage, so a busy machine slows the
wall clock but hardly the CPU time). The baselines are measured in the same run: the bare
interpreter (``python -c pass``), ``import pandas`` (the rating store's tables) and
``import torch``; the target for ``--version`` and ``ratings add`` is 0.5 s. ``ratings add``
records a real rating into a small simulated project in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.simulate import simulate_cohort

TARGET_SECONDS = 0.5


def cpu_seconds(args: list[str]) -> float:
    """User + system CPU seconds of ``python ARGS`` in a child process (which must succeed)."""
    child = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"python {' '.join(args)} failed: {child.stderr.read().decode()}")
    child.stderr.close()
    return usage.ru_utime + usage.ru_stime


def median_cpu(args: list[str], repeats: int) -> float:
    return statistics.median(cpu_seconds(args) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (median taken)")
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as tmp:
        manifest = run_to_end(simulate_cohort(Path(tmp) / "cohort", 2, 0, prl_fraction=0.5,
                                                   fov_mm=(64, 64, 64), n_lesions=5))
        Project.init(Path(tmp) / "study", manifest).close()
        cli = ["-m", "napari_deep_prl.cli"]
        add = [*cli, "ratings", "add", str(Path(tmp) / "study"), "--rater", "bench", "--subject", "sub-001",
               "--lesion", "1", "--label", "prl"]
        rows = [
            ("python -c pass", ["-c", "pass"], None),
            ("python -c 'import pandas'", ["-c", "import pandas"], None),
            ("python -c 'import torch'", ["-c", "import torch"], None),
            ("deep-prl --version", [*cli, "--version"], TARGET_SECONDS),
            ("deep-prl --help", [*cli, "--help"], None),
            ("deep-prl ratings add", add, TARGET_SECONDS),
            ("every command's parser (build_parser())",
             ["-c", "from napari_deep_prl.cli import build_parser; build_parser()"], None),
        ]
        seconds = {label: median_cpu(args, repeats) for label, args, _ in rows}
    python, torch = seconds["python -c pass"], seconds["python -c 'import torch'"]
    print(f"CPU seconds (user + sys), median of {repeats} runs; {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}")
    print(f"{'command':<42s} {'CPU s':>7s} {'/ python':>9s} {'/ torch':>8s}  target")
    for label, _, target in rows:
        s = seconds[label]
        verdict = "" if target is None else f"<= {target} s: {'met' if s <= target else 'MISSED'}"
        print(f"{label:<42s} {s:7.3f} {s / python:8.1f}x {s / torch:7.2f}x  {verdict}")


if __name__ == "__main__":
    main()
