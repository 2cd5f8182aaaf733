"""``deep-prl active``: score a project for active learning, rank its queue, fine-tune on labels,
recalibrate a model for the project's site.

The same core as the model panel (:mod:`napari_deep_prl.scoring.project`, :mod:`napari_deep_prl.active.strategies`,
:mod:`napari_deep_prl.active.finetune`), so a session prepared on the command line (e.g. on a GPU machine) is
picked up by the viewer, and a lesion scores as `deep-prl score` scores it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_deep_prl.active import strategies as active
from napari_deep_prl.active.finetune import finetune, recalibrate_project
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, print_table, write_table
from napari_deep_prl.cli.calibrate import save_site_model
from napari_deep_prl.cli.train import add_accept_worse, network_count, report_comparison
from napari_deep_prl.model.backend import Model, load_model
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.model.crossfit import DEFAULT_MODELS
from napari_deep_prl.model.train import TrainConfig
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.scoring.score import checked_decision


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl active``."""
    p.description = "Active learning on a project (see docs/active_learning.md)."
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("project", help="project folder")
        parser.add_argument("--model", action="append", required=True,
                            help="checkpoint (.pt); repeat for an ensemble; score and rank also take one ONNX file "
                                 "written by `deep-prl export`")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    score = actions.add_parser("score", help="score every lesion and store the predictions",
                               description="Prints the project's PRL counts (as the model panel "
                                           "shows them); -o writes them per subject.")
    common(score)
    score.add_argument("--cohort-decision", action="store_true",
                       help="call PRL the project's most probable lesions together, as many as "
                            "maximise the F1 their calibrated probabilities expect (see "
                            "`deep-prl score --help`); default: each at the model's threshold")
    score.add_argument("-o", "--output", metavar="SUBJECTS.tsv",
                       help="per-subject counts: lesions, prl_count, prl_ge1, prl_ge4")
    score.set_defaults(func=run_score)

    rank = actions.add_parser("rank", help="write the queue order of a strategy",
                              description="Scores missing for the model version are computed "
                                          "and stored first.")
    common(rank)
    rank.add_argument("--strategy", choices=active.STRATEGIES, default="entropy")
    rank.add_argument("--seed", type=int, default=0, help="seed of the random order")
    rank.add_argument("-o", "--output", help="output table; default: TSV on stdout")
    rank.set_defaults(func=run_rank)

    tune = actions.add_parser("finetune", help="train on the project's labels; save a version")
    tune.add_argument("project", help="project folder")
    tune.add_argument("--model", help="checkpoint to start from (default: from scratch); an ensemble "
                                       "is fine-tuned member by member, cross-fitted on the labelled subjects")
    tune.add_argument("--models", type=int, metavar="K",
                      help=f"networks, cross-fitted on the labelled subjects ({DEFAULT_MODELS} from scratch; "
                           "with --model, as many as it holds); 1 trains a single network")
    tune.add_argument("--source", default="consensus",
                      help="'consensus', a rater id or a reference id (imported PRL masks: "
                           "'prl_mask')")
    tune.add_argument("--epochs", type=int, default=10)
    tune.add_argument("--lr", type=float, default=1e-4)
    tune.add_argument("--val-fraction", type=float, default=0.2,
                      help="patients held out to validate a single network (0.2)")
    tune.add_argument("--device", default="auto")
    add_accept_worse(tune)
    tune.add_argument("--quiet", action="store_true")
    tune.set_defaults(func=run_finetune)

    site = actions.add_parser("calibrate", help="recalibrate a model for the project's site on its labels",
                              description="Refit the model's calibration and decision threshold on the project's "
                                          "labelled lesions, keeping its networks, and save it as SITE_MODEL.pt: the "
                                          "model panel's 'Recalibrate for this site…' (`deep-prl calibrate` takes a "
                                          "manifest's labels instead).")
    common(site)
    site.add_argument("--source", default="consensus",
                      help="'consensus', a rater id or a reference id (imported PRL masks: 'prl_mask')")
    site.add_argument("-o", "--output", required=True, metavar="SITE_MODEL.pt", help="the recalibrated model to write")
    site.set_defaults(func=run_calibrate)


def _scores(args: argparse.Namespace, project: Project, checkpoints: Model) -> tuple[str, object]:
    from napari_deep_prl.scoring.project import model_version, score_project

    scores = run_with_tqdm(score_project(project, checkpoints, device=args.device), desc="scoring",
                           disable=args.quiet)
    return model_version(checkpoints), scores


def run_score(args: argparse.Namespace) -> int:
    from napari_deep_prl.scoring.project import project_scores

    check_output(args.output)
    checkpoints = load_model(*args.model)
    decision = "expected_f1" if args.cohort_decision else "validation"
    checked_decision(checkpoints, None, decision)  # before the work, not after it
    with Project.open(args.project) as project:
        version, _ = _scores(args, project, checkpoints)
        decided = project_scores(project, checkpoints, version, decision)
    counts = decided.subjects
    print(f"{len(decided.lesions)} lesions scored by model version {version}: "
          f"{int(counts['prl_count'].sum())} called PRL (prl_probability >= {decided.threshold:.4g}); "
          f"{int(counts['prl_ge1'].sum())} of {len(counts)} subjects with >= 1 PRL, "
          f"{int(counts['prl_ge4'].sum())} with >= 4", file=sys.stderr)
    if args.output:
        write_table(counts, args.output)
    return 0


def run_rank(args: argparse.Namespace) -> int:
    from napari_deep_prl.model.inference import binary_entropy

    check_output(args.output)
    with Project.open(args.project) as project:
        version, scores = _scores(args, project, load_model(*args.model))
        strategy = active.make_strategy(args.strategy, scores, version=version, seed=args.seed)
        order = strategy.rank(project.lesions())
    table = scores.set_index("lesion_key").loc[order].reset_index()
    table.insert(0, "position", range(len(table)))
    table = table.assign(entropy=binary_entropy(table["prl_probability"].to_numpy()), strategy=args.strategy,
                         model_version=version)[
        ["position", "subject", "lesion", "prl_probability", "entropy", "uncertainty_sd", "bald", "strategy",
         "model_version"]]
    if args.output:
        write_table(table, args.output)
    else:
        print_table(table, sys.stdout, float_format=None)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    config = TrainConfig(epochs=args.epochs, lr=args.lr, val_fraction=args.val_fraction,
                         device=args.device)
    init = load_models(args.model) if args.model else []
    models = network_count(args.models, init, args.model)
    with Project.open(args.project) as project:
        result = run_with_tqdm(finetune(project, init, config, models=models, source=args.source),
                               desc="fine-tuning", disable=args.quiet)
    print(f"{result.summary()} ({result.path})", file=sys.stderr)
    if result.comparison is None:
        return 0
    return report_comparison(result.comparison, result.path, args.model, args.accept_worse)


def run_calibrate(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_output(output)
    checkpoints = load_models(*args.model)
    with Project.open(args.project) as project:
        result = run_with_tqdm(recalibrate_project(project, checkpoints, args.source, device=args.device),
                               desc="recalibrate", disable=args.quiet)
    save_site_model(result, output)
    return 0
