"""Arguments of the commands that read either a cohort or one subject's files."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY

if TYPE_CHECKING:  # the image modules load when a command runs, not for its --help (project init)
    from napari_deep_prl.data.cohort import Cohort
    from napari_deep_prl.data.images import SubjectPaths

#: One subject's image options, by contrast.
IMAGE_HELP = {
    "phase": "phase image (unwrapped or filtered; paramagnetic = dark)",
    "qsm": "QSM image (susceptibility in ppm), instead of --phase",
    "mp2rage": "MP2RAGE UNI image",
    "t1w": "T1-weighted image (e.g. MPRAGE)",
    "flair": "FLAIR image",
}


#: What a command's MANIFEST may be.
MANIFEST_HELP = "cohort manifest CSV, or a folder: a BIDS dataset, sub-<label> folders or one holding manifest.csv"


def add_bids_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a BIDS dataset given as ``MANIFEST``
    (:func:`~napari_deep_prl.data.bids.find_bids_subjects`): ``--derivatives``,
    ``--participant-label``, ``--session-label``, ``--select``, ``--susceptibility``."""
    bids = parser.add_argument_group("a BIDS dataset as MANIFEST (docs/data.md, 'A BIDS dataset')")
    bids.add_argument("--derivatives", action="append", metavar="DIR",
                      help="the pipeline folder holding the lesion masks (repeatable; default: every folder in "
                           "BIDS_DIR/derivatives/)")
    bids.add_argument("--participant-label", action="extend", nargs="+", metavar="LABEL",
                      help="only these participants (with or without sub-)")
    bids.add_argument("--session-label", action="extend", nargs="+", metavar="LABEL",
                      help="only these sessions (with or without ses-); each session is a subject sub-X_ses-Y")
    bids.add_argument("--select", action="append", metavar="[CONTRAST=]KEY-VALUE",
                      help="choose among a contrast's images by an entity, e.g. acq-mprage (of each contrast that "
                           "has it) or t1w=acq-mprage (required of the T1w); repeatable")
    bids.add_argument("--susceptibility", choices=SUSCEPTIBILITY,
                      help="phase or qsm, for a dataset that has both")


def bids_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_bids_arguments` given, as keywords of ``find_bids_subjects``."""
    options = {"derivatives": args.derivatives, "participant_label": args.participant_label,
               "session": args.session_label, "select": args.select, "susceptibility": args.susceptibility}
    return {k: v for k, v in options.items() if v}


def cohort_from_args(path: str, args: argparse.Namespace) -> Cohort:
    """The cohort of ``path`` (a manifest or a folder, :func:`open_cohort`) with the BIDS options of
    :func:`add_bids_arguments`; a BIDS dataset's report of what it skipped goes to stderr."""
    from napari_deep_prl.data.cohort import open_cohort

    return reported(open_cohort(path, bids=bids_options(args)))


def add_subject_arguments(parser: argparse.ArgumentParser) -> None:
    """``MANIFEST`` (a manifest CSV, a BIDS dataset and its options, or a folder) or one subject's
    images: ``--phase|--qsm``, ``--mp2rage/--t1w/--flair``, ``--mask [--prl-mask|--prl-labels]``."""
    parser.add_argument("manifest", nargs="?", metavar="MANIFEST", help=MANIFEST_HELP)
    add_bids_arguments(parser)
    single = parser.add_argument_group("one subject instead of a manifest (images co-registered, each on "
                                       "its own grid or one)")
    for contrast, text in IMAGE_HELP.items():
        single.add_argument(f"--{contrast}", help=text)
    single.add_argument("--mask", help="lesion mask (binary or instance labels)")
    truth = single.add_mutually_exclusive_group()
    truth.add_argument("--prl-mask", help="optional PRL mask (ground truth)")
    truth.add_argument("--prl-labels", metavar="TABLE",
                       help="optional lesion label table (ground truth; see docs/data.md)")
    single.add_argument("--label-column", metavar="COLUMN",
                        help="the column of --prl-labels holding the label (default: consensus, as in "
                             "a project export; in a table without it, its prl or label column)")
    single.add_argument("--subject", help="subject id (default: the sub-<label> of the phase or QSM file name)")


def subjects_from_args(args: argparse.Namespace) -> list[SubjectPaths]:
    """The subjects named on the command line, not loaded yet; a BIDS dataset's report of what
    it skipped goes to stderr."""
    from napari_deep_prl.data.images import SubjectPaths

    images = subject_images(args)
    if args.manifest and (images or args.mask):
        raise InputError("give either a manifest or one subject's images (--phase, --mask, ...), not both.")
    if args.manifest and args.label_column:
        raise InputError("--label-column goes with --prl-labels; a manifest names each table's label "
                         "column in its prl_labels_column column (docs/data.md).")
    if args.manifest:
        return list(cohort_from_args(args.manifest, args))
    if bids_options(args):
        raise InputError(f"--{', --'.join(k.replace('_', '-') for k in bids_options(args))}: options of a BIDS "
                         "dataset, given as MANIFEST; one subject's images need none.")
    if args.mask and any(c in images for c in SUSCEPTIBILITY) and any(c in images for c in STRUCTURAL):
        return [SubjectPaths.from_files(mask=args.mask, prl_mask=args.prl_mask, subject=args.subject,
                                        prl_labels=args.prl_labels, prl_labels_column=args.label_column, **images)]
    raise InputError("give a manifest, or one subject's images: --phase (or --qsm), one or more of --mp2rage, "
                     "--t1w and --flair, and --mask.")


def subject_images(args: argparse.Namespace) -> dict[str, str]:
    """One subject's image files given on the command line, by contrast."""
    return {contrast: getattr(args, contrast) for contrast in IMAGE_HELP if getattr(args, contrast)}


def reported(cohort: Cohort) -> Cohort:
    """``cohort``, after printing to stderr what discovering it skipped when it is a BIDS dataset."""
    if cohort.bids is not None:
        print(cohort.bids.report(found=False), file=sys.stderr)
    return cohort
