"""Arguments of the commands that read either a cohort or one subject's files."""

from __future__ import annotations

import argparse

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.cohort import open_cohort
from napari_deep_prl.data.images import SubjectPaths


def add_subject_arguments(parser: argparse.ArgumentParser) -> None:
    """``MANIFEST`` (a manifest CSV or folder) or ``--phase/--mp2rage/--mask [--prl-mask|--prl-labels]``."""
    parser.add_argument("manifest", nargs="?", metavar="MANIFEST",
                        help="cohort manifest CSV or folder (sub-<label> layout or holding manifest.csv)")
    single = parser.add_argument_group("one subject instead of a manifest")
    single.add_argument("--phase", help="phase image (paramagnetic = dark)")
    single.add_argument("--mp2rage", help="MP2RAGE UNI or T1-weighted image on the phase grid")
    single.add_argument("--mask", help="lesion mask on the phase grid (binary or instance labels)")
    truth = single.add_mutually_exclusive_group()
    truth.add_argument("--prl-mask", help="optional PRL mask (ground truth)")
    truth.add_argument("--prl-labels", metavar="TABLE",
                       help="optional lesion label table (ground truth; see docs/data.md)")
    single.add_argument("--label-column", metavar="COLUMN",
                        help="the column of --prl-labels holding the label (default: consensus, as in "
                             "a project export; in a table without it, its prl or label column)")
    single.add_argument("--subject", help="subject id (default: the sub-<label> of the phase file name)")


def subjects_from_args(args: argparse.Namespace) -> list[SubjectPaths]:
    """The subjects named on the command line, not loaded yet."""
    single = [args.phase, args.mp2rage, args.mask]
    if args.manifest and any(single):
        raise InputError("give either a manifest or --phase/--mp2rage/--mask, not both.")
    if args.manifest and args.label_column:
        raise InputError("--label-column goes with --prl-labels; a manifest names each table's label "
                         "column in its prl_labels_column column (docs/data.md).")
    if args.manifest:
        return list(open_cohort(args.manifest))
    if all(single):
        return [SubjectPaths.from_files(*single, args.prl_mask, subject=args.subject, prl_labels=args.prl_labels,
                                        prl_labels_column=args.label_column)]
    raise InputError("give a manifest, or all of --phase, --mp2rage and --mask.")
