"""``deep-prl cv``: nested cross-validation of Deep-PRL and the baselines, with the paper's report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.cli._subjects import MANIFEST_HELP, add_bids_arguments, cohort_from_args
from napari_deep_prl.cli._threads import add_threads_argument, set_threads
from napari_deep_prl.model.inference import PRECISIONS

if TYPE_CHECKING:
    from napari_deep_prl.data.cohort import Cohort

CLUSTER_HOWTO = """\
On a cluster, run one outer fold per job into the same report folder, then merge in a job
that depends on them (docs/cluster.md):

  deep-prl cv cohort.csv -o report --fold $SLURM_ARRAY_TASK_ID --threads $SLURM_CPUS_PER_TASK
  deep-prl cv --merge report cohort.csv

A run with --fold never merges; a run of all folds (no --fold) merges at its end. With the
manifest, merging also draws each method's most confident errors (missed.png, false_positives.png).
"""


def _methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one method")
    return names


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl cv``."""
    from napari_deep_prl.evaluation.methods import DEFAULT_METHODS, METHOD_NAMES

    p.description = ("Patients are split into outer folds stratified by PRL count (0, 1-3, 4-7, "
                     ">7); inside each, inner folds train models and the best validation F1 is "
                     "tested on the outer fold. Writes per method report.md/.csv (TP, FP, FN, "
                     "TN, F1, specificity, sensitivity, PPV, ROC AUC per fold, average, sample "
                     "SD), roc.png, predictions.tsv, metrics.json and kinds.md (the metrics by lesion kind: "
                     "non-confluent, confluent parts, confluent components kept whole, all), plus comparison.md "
                     "and kinds.md of every method.")
    p.epilog = CLUSTER_HOWTO
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("manifest", nargs="?", metavar="MANIFEST",
                   help=f"{MANIFEST_HELP}; its subjects need ground truth (prl_mask or prl_labels)")
    p.add_argument("-o", "--output", type=Path, help="report folder")
    p.add_argument("--merge", type=Path, metavar="REPORT_DIR",
                   help="only merge the fold results already in REPORT_DIR into the report "
                        "(and, given the manifest, draw the error galleries)")
    p.add_argument("--outer", type=int, default=5, help="outer folds (default 5)")
    p.add_argument("--inner", type=int, default=3, help="inner folds (default 3)")
    p.add_argument("--fold", type=int, action="append",
                   help="run only this outer fold (1-based; repeatable) and do not merge; default: all "
                        "folds, then the merge")
    p.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(METHOD_NAMES)} "
                        f"(default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per model (100)")
    p.add_argument("--preset", default="default", help="network size preset: default or paper")
    p.add_argument("--patch-size", type=int, default=28, help="patch edge in voxels (28)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic in training and testing: auto (default: bfloat16 where the hardware "
                        "computes it natively), float32 or bfloat16")
    p.add_argument("--keep-confluent", action="store_true",
                   help="also train on and test confluent lesions (the paper left them out; kinds.md reports "
                        "the metrics by lesion kind either way)")
    p.add_argument("--ensemble", action="store_true",
                   help="also report each method's inner models averaged (as METHOD_ensemble)")
    p.add_argument("--cohort-decision", action="store_true",
                   help="also report each method with every outer fold's lesions decided together, as "
                        "`score --cohort-decision` decides a study's cohort (as METHOD_cohort; works with --merge; "
                        "methods with calibrated probabilities only, so not the radiomics baseline)")
    p.add_argument("--no-tta", action="store_true",
                   help="CNN thresholds and test predictions from one view instead of the 8-flip average")
    p.add_argument("--errors", type=int, default=8, metavar="N",
                   help="draw each method's N most confident missed PRLs and false positives "
                        "into its report folder (missed.png, false_positives.png; default 8, "
                        "0 for none)")
    p.add_argument("--cache", type=Path, help="folder keeping the cohort's patches between jobs")
    add_threads_argument(p)
    add_bids_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_deep_prl.base.progress import run_with_tqdm
    from napari_deep_prl.base.tables import check_output
    from napari_deep_prl.evaluation.crossval import (
        CVConfig,
        lesion_truth,
        missing_folds,
        run_cv,
    )
    from napari_deep_prl.evaluation.methods import MethodSettings, build_methods

    if args.errors < 0:
        raise InputError(f"--errors {args.errors}: give a number of lesions, 0 for none")
    set_threads(args.threads)
    if args.merge:
        if args.output:
            raise InputError("--merge REPORT_DIR takes no -o: the report is written in place")
        cohort = cohort_from_args(args.manifest, args) if args.manifest else None
        return _merge(args.merge, cohort, errors=args.errors, quiet=args.quiet,
                      cohort_decision=args.cohort_decision)
    if not args.manifest or not args.output:
        raise InputError("give a manifest and -o REPORT_DIR (or --merge REPORT_DIR)")
    check_output(args.output, folder=True)
    check_output(args.cache, folder=True)
    if args.epochs < 1:
        raise InputError(f"--epochs {args.epochs}: train at least one epoch")
    cohort = cohort_from_args(args.manifest, args)
    config = CVConfig(outer=args.outer, inner=args.inner, seed=args.seed,
                      ensemble=args.ensemble)
    settings = MethodSettings(epochs=args.epochs, preset=args.preset, device=args.device,
                              patch_size=args.patch_size,
                              exclude_confluent=not args.keep_confluent, cache=args.cache,
                              train_overrides={"precision": args.precision} | ({"tta": False} if args.no_tta else {}))
    truth = run_with_tqdm(lesion_truth(cohort, exclude_confluent=settings.exclude_confluent),
                          desc="lesions", disable=args.quiet)
    methods = run_with_tqdm(build_methods(args.methods, cohort, settings, truth),
                            desc="inputs", disable=args.quiet)
    run_with_tqdm(run_cv(methods, truth, args.output, config, folds=args.fold),
                  disable=args.quiet)
    if args.fold:  # one task of several: the merge is a step of its own, run once all are done
        missing = {m: f for m, f in missing_folds(args.output, args.methods, args.outer).items() if f}
        todo = "; ".join(f"{m}: {', '.join(map(str, f))}" for m, f in missing.items())
        print((f"folds still to run ({todo}); " if missing else "") +
              f"merge with `deep-prl cv --merge {args.output} {args.manifest}`", file=sys.stderr)
        return 0
    return _merge(args.output, cohort, errors=args.errors, quiet=args.quiet,
                  cohort_decision=args.cohort_decision)


