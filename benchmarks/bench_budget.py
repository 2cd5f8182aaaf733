"""The training budget through the CLI: ``deep-prl train --epochs 30`` on 28 subjects (three
cross-fitted networks, the default), then ``deep-prl score`` on subjects it never saw.

Simulates ``--subjects`` subjects (34 by default: 28 to train on, about 750 lesions at ~10 %
PRLs, and 6 held out), runs the two commands a newcomer would run — in-process through the
CLI's entry point, so the code path is the same — and prints the training wall time against the
issue's budget (≤ 20 min on 2 CPU cores) and the held-out metrics ``deep-prl score`` reports
against the PRL masks.

    python benchmarks/bench_budget.py [--subjects 34] [--held-out 6] [--epochs 30] [--seed 11]
        [--models K [K ...]] [--work out/bench_budget]

The cohort is simulated once and kept in ``--work``; every call retrains.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.cli import main as cli
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.model.crossfit import ensemble_info
from napari_deep_prl.scoring.score import truth_metrics


def split_manifest(manifest: Path, held_out: int) -> tuple[Path, Path]:
    rows = pd.read_csv(manifest)
    train, test = manifest.with_name("train.csv"), manifest.with_name("test.csv")
    rows.iloc[:-held_out].to_csv(train, index=False)
    rows.iloc[-held_out:].to_csv(test, index=False)
    return train, test


def run(train: Path, test: Path, work: Path, epochs: int, models: int | None) -> dict[str, str]:
    """Train with ``models`` networks (None: the CLI's default), score the held-out subjects."""
    name = f"model_k{models}" if models else "model"
    model, scores = work / f"{name}.pt", work / f"scores_{name}.tsv"
    option = ("--models", str(models)) if models else ()
    start = time.perf_counter()
    cli(["train", str(train), "-o", str(model), "--epochs", str(epochs), *option, "--quiet"])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    cli(["score", str(test), "--model", str(model), "-o", str(scores), "--quiet"])
    score_s = time.perf_counter() - start

    table = pd.read_csv(scores, sep="\t", na_values="n/a")
    metrics = truth_metrics(table)
    assert metrics is not None, "the simulated cohort has PRL masks"
    members = load_models(model)
    ensemble = ensemble_info(members)
    validation = ensemble["out_of_fold"] if ensemble else members[0].validation
    return {
        "networks": f"{len(members)}{'' if models else ' (default)'}",
        "train min": f"{train_s / 60:.1f}",
        "validation F1 / AUC": f"{validation['val_f1']:.3f} / {validation['val_auc']:.3f}"
                               f" ({'out of fold' if ensemble else 'split'})",
        "score s": f"{score_s:.1f}",
        "held-out lesions (PRLs)": f"{len(table)} ({int(table['prl_truth'].sum())})",
        **{f"held-out {k}": f"{metrics[k]:.3f}" for k in ("roc_auc", "f1", "sensitivity", "ppv")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=34)
    parser.add_argument("--held-out", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11, help="cohort seed (11)")
    parser.add_argument("--models", type=int, nargs="+", default=[0],
                        help="networks to train, one run each (0: deep-prl train's default)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_budget"))
    args = parser.parse_args()

    manifest = args.work / "cohort" / "manifest.csv"
    if not manifest.exists():
        cli(["simulate", str(manifest.parent), "--subjects", str(args.subjects),
             "--seed", str(args.seed), "--prl-fraction", "0.10", "--quiet"])
    train, test = split_manifest(manifest, args.held_out)
    rows = [run(train, test, args.work, args.epochs, models or None) for models in args.models]
    print(f"\ntrain: {len(pd.read_csv(train))} subjects, {args.epochs} epochs (budget 20 min on 2 CPU cores); "
          f"score: {args.held_out} held-out subjects")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
