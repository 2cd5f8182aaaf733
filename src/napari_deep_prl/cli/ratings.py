"""``deep-prl ratings``: add, import, compare and export raters' labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from napari_deep_prl.errors import InputError
from napari_deep_prl.progress import run_with_tqdm
from napari_deep_prl.project import Project
from napari_deep_prl.ratings.agreement import UNSURE_MODES
from napari_deep_prl.ratings.schema import LABELS
from napari_deep_prl.tables import separator_for, write_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ratings", help="add, import, compare and export ratings",
                       description="Work with a project's rating store (see docs/ratings.md).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="record one rating (exit 0 once it is on disk)")
    add.add_argument("project", help="project folder")
    add.add_argument("--rater", required=True, help="rater id (registered on first use)")
    add.add_argument("--subject", required=True)
    add.add_argument("--lesion", required=True, type=int, help="lesion id within the subject")
    add.add_argument("--label", required=True, choices=LABELS)
    add.add_argument("--confidence", type=int, choices=range(1, 6), metavar="1-5")
    add.add_argument("--reason", help="exclusion reason from the project's list")
    add.add_argument("--comment")
    add.set_defaults(func=run_add)

    imp = actions.add_parser(
        "import", help="import ratings from a table or from the manifest's prl_mask",
        description="FILE is a TSV (or .csv) with columns subject, lesion, rater, label and "
                    "optionally confidence, reason, comment. With --from-prl-mask every lesion "
                    "is rated by the named rater: prl when most of its voxels lie in prl_mask.")
    imp.add_argument("project", help="project folder")
    imp.add_argument("file", nargs="?", help="ratings table")
    imp.add_argument("--from-prl-mask", action="store_true",
                     help="import the manifest's prl_mask column instead of a table")
    imp.add_argument("--rater", default="prl_mask", help="rater id for --from-prl-mask")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=run_import)

    agr = actions.add_parser(
        "agreement", help="percent agreement, Cohen's kappa per pair, Fleiss' kappa",
        description="One row per rater pair (rater_a, rater_b, n, percent_agreement, "
                    "cohen_kappa with a subject-bootstrap 95% CI) and a row 'all' with "
                    "fleiss_kappa.")
    agr.add_argument("project", help="project folder")
    agr.add_argument("-o", "--output", help="output table; default: TSV on stdout")
    agr.add_argument("--unsure", choices=UNSURE_MODES, default="category",
                     help="'category': unsure is a third label; 'exclude': drop lesions "
                          "any compared rater called unsure")
    agr.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    agr.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    agr.add_argument("--details", metavar="DIR",
                     help="also write per_subject.tsv, vs_consensus.tsv, "
                          "vs_consensus_per_subject.tsv and intra_rater.tsv into DIR")
    agr.set_defaults(func=run_agreement)

    exp = actions.add_parser(
        "export", help="write the labels as a table",
        description="Default: one row per lesion (subject, lesion, one column per rater id, "
                    "consensus, consensus_method). --long: one row per current rating with "
                    "all fields. --history: every row ever written.")
    exp.add_argument("project", help="project folder")
    exp.add_argument("-o", "--output", required=True, help="output .tsv or .csv")
    kind = exp.add_mutually_exclusive_group()
    kind.add_argument("--long", dest="kind", action="store_const", const="long",
                      help="one row per current rating, with every field")
    kind.add_argument("--history", dest="kind", action="store_const", const="history",
                      help="every row ever written, undo rows included")
    exp.set_defaults(func=run_export, kind="wide")


def run_add(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        rating_id = project.store.add_rating(
            args.rater, args.subject, args.lesion, args.label, confidence=args.confidence,
            reason=args.reason, comment=args.comment, session="cli")
    print(f"saved rating {rating_id}: {args.rater} {args.subject} lesion {args.lesion} "
          f"{args.label}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        if args.from_prl_mask:
            if args.file:
                raise InputError("give either FILE or --from-prl-mask, not both.")
            count = run_with_tqdm(project.import_prl_masks(args.rater), desc="prl_mask",
                                  disable=args.quiet)
        elif args.file:
            count = project.import_ratings(_read_table(Path(args.file)), source=args.file)
        else:
            raise InputError("give a ratings table FILE or --from-prl-mask.")
    print(f"imported {count} ratings into {args.project}", file=sys.stderr)
    return 0


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=separator_for(path), dtype={"subject": str, "rater": str})
    except FileNotFoundError:
        raise InputError(f"{path}: no such file. Check the path.") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: unreadable table ({err}). Give a TSV with a header "
                         "subject, lesion, rater, label.") from err


def run_agreement(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        summary = project.agreement(unsure=args.unsure, n_boot=args.n_boot, seed=args.seed)
    if args.output:
        write_table(summary.pairs, args.output)
    else:
        summary.pairs.to_csv(sys.stdout, sep="\t", index=False, float_format="%.4g")
    if args.details:
        folder = Path(args.details)
        for name in ("per_subject", "vs_consensus", "vs_consensus_per_subject", "intra_rater"):
            write_table(getattr(summary, name), folder / f"{name}.tsv")
    print(f"PRL count ICC(2,1): {summary.prl_count_icc:.3f} over {summary.prl_count_icc_n} "
          "subjects every rater finished", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        table = project.export(args.kind)
    write_table(table, args.output)
    print(f"{len(table)} rows written to {args.output}", file=sys.stderr)
    return 0
