"""The training budget through the CLI: ``deep-prl train --epochs 30`` on 28 subjects, then
``deep-prl score`` on subjects it never saw.

Simulates ``--subjects`` subjects (34 by default: 28 to train on, about 750 lesions at ~10 %
PRLs, and 6 held out), runs the two commands a newcomer would run — in-process through the
CLI's entry point, so the code path is the same — and prints the training wall time against the
issue's budget (≤ 20 min on 2 CPU cores) and the held-out metrics ``deep-prl score`` reports
against the PRL masks.

    python benchmarks/bench_budget.py [--subjects 34] [--held-out 6] [--epochs 30] [--seed 11]
        [--work out/bench_budget]

The cohort is simulated once and kept in ``--work``; every call retrains.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.cli import main as cli
from napari_deep_prl.score import truth_metrics


def split_manifest(manifest: Path, held_out: int) -> tuple[Path, Path]:
    rows = pd.read_csv(manifest)
    train, test = manifest.with_name("train.csv"), manifest.with_name("test.csv")
    rows.iloc[:-held_out].to_csv(train, index=False)
    rows.iloc[-held_out:].to_csv(test, index=False)
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=34)
    parser.add_argument("--held-out", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11, help="cohort seed (11)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_budget"))
    args = parser.parse_args()

    manifest = args.work / "cohort" / "manifest.csv"
    if not manifest.exists():
        cli(["simulate", str(manifest.parent), "--subjects", str(args.subjects),
             "--seed", str(args.seed), "--prl-fraction", "0.10", "--quiet"])
    train, test = split_manifest(manifest, args.held_out)
    model = args.work / "model.pt"
    start = time.perf_counter()
    cli(["train", str(train), "-o", str(model), "--epochs", str(args.epochs), "--quiet"])
    train_s = time.perf_counter() - start
    scores = args.work / "scores.tsv"
    start = time.perf_counter()
    cli(["score", str(test), "--model", str(model), "-o", str(scores), "--quiet"])
    score_s = time.perf_counter() - start

    table = pd.read_csv(scores, sep="\t", na_values="n/a")
    metrics = truth_metrics(table)
    assert metrics is not None, "the simulated cohort has PRL masks"
    train_rows = pd.read_csv(model.with_name("model_history.tsv"), sep="\t")
    print(f"\ntrain: {len(pd.read_csv(train))} subjects, {args.epochs} epochs: "
          f"{train_s / 60:.1f} min wall (budget 20 min on 2 CPU cores)")
    print(f"best validation epoch: {train_rows.loc[train_rows['val_f1'].idxmax()].to_dict()}")
    print(f"score: {args.held_out} held-out subjects, {len(table)} lesions, "
          f"{int(table['prl_truth'].sum())} PRLs: {score_s:.1f} s")
    print("held out: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in
                                   ("f1", "sensitivity", "specificity", "ppv", "roc_auc")))


if __name__ == "__main__":
    main()
