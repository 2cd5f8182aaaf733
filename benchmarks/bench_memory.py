"""Peak memory of ``deep-prl score`` and ``deep-prl train`` against the lesion count of one subject.

One subject on a small grid (112 × 112 × 108 voxels of 1 mm) carries N lesions of 2 × 2 × 2
voxels on a lattice 5 voxels apart (one in 12 a PRL), for N = 20, 1,000 and 10,000: the subject of
the memory tests (``tests/capped.py``). The grid is the same for all, so loading it costs the
same. Each command runs in its own process, and its peak resident memory (the kernel's high-water mark,
``ru_maxrss`` from
``os.wait4``) is printed with its ratio to the peak of a process that imports the same command
line and loads that subject alone (the baseline, measured in the same run).

* ``score``: a default-preset model (trained first by ``deep-prl train --models 1 --epochs 1
  --no-tta`` on the cohort of the smallest N) scores the subject, one view, float32.
* ``train``: ``--models 1 --epochs 1 --samples-per-epoch 64 --no-tta`` on a cohort of that
  subject and a 20-lesion one (training needs a second patient to validate on), twice: with a
  split seed that trains on the subject (the 20-lesion one validates), and with one that holds
  it out for validation (its lesions scored before and after the epoch).

Target (issue 31): flat in the lesion count beyond one batch. Run:
``python benchmarks/bench_memory.py [LESIONS ...]`` (default 20 1000 10000).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.model.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from capped import lattice_subject

BASELINE = ("from napari_deep_prl.cli import build_parser; build_parser(); "
            "from napari_deep_prl.data.images import open_cohort; open_cohort(sys.argv[1])[0].load()")


def peak_mb(args: list[str]) -> tuple[float, int, str]:
    """Peak RSS (MB) of a child process, its exit status and the last line of its stderr."""
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return usage.ru_maxrss / 1024, child.returncode, lines[-1] if lines else ""


def cli(*args: str) -> list[str]:
    return ["-m", "napari_deep_prl.cli", *args]


def split_seed(lesions: dict[str, int], validated: str) -> int:
    """A ``train --seed`` whose validation split (one subject of two) is ``validated``."""
    prls = {subject: -(-n // 12) for subject, n in lesions.items()}  # one lesion in 12 (lattice_subject)
    return next(seed for seed in range(1000)
                if validation_shares(prls, 1, TrainConfig().val_fraction, seed)[0] == [validated])


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [20, 1000, 10000]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: lesions of 8 voxels on a 112 x 112 x 108 grid")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        companion = lattice_subject(root, "sub-small", 20)
        cohorts = {}
        for n in counts:
            big = lattice_subject(root, f"sub-n{n}", n)
            cohorts[n] = (write_manifest([big], root / f"alone-{n}.csv"),
                          write_manifest([big, companion], root / f"cohort-{n}.csv"))
        model = root / "model.pt"
        first = min(counts)
        _, status, line = peak_mb(cli("train", str(cohorts[first][1]), "-o", str(model), "--models", "1",
                                      "--epochs", "1", "--samples-per-epoch", "64", "--no-tta",
                                      "--quiet", "--threads", "2"))
        if status != 0:
            raise SystemExit(f"training the model to score with failed: {line}")
        print(f"{'lesions':>8} {'baseline MB':>12} {'score MB':>9} {'x base':>7} {'train MB':>9} {'x base':>7} "
              f"{'validate MB':>12} {'x base':>7}")
        for n in counts:
            alone, cohort = cohorts[n]
            base, status, line = peak_mb(["-c", "import sys; " + BASELINE, str(alone)])
            if status != 0:
                raise SystemExit(f"loading the subject failed: {line}")
            runs = {"score": peak_mb(cli("score", str(alone), "--model", str(model), "-o",
                                         str(root / f"scores-{n}.tsv"), "--precision", "float32",
                                         "--quiet", "--threads", "2"))}
            lesions = {f"sub-n{n}": n, "sub-small": 20}
            for what, validated in (("train", "sub-small"), ("validate", f"sub-n{n}")):
                runs[what] = peak_mb(cli("train", str(cohort), "-o", str(root / f"m-{n}.pt"), "--models", "1",
                                         "--epochs", "1", "--samples-per-epoch", "64", "--no-tta", "--quiet",
                                         "--threads", "2", "--seed", str(split_seed(lesions, validated))))
            (score, *_), (train, *_), (validate, *_) = runs.values()
            print(f"{n:>8} {base:>12.0f} {score:>9.0f} {score / base:>7.2f} {train:>9.0f} {train / base:>7.2f} "
                  f"{validate:>12.0f} {validate / base:>7.2f}")
            for what, (_, status, line) in runs.items():
                if status != 0:
                    print(f"{'':>8} {what} exited {status}: {line}")


if __name__ == "__main__":
    main()
