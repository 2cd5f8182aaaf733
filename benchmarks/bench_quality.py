"""Quality table: Deep-PRL vs its no-attention ablation vs the baselines, nested CV.

Simulates a synthetic cohort (once), then runs the nested cross-validation of ``deep-prl cv``
(5 outer x 3 inner folds by default) for every method on the same folds, and prints the table
with the targets (Deep-PRL ROC AUC >= 0.97 and F1 >= 0.85, ahead of every baseline). Deep-PRL
runs with both per-subject and per-patch normalisation.

On 2 CPU cores 15 trainings per method are expensive, so the work folder keeps everything:
the cohort, the patches (cut once per normalisation) and each finished (method, fold). Run it
piecewise, e.g. one fold or one method per call, in parallel if cores allow; a call with
``--report-only`` prints the table from what has finished so far.

    python benchmarks/bench_quality.py [--subjects 30] [--epochs 10] [--methods ...]
        [--fold 1 --fold 2 ...] [--work out/bench_quality] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.crossval import CVConfig, lesion_truth, merge, run_cv
from napari_deep_prl.io import open_cohort
from napari_deep_prl.methods import METHOD_NAMES, MethodSettings, build_methods
from napari_deep_prl.progress import run_with_tqdm

BASELINES = ("no_attention", "rimnet", "radiomics")


def cohort_manifest(work: Path, subjects: int, seed: int) -> Path:
    """The benchmark cohort's manifest, simulated on first use."""
    from napari_deep_prl.simulate import simulate_cohort

    manifest = work / "cohort" / "manifest.csv"
    if not manifest.exists():
        run_with_tqdm(simulate_cohort(work / "cohort", subjects, seed), desc="simulate")
    return manifest


def print_table(report: Path, config: dict) -> None:
    """The comparison with fold counts, run time and the targets."""
    tables = merge(report)
    rows = []
    for method, table in tables.items():
        record = json.loads((report / method / "metrics.json").read_text())
        row = {"method": method, "folds": table.shape[1] - 2,
               "train+test min": sum(f["seconds"] for f in record["folds"]) / 60}
        for label in ("F1", "Sensitivity", "Specificity", "PPV", "ROC AUC"):
            row[label] = f"{table.at[label, 'Average']:.3f} ± {table.at[label, 'STD']:.3f}"
        rows.append(row)
    lesions = len(pd.read_csv(report / next(iter(tables)) / "predictions.tsv", sep="\t"))
    print(f"\ncohort {config['cohort']}, {lesions} lesions tested; {config['cv']}; CNN epochs {config['epochs']} "
          f"(preset {config['preset']}); mean ± sample SD over outer test folds\n")
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.1f"))
    if "deep_prl" in tables:
        dp = tables["deep_prl"]
        auc, f1 = dp.at["ROC AUC", "Average"], dp.at["F1", "Average"]
        ahead = all(dp.at[m, "Average"] > tables[b].at[m, "Average"]
                    for b in BASELINES if b in tables for m in ("F1", "ROC AUC"))
        print(f"\ntargets: Deep-PRL ROC AUC {auc:.3f} (>= 0.97: {auc >= 0.97}), F1 {f1:.3f} "
              f"(>= 0.85: {f1 >= 0.85}), ahead of {', '.join(b for b in BASELINES if b in tables)}"
              f" on F1 and AUC: {ahead}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--outer", type=int, default=5)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--fold", type=int, action="append")
    parser.add_argument("--work", type=Path, default=Path("out/bench_quality"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    report = args.work / "report"
    if not args.report_only:
        start = time.perf_counter()
        cohort = open_cohort(cohort_manifest(args.work, args.subjects, args.seed))
        settings = MethodSettings(epochs=args.epochs, preset=args.preset, device="cpu",
                                  cache=args.work / "cache")
        truth = run_with_tqdm(lesion_truth(cohort), desc="lesions")
        methods = run_with_tqdm(build_methods(args.methods.split(","), cohort, settings, truth),
                                desc="inputs")
        run_with_tqdm(run_cv(methods, truth, report,
                             CVConfig(args.outer, args.inner, args.seed), folds=args.fold))
        print(f"this call: {(time.perf_counter() - start) / 60:.1f} min wall")
    splits = pd.read_csv(report / "splits.tsv", sep="\t")
    print_table(report, {
        "cohort": f"{len(splits)} simulated subjects (seed {args.seed}), "
                  f"{int(splits['prl_lesions'].sum())} PRLs",
        "cv": f"{args.outer} outer x {args.inner} inner folds", "epochs": args.epochs,
        "preset": args.preset,
    })


if __name__ == "__main__":
    main()
