"""Quality table: Deep-PRL vs its no-attention ablation vs the baselines, nested CV.

Simulates a synthetic cohort (once), then runs the nested cross-validation of ``deep-prl cv``
(5 outer x 3 inner folds by default) for every method on the same folds, and prints the table
with the targets (Deep-PRL ROC AUC >= 0.97 and F1 >= 0.85, ahead of every baseline). Deep-PRL
runs with both per-subject and per-patch normalisation.

On 2 CPU cores 15 trainings per method are expensive, so the work folder keeps everything:
the cohort, the patches (cut once per normalisation) and each finished (method, fold). Run it
piecewise, e.g. one fold or one method per call, in parallel if cores allow; a call with
``--report-only`` prints the table from what has finished so far.

    python benchmarks/bench_quality.py [--subjects 30] [--epochs 10] [--lr 1e-3]
        [--methods ...] [--fold 1 --fold 2 ...] [--work out/bench_quality] [--ensemble]
        [--cohort-decision] [--report-only]

The table is printed over the outer folds every method has finished, then what the simulator's
truth says about the errors: each method's ROC AUC of the PRLs against each kind of non-PRL
lesion (plain, central vein, vein-adjacent, homogeneously paramagnetic...) and its recall of
full and partial rims and of weak, medium and strong rims (thirds of the rim's
susceptibility), from the pooled out-of-fold predictions. Each call must use the
same settings for a method (a fold run with other epochs is refused, not mixed in).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.data.cohort import open_cohort
from napari_deep_prl.evaluation.crossval import (
    COHORT,
    ENSEMBLE,
    CVConfig,
    lesion_truth,
    merge,
    run_cv,
)
from napari_deep_prl.evaluation.methods import (
    METHOD_NAMES,
    MethodSettings,
    build_methods,
)
from napari_deep_prl.model.metrics import summarise

BASELINES = ("no_attention", "rimnet", "radiomics")
COLUMNS = {"f1": "F1", "sensitivity": "Sens", "specificity": "Spec", "ppv": "PPV",
           "roc_auc": "ROC AUC"}


def cohort_manifest(work: Path, subjects: int, seed: int) -> Path:
    """The benchmark cohort's manifest, simulated on first use."""
    from napari_deep_prl.simulate import simulate_cohort

    manifest = work / "cohort" / "manifest.csv"
    if not manifest.exists():
        run_with_tqdm(simulate_cohort(work / "cohort", subjects, seed), desc="simulate")
    return manifest


