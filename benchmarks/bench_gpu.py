"""Training through the CLI on a GPU (or, ``--quick``, a CPU): an ensemble stacked against one network after another.

Simulates a cohort (``deep-prl simulate``) and trains it with ``deep-prl train``, each run a fresh
process, for the default and the paper preset, in three ways:

* **one by one** (the baseline): ``--stack off --batch-size 32``, the networks one after another,
  as a CPU trains them (and as a GPU did before stacking);
* **stacked**: ``--stack on``, the networks in one forward and backward pass per step, 32 patches
  per network (what ``--stack auto``, the default, does on a GPU);
* **stacked, auto batch**: ``--stack on --batch-size auto`` (the largest power of two up to 256
  that fits in half the free GPU memory; 32 on a CPU).

Printed for each run: the command's wall time (process start and patch extraction included),
the training seconds the checkpoints record (steps and validation: one network's after another
summed, or the stacked run's), patches/s (patches trained, networks × epochs × steps × batch,
over those seconds), and the ratios of patches/s and wall time to the baseline of the same preset,
measured in the same run of this script. The device, GPU name and torch version come first,
then a check that stacking trains as one network alone does on this device (two networks on
random patches, float32: the largest weight and output differences, from rounding only; on a
CPU 2026-12-06 1.5e-3 and 1e-5, as Adam's first steps move a weight whose gradient is rounding
noise by about the learning rate either way), which also runs the GPU-only paths (the patch set
staged on the device, pinned copies).

Run on a GPU machine: ``python benchmarks/bench_gpu.py`` (10 subjects, 3 networks, 10 epochs:
a few minutes on one GPU; ``--epochs``, ``--models``, ``--subjects`` change it). On a CPU, to check
that it works: ``python benchmarks/bench_gpu.py --quick`` (4 small subjects, 2 networks, one
short epoch of 16³ patches: a few minutes on 2 cores; the ratios there say nothing of a GPU).
The package needs its core dependencies there (nibabel, which a GPU image may lack, can be carried
as a wheel). Timings taken while other processes use the machine are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.inference import network_probabilities
from napari_deep_prl.model.train import TrainConfig, train, train_together

VARIANTS = {
    "one by one": ["--stack", "off", "--batch-size", "32"],
    "stacked": ["--stack", "on", "--batch-size", "32"],
    "stacked, auto batch": ["--stack", "on", "--batch-size", "auto"],
}


def deep_prl(*args: str) -> float:
    """Run ``deep-prl ARGS`` in a fresh process; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", *args], check=True, env=os.environ)
    return time.perf_counter() - start


def trained(model: Path, stacked: bool) -> tuple[int, float, int]:
    """Patches trained, training seconds and batch size, from the checkpoints' records."""
    records = [member.metadata["training"] for member in load_models(model)]
    patches = sum(r["epochs_run"] * r["steps_per_epoch"] * r["config"]["batch_size"] for r in records)
    seconds = [r["seconds"] for r in records]
    return patches, max(seconds) if stacked else sum(seconds), records[0]["config"]["batch_size"]


def equivalence(device: str) -> str:
    """Two default-preset networks trained stacked and each alone, float32, on ``device``: the
    largest weight and output differences (float32 rounding; cuDNN's algorithms may add some)."""
    rng = np.random.default_rng(0)
    n, size = 64, 16
    x = rng.random((n, 3, size, size, size), dtype=np.float32)
    y = (np.arange(n) % 4 == 0).astype(np.int8)
    subject = np.array([f"sub-{i % 8}" for i in range(n)], dtype=object)
    patches = PatchSet(x, y, subject, np.arange(n), np.zeros(n, bool), PatchConfig(size=size))
    config = TrainConfig(epochs=2, samples_per_epoch=64, device=device, precision="float32", stack="on")
    configs, val = [replace(config, seed=seed) for seed in (0, 1)], [["sub-0", "sub-1"], ["sub-2", "sub-3"]]
    stacked = run_to_end(train_together(patches, configs, val, [None, None]))
    weights = outputs = 0.0
    for c, v, run in zip(configs, val, stacked):
        alone = run_to_end(train(patches, replace(c, stack="off"), val_subjects=v)).checkpoint
        mine, theirs = run.checkpoint.model.state_dict(), alone.model.state_dict()
        weights = max(weights, *(float((mine[k].double() - theirs[k].double()).abs().max()) for k in mine))
        scored = [network_probabilities(c, x, ((),), device=device, precision="float32")
                  for c in (run.checkpoint, alone)]
        outputs = max(outputs, float(np.abs(scored[0] - scored[1]).max()))
    return f"stacked against alone, 2 networks, float32: weights within {weights:.1e}, outputs within {outputs:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--presets", nargs="+", default=["default", "paper"])
    parser.add_argument("--subjects", type=int, help="simulated subjects (10; --quick 4)")
    parser.add_argument("--models", type=int, help="networks of the ensemble (3; --quick 2)")
    parser.add_argument("--epochs", type=int, help="epochs (10; --quick 1)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_gpu"))
    args = parser.parse_args()
    quick = args.quick
    subjects = args.subjects or (4 if quick else 10)
    models, epochs = args.models or (2 if quick else 3), args.epochs or (1 if quick else 10)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{subjects} subjects, {models} networks x {epochs} epochs", flush=True)

    print(equivalence(device), flush=True)
    cohort = args.work / "cohort"
    size = ["--fov", "96", "96", "96", "--lesions", "12", "--prl-fraction", "0.4"] if quick else []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", "simulate", str(cohort), "--subjects",
                    str(subjects), "--contrasts", "none", "--overwrite", "--quiet", *size], check=True)
    print(f"simulated in {time.perf_counter() - start:.0f} s", flush=True)
    common = ["--epochs", str(epochs), "--models", str(models), "--device", device, "--quiet"]
    if quick:
        common += ["--patch-size", "16", "--samples-per-epoch", "64"]

    print("x speed: patches/s over the baseline's (above 1: faster); x wall: wall time over the baseline's "
          "(below 1: faster)")
    print(f"{'preset':8s} {'run':20s} {'batch':>5s} {'wall s':>7s} {'train s':>7s} {'patches/s':>9s} "
          f"{'x speed':>7s} {'x wall':>6s}")
    for preset in args.presets:
        baseline: tuple[float, float] | None = None
        for variant, flags in VARIANTS.items():
            model = args.work / f"{preset}-{variant.replace(' ', '_').replace(',', '')}.pt"
            for path in (model, model.with_name(f"{model.stem}_history.tsv"),
                         model.with_name(f"{model.stem}_out_of_fold.tsv")):
                path.unlink(missing_ok=True)
            wall = deep_prl("train", str(cohort / "manifest.csv"), "-o", str(model), "--preset", preset,
                            *common, *flags)
            patches, seconds, batch = trained(model, variant != "one by one")
            rate = patches / seconds
            baseline = baseline or (rate, wall)
            print(f"{preset:8s} {variant:20s} {batch:5d} {wall:7.1f} {seconds:7.1f} {rate:9.1f} "
                  f"{rate / baseline[0]:7.2f} {wall / baseline[1]:6.2f}", flush=True)


if __name__ == "__main__":
    main()
