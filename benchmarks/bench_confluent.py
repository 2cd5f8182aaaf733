"""Confluent PRLs found: the paper's protocol (confluent lesions left out of training and not
scored) against today's (confluent components split into parts, trained on and scored), per
lesion kind, with the non-confluent results side by side.

Simulates a cohort with confluent PRLs (``deep-prl simulate --confluent-prl-rate``), trains one
network on all but ``--held-out`` subjects twice through the CLI — ``deep-prl train
--exclude-confluent`` (*before*) and ``deep-prl train`` (*after*), same seed and epochs — and
scores the held-out subjects with each (``deep-prl score`` with their PRL masks). Per lesion kind
(non-confluent, confluent parts, confluent components kept whole, all): the PRLs found
(sensitivity at the model's threshold), PPV and ROC AUC. *Before*, confluent lesions are not
scored, as in the paper: their PRLs count as missed. The before model's scores of them, had
they been scored (what ``score`` warns about), are printed on a line of their own.

    python benchmarks/bench_confluent.py [--subjects 24] [--held-out 8] [--epochs 12]
        [--confluent-prl-rate 0.5] [--prl-fraction 0.2] [--threads 1] [--work out/bench_confluent]

The cohort and the models are kept in ``--work`` and reused. The after model is
``--work/model.pt``, trained on ``--work/cohort/train.csv`` (all but the last ``--held-out``
subjects), the layout ``bench_click.py --work`` reads: rerun the click benchmark on it with the
same ``--held-out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.cli import main as cli
from napari_deep_prl.evaluation.report import KIND_NAMES
from napari_deep_prl.scoring.score import truth_by_kind


def scores_of(model: Path, test: Path, out: Path, threads: int) -> pd.DataFrame:
    """The held-out subjects scored by ``model`` through ``deep-prl score`` (kept in ``out``)."""
    if not out.exists():
        cli(["score", str(test), "--model", str(model), "-o", str(out), "--threads", str(threads), "--quiet"])
    return pd.read_csv(out, sep="\t", na_values="n/a", dtype={"subject": str})


def cell(value: float, count: bool = False) -> str:
    return "n/a" if np.isnan(value) else f"{value:.0f}" if count else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--confluent-prl-rate", type=float, default=0.5)
    parser.add_argument("--prl-fraction", type=float, default=0.2,
                        help="PRLs per lesion (the simulator's default 0.08 leaves too few confluent ones to count)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("out/bench_confluent"))
    args = parser.parse_args()

    start = time.perf_counter()
    manifest = args.work / "cohort" / "manifest.csv"
    if not manifest.exists():
        cli(["simulate", str(manifest.parent), "--subjects", str(args.subjects), "--seed", "5",
             "--voxel-size", "1.25", "--contrasts", "flair", "--prl-fraction", str(args.prl_fraction),
             "--confluent-prl-rate", str(args.confluent_prl_rate), "--quiet"])
    rows = pd.read_csv(manifest)
    train, test = manifest.with_name("train.csv"), manifest.with_name("test.csv")
    rows.iloc[:-args.held_out].to_csv(train, index=False)
    rows.iloc[-args.held_out:].to_csv(test, index=False)
    models = {"before": args.work / "before.pt", "after": args.work / "model.pt"}
    for name, model in models.items():
        if not model.exists():
            cli(["train", str(train), "-o", str(model), "--epochs", str(args.epochs), "--models", "1",
                 "--threads", str(args.threads), "--quiet", *(["--exclude-confluent"] if name == "before" else [])])
    scored = {name: scores_of(model, test, args.work / f"{name}.tsv", args.threads) for name, model in models.items()}

    confluent = scored["before"]["confluent"].astype(bool)
    kinds = {"before": truth_by_kind(scored["before"].assign(  # the paper's protocol: not scored
                 prl_probability=scored["before"]["prl_probability"].where(~confluent))),
             "after": truth_by_kind(scored["after"]),
             "before, scored anyway": truth_by_kind(scored["before"])}
    print(f"held-out subjects {args.held_out}, one network of {args.epochs} epochs each, trained on "
          f"{len(rows) - args.held_out} subjects; {time.perf_counter() - start:.0f} s this call")
    print("| kind | lesions | PRLs | found before | found after | sensitivity before → after | "
          "PPV before → after | ROC AUC before → after | before model, scored anyway: found, PPV, AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    before, after, anyway = kinds["before"], kinds["after"], kinds["before, scored anyway"]
    for kind in after.index:
        print(f"| {KIND_NAMES[kind]} | {after.at[kind, 'lesions']} | {after.at[kind, 'prls']} | "
              f"{before.at[kind, 'tp']} | {after.at[kind, 'tp']} | "
              f"{cell(before.at[kind, 'sensitivity'])} → {cell(after.at[kind, 'sensitivity'])} | "
              f"{cell(before.at[kind, 'ppv'])} → {cell(after.at[kind, 'ppv'])} | "
              f"{cell(before.at[kind, 'roc_auc'])} → {cell(after.at[kind, 'roc_auc'])} | "
              f"{anyway.at[kind, 'tp']}, {cell(anyway.at[kind, 'ppv'])}, {cell(anyway.at[kind, 'roc_auc'])} |")


if __name__ == "__main__":
    main()