def print_table(report: Path, config: dict, cohort_decision: bool = False) -> None:
    """Methods side by side on the outer folds they all finished, run time and the targets."""
    records = {}
    for method in merge(report, cohort_decision=cohort_decision):
        folds = json.loads((report / method / "metrics.json").read_text())["folds"]
        records[method] = {f["fold"]: f for f in folds}
    common = sorted(set.intersection(*(set(r) for r in records.values())))
    if not common:
        raise SystemExit(f"no outer fold finished by every method yet: {records.keys()}")
    rows, means = [], {}
    for method, folds in records.items():
        summary = summarise([folds[f]["metrics"] for f in common])
        means[method] = {k: v["mean"] for k, v in summary.items()}
        rows.append({"method": method, **{
            label: f"{summary[key]['mean']:.3f} ± {summary[key]['std']:.3f}"
            for key, label in COLUMNS.items()},
            "min/fold": sum(folds[f]["seconds"] for f in common) / 60 / len(common)})
    tested = sum(len(records[next(iter(records))][f]["test_subjects"]) for f in common)
    print(f"\ncohort {config['cohort']}; {config['cv']}; outer folds {common} "
          f"({tested} test subjects); CNN epochs {config['epochs']} (preset {config['preset']});"
          " mean ± sample SD over those folds\n")
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.1f"))
    # the paper's selected inner model; the inner-model ensemble; each decided as a cohort
    for suffix in ("", ENSEMBLE, COHORT, ENSEMBLE + COHORT):
        if "deep_prl" + suffix not in means:
            continue
        dp = means["deep_prl" + suffix]
        rivals = [b + suffix for b in BASELINES if b + suffix in means]
        ahead = bool(rivals) and all(dp[k] > means[b][k] for b in rivals for k in ("f1", "roc_auc"))
        print(f"\ntargets, deep_prl{suffix}: ROC AUC {dp['roc_auc']:.3f} (>= 0.97: "
              f"{dp['roc_auc'] >= 0.97}), F1 {dp['f1']:.3f} (>= 0.85: {dp['f1'] >= 0.85}); "
              f"ahead of {', '.join(rivals) or 'no baseline run yet'} on F1 and AUC: {ahead}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--patch-size", type=int, default=28)
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: the training default, 1e-3)")
    parser.add_argument("--outer", type=int, default=5)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--fold", type=int, action="append")
    parser.add_argument("--work", type=Path, default=Path("out/bench_quality"))
    parser.add_argument("--ensemble", action="store_true",
                        help="also report each method's inner models averaged (METHOD_ensemble)")
    parser.add_argument("--no-tta", action="store_true",
                        help="thresholds and test predictions from one view (the baseline of TTA)")
    parser.add_argument("--cohort-decision", action="store_true",
                        help="also report each method with every outer fold decided as a cohort (METHOD_cohort)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    report = args.work / "report"
    if not args.report_only:
        start = time.perf_counter()
        cohort = open_cohort(cohort_manifest(args.work, args.subjects, args.seed))
        overrides = ({} if args.lr is None else {"lr": args.lr}) | ({"tta": False} if args.no_tta else {})
        settings = MethodSettings(epochs=args.epochs, preset=args.preset, device="cpu",
                                  patch_size=args.patch_size,
                                  cache=args.work / "cache", train_overrides=overrides)
        truth = run_with_tqdm(lesion_truth(cohort), desc="lesions")
        methods = run_with_tqdm(build_methods(args.methods.split(","), cohort, settings, truth),
                                desc="inputs")
        run_with_tqdm(run_cv(methods, truth, report,
                             CVConfig(args.outer, args.inner, args.seed, args.ensemble),
                             folds=args.fold))
        print(f"this call: {(time.perf_counter() - start) / 60:.1f} min wall")
    splits = pd.read_csv(report / "splits.tsv", sep="\t")
    print_table(report, {
        "cohort": f"{len(splits)} simulated subjects (seed {args.seed}), "
                  f"{int(splits['prl_lesions'].sum())} PRLs",
        "cv": f"{args.outer} outer x {args.inner} inner folds",
        "epochs": f"{args.epochs}, lr {args.lr or 'default'}, patch {args.patch_size}",
        "preset": args.preset,
    }, args.cohort_decision)
    print_by_kind(report, args.work / "cohort" / "lesions_truth.tsv")


def print_by_kind(report: Path, truth_table: Path) -> None:
    """Per lesion kind of the simulator: where each method's errors are (pooled folds)."""
    from sklearn.metrics import roc_auc_score

    kinds = pd.read_csv(truth_table, sep="\t", dtype={"subject": str})[
        ["subject", "lesion", "kind", "chi_rim_ppm"]]
    tables = {p.name: pd.read_csv(p / "predictions.tsv", sep="\t", dtype={"subject": str})
              for p in sorted(report.iterdir()) if (p / "predictions.tsv").exists()}
    common = set.intersection(*(set(t["fold"]) for t in tables.values()))
    columns = {}
    for method, scored in tables.items():
        scored = scored[scored["fold"].isin(common)].merge(kinds, on=["subject", "lesion"],
                                                            validate="one_to_one")
        prls, column = scored[scored["prl_truth"] == 1], {}
        for kind, group in scored[scored["prl_truth"] == 0].groupby("kind"):
            both = pd.concat([prls, group])
            column[f"AUC vs {kind} (n={len(group)})"] = roc_auc_score(both["prl_truth"],
                                                                     both["prl_probability"])
        for kind, group in prls.groupby("kind"):
            column[f"recall of {kind} (n={len(group)})"] = group["prl_prediction"].mean()
        # the rim's susceptibility in thirds: how much a weak rim costs
        for band, group in prls.groupby(pd.qcut(prls["chi_rim_ppm"], 3), observed=True):
            column[f"recall, rim {band.left:.3f}-{band.right:.3f} ppm (n={len(group)})"] = \
                group["prl_prediction"].mean()
        columns[method] = column
    print(f"\nby lesion kind (pooled out-of-fold predictions, folds {sorted(common)}):\n")
    print(pd.DataFrame(columns).to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()
