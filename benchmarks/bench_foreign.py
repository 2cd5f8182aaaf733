"""Deep-PRL on a foreign phantom: trained and scored through the ``deep-prl`` CLI on cohorts that
the package's simulator did not make (:mod:`foreign_phantom`: other anatomy, rim and vein models,
noise, filtering, voxel size, B0 direction and phase sign).

As a newcomer with their own data would: ``deep-prl train`` on the foreign training cohort
(28 subjects, seed 1; ``--epochs 30`` unless told) for each ``--seed``, then ``deep-prl score`` on
the foreign test cohort (16 subjects, seed 2). Prints ROC AUC and F1 against its PRL masks
(confluent lesions left out). ``--transfer A.pt ...`` also scores the test cohort with models
trained on the package's simulator, unchanged, with ``--flip-phase`` (this phantom's phase is
paramagnetic-bright) and without: how far a model carries to another generator.

    python benchmarks/bench_foreign.py [--seeds 0 1] [--epochs 30] [--transfer A.pt ...]
        [--threshold-rule calibrated|best_f1] [--work out/bench_foreign]

Cohorts and models are kept in ``--work``; scores are recomputed on every call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from bench_shift import scored
from foreign_phantom import write_foreign_cohort

from napari_deep_prl.cli import main as cli


def cohort(folder: Path, subjects: int, seed: int) -> Path:
    manifest = folder / "manifest.csv"
    return manifest if manifest.exists() else write_foreign_cohort(folder, subjects, seed)


def row(what: str, metrics: dict[str, float]) -> dict[str, object]:
    return {"model": what, "PRLs": int(metrics["tp"] + metrics["fn"]),
            "lesions": int(metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"]),
            "ROC AUC": round(metrics["roc_auc"], 3), "F1": round(metrics["f1"], 3),
            "sensitivity": round(metrics["sensitivity"], 3), "PPV": round(metrics["ppv"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (0)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (30)")
    parser.add_argument("--transfer", type=Path, nargs="+", default=[],
                        help="models trained on the package's simulator, scored unchanged")
    parser.add_argument("--threshold-rule", help="passed to deep-prl train (default: its default)")
    parser.add_argument("--work", type=Path, default=Path("out/bench_foreign"))
    args = parser.parse_args()
    rule = ("--threshold-rule", args.threshold_rule) if args.threshold_rule else ()
    train = cohort(args.work / "train", 28, 1)
    test = cohort(args.work / "test", 16, 2)

    rows = []
    for seed in args.seeds:
        model = args.work / f"model_e{args.epochs}_s{seed}{'_' + args.threshold_rule if rule else ''}.pt"
        if not model.exists():
            cli(["train", str(train), "-o", str(model), "--epochs", str(args.epochs),
                 "--seed", str(seed), "--quiet", *rule])
        rows.append(row(f"trained here, {args.epochs} epochs, seed {seed} {' '.join(rule)}",
                        scored(test, [model], args.work / f"scores_{model.stem}.tsv")))
    for model in args.transfer:
        for flip in (True, False):
            options = ("--flip-phase",) if flip else ()
            out = args.work / f"scores_transfer_{model.stem}{'_flipped' if flip else ''}.tsv"
            rows.append(row(f"{model.name} (simulator){' --flip-phase' if flip else ''}",
                            scored(test, [model], out, *options)))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
