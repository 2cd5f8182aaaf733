"""A trained model on other acquisitions: ``deep-prl score`` on cohorts simulated with one
acquisition setting held fixed.

Every cohort is simulated with the same seed, so the anatomy and the lesions are the same and
only the acquisition differs (the first, with nothing fixed, is the reference: the mix the
default simulator trains on). Each ``--model`` scores every cohort unchanged, and so does their
average when there are several (``deep-prl score --model A.pt --model B.pt ...``); the table gives ROC
AUC and F1 (at each model's own threshold, confluent lesions left out) against the PRL masks.
Without ``--model`` it first trains one as a newcomer would (``deep-prl train --epochs 30`` on
28 simulated subjects, seed 11).

    python benchmarks/bench_shift.py [--model A.pt ...] [--subjects 12] [--seed 41]
        [--work out/bench_shift]

Cohorts and the trained model are kept in ``--work``; scores are recomputed on every call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.cli import main as cli
from napari_deep_prl.scoring.score import truth_metrics

#: Cohort folder -> (what is fixed, the ``deep-prl simulate`` options that fix it).
SHIFTS = {
    "base": ("nothing (the training mix)", []),
    "vox07": ("0.7 mm isotropic voxels", ["--voxel-size", "0.7"]),
    "t7": ("7 T only", ["--field-strength", "7"]),
    "t15": ("1.5 T (not in the training mix)", ["--field-strength", "1.5"]),
    "noisy": ("complex noise 0.10 (mix: 0.02-0.07)", ["--noise", "0.1"]),
    "aniso": ("0.8 x 0.8 x 2.0 mm voxels", ["--voxel-size", "0.8", "0.8", "2.0"]),
}


def simulated(folder: Path, subjects: int, seed: int, options: list[str]) -> Path:
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        cli(["simulate", str(folder), "--subjects", str(subjects), "--seed", str(seed), "--quiet", *options])
    return manifest


def scored(manifest: Path, models: list[Path], out: Path, *options: str) -> dict[str, float]:
    """Ground-truth metrics of ``deep-prl score`` (``options`` passed on) with ``models`` averaged."""
    cli(["score", str(manifest), *(a for m in models for a in ("--model", str(m))), "-o", str(out), "--quiet",
         *options])
    metrics = truth_metrics(pd.read_csv(out, sep="\t", na_values="n/a"))
    if metrics is None:
        raise SystemExit(f"{manifest}: no ground truth to score against")
    return metrics


def default_model(work: Path) -> Path:
    model = work / "model.pt"
    if not model.exists():
        train = simulated(work / "train", 28, 11, ["--prl-fraction", "0.10"])
        cli(["train", str(train), "-o", str(model), "--epochs", "30", "--quiet"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, nargs="+", help="checkpoints to score with (default: train one)")
    parser.add_argument("--subjects", type=int, default=12, help="subjects per cohort (12)")
    parser.add_argument("--seed", type=int, default=41, help="seed of every cohort (41)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_shift"))
    args = parser.parse_args()
    models = args.model or [default_model(args.work)]

    rows = []
    for name, (fixed, options) in SHIFTS.items():
        manifest = simulated(args.work / name, args.subjects, args.seed, options)
        each = [scored(manifest, [m], args.work / f"scores_{name}_{m.stem}.tsv") for m in models]
        auc, f1 = (np.array([m[k] for m in each]) for k in ("roc_auc", "f1"))
        row = {"fixed": fixed, "lesions": each[0]["tp"] + each[0]["fp"] + each[0]["fn"] + each[0]["tn"],
               "PRLs": each[0]["tp"] + each[0]["fn"],
               "ROC AUC (range)": f"{auc.mean():.3f} ({auc.min():.3f}-{auc.max():.3f})",
               "F1 (range)": f"{f1.mean():.3f} ({f1.min():.3f}-{f1.max():.3f})"}
        if len(models) > 1:
            mean = scored(manifest, models, args.work / f"scores_{name}_mean.tsv")
            row |= {"mean of models: ROC AUC": f"{mean['roc_auc']:.3f}", "F1": f"{mean['f1']:.3f}"}
        rows.append(row)
        print(f"{name}: {row}", flush=True)
    print(f"\n{len(models)} model(s), {args.subjects} subjects per cohort, seed {args.seed}:")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