def _merge(report_dir: Path, cohort: Cohort | None = None, *, errors: int, quiet: bool,
           cohort_decision: bool = False) -> int:
    """Merge the folds; with the cohort, also draw the error galleries."""
    import pandas as pd

    from napari_deep_prl.base.progress import run_with_tqdm
    from napari_deep_prl.evaluation.crossval import merge
    from napari_deep_prl.evaluation.error_gallery import draw_error_galleries

    tables = merge(report_dir, cohort_decision=cohort_decision)
    if cohort is not None and errors:
        written = run_with_tqdm(draw_error_galleries(report_dir, cohort, n=errors),
                                desc="error galleries", disable=quiet)
        print(f"error galleries: {len(written)} files (missed.png, false_positives.png per "
              "method)", file=sys.stderr)
    outer = int(pd.read_csv(report_dir / "splits.tsv", sep="\t")["outer"].max())
    for method, table in tables.items():
        if table.shape[1] - 2 < outer:
            print(f"note: {method} has {table.shape[1] - 2} of {outer} folds so far",
                  file=sys.stderr)
    print((report_dir / "comparison.md").read_text())
    if (report_dir / "kinds.md").exists():
        print((report_dir / "kinds.md").read_text())
    print(f"report written to {report_dir}", file=sys.stderr)
    return 0
