"""``deep-prl score``: PRL probability of every lesion of a cohort or of one subject."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, print_table, write_nifti, write_table
from napari_deep_prl.cli._subjects import add_subject_arguments, subject_images, subjects_from_args
from napari_deep_prl.cli._threads import add_threads_argument, set_threads
from napari_deep_prl.data.click import load_unmasked, mask_from_clicks
from napari_deep_prl.data.images import Subject
from napari_deep_prl.model.backend import load_model
from napari_deep_prl.model.inference import INFERENCE_BATCH, PRECISIONS
from napari_deep_prl.model.metrics import format_metric
from napari_deep_prl.scoring.score import score_cohort, truth_by_kind

if TYPE_CHECKING:
    import pandas as pd


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl score``."""
    p.description = ("One row per lesion: subject, lesion, x, y, z (voxel centre), x_mm, y_mm, z_mm, "
                     "volume_mm3, prl_probability, prl (0/1 at the models' validation threshold, --threshold, "
                     "or for the whole cohort with --cohort-decision), "
                     "uncertainty_sd and bald (SD and mutual information of the networks x views scored; "
                     "n/a for one sample), "
                     "confluent; with a PRL mask (ground truth) also prl_truth, and the "
                     "decisions are scored against it (printed). Also writes SCORES_subjects.tsv: lesions, "
                     "prl_count, prl_ge1, prl_ge4 per subject.")
    add_subject_arguments(p)
    clicks = p.add_argument_group("lesions clicked instead of a mask (one subject's images, no --mask; "
                                  "docs/scoring.md, 'Without a lesion mask')")
    clicks.add_argument("--at", action="append", type=point_mm, metavar="X,Y,Z",
                        help="a lesion's position in world coordinates (mm, as the viewer shows them); it is "
                             "outlined from the structural images and scored; repeat for more lesions; write "
                             "--at=-12.5,8,20 when X is negative")
    clicks.add_argument("--outline-mask", metavar="MASK.nii.gz",
                        help="where the outlined lesions are written (instance mask on the subject's reference "
                             "grid; default: beside -o, SCORES_mask.nii.gz)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL.pt",
                   help="checkpoint; repeat for an ensemble (probabilities averaged); or one ONNX file written by "
                        "`deep-prl export` (run in onnxruntime: the onnx extra), which scores as its checkpoints")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="default: each network on the views its threshold was chosen on (the 8 axis flips for "
                        "models trained by this version), the flips only for lesions that the patch as cut does not "
                        "put below half the threshold; --tta: every lesion on all 8 flips (as earlier "
                        "versions scored; slower, the same decisions); --no-tta: the patch as cut alone")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="decision threshold on prl_probability (calibrated on each model's validation patients "
                        "for models trained with the default threshold rule; default: the mean of the models' "
                        "validation thresholds); a lower one calls more lesions PRL, for a more sensitive screen")
    p.add_argument("--cohort-decision", action="store_true",
                   help="decide for the whole cohort at once instead: call PRL the most probable lesions, as many "
                        "as maximise the F1 expected from their calibrated probabilities (the cut then suits this "
                        "cohort's share of PRLs, but a lesion's call depends on the others scored with it: for a "
                        "study's cohort, not one patient; needs models trained with the default threshold rule)")
    p.add_argument("-o", "--output", metavar="SCORES.tsv", help="per-lesion table; default: TSV to stdout")
    p.add_argument("--nifti-dir", metavar="DIR", help="also write each subject's probability map (NIfTI) here")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic: auto (default) is bfloat16 where the CPU or GPU computes it natively "
                        "(about 1.25x faster; probabilities within about 0.005), else float32; float32 gives the "
                        "same numbers on every machine")
    p.add_argument("--batch-size", type=int, default=INFERENCE_BATCH,
                   help=f"patches per forward pass ({INFERENCE_BATCH}: fits a CPU's cache; larger on a GPU)")
    add_threads_argument(p)
    p.add_argument("--flip-phase", action="store_true", help="negate the phase (when paramagnetic is bright)")
    p.add_argument("--stop-on-error", action="store_true",
                   help="stop at the first subject whose files cannot be read (default: leave it out, score "
                        "the others, name it at the end and exit with status 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    outputs = [] if not args.output else [Path(args.output), subjects_path(Path(args.output))]
    outline = outline_path(args)
    for path in [*outputs, outline]:
        check_output(path)
    check_output(args.nifti_dir, folder=True)
    cohort = subjects_from_args(args) if outline is None else [clicked_subject(args, outline)]
    checkpoints = load_model(*args.model)
    scores = run_with_tqdm(score_cohort(cohort, checkpoints, tta=args.tta, threshold=args.threshold,
                                        nifti_dir=args.nifti_dir,
                                        batch_size=args.batch_size, device=args.device,
                                        precision=args.precision, flip_phase=args.flip_phase,
                                        decision="expected_f1" if args.cohort_decision else "validation",
                                        skip_unreadable=len(cohort) > 1 and not args.stop_on_error),
                           desc="score", disable=args.quiet)
    if len(scores.unreadable) == len(cohort):
        raise InputError(f"no subject could be read ({len(cohort)} tried; each is named above). "
                         "Fix or re-export their files and score again.")
    if args.cohort_decision:
        print(f"cohort decision: {int(scores.lesions['prl'].sum())} of {len(scores.lesions)} lesions called PRL "
              f"(prl_probability >= {scores.threshold:.4g}, the most expected F1)", file=sys.stderr)
    if args.output:
        out, summary = outputs
        write_table(scores.lesions, out, na_rep="n/a")
        write_table(scores.subjects, summary, na_rep="n/a")
        print(f"{len(scores.lesions)} lesions of {len(scores.subjects)} subject(s), "
              f"{int(scores.subjects['prl_count'].sum())} scored PRL; table {out}, subjects {summary}",
              file=sys.stderr)
    else:
        print_table(scores.lesions, sys.stdout, na_rep="n/a")
    _print_truth(scores.lesions)
    if scores.unreadable:
        print(f"{len(scores.unreadable)} of {len(cohort)} subject(s) left out, their files could not be read: "
              f"{', '.join(scores.unreadable)}. Fix them (see the warnings above) and score them on their own "
              "(--phase/--mp2rage/--mask, or a manifest of just them).", file=sys.stderr)
        return 1
    return 0


#: How each row of the metrics by lesion kind is named on the command line.
KIND_LABELS = {"non_confluent": "non-confluent lesions", "confluent_part": "confluent lesions, parts",
               "confluent_whole": "confluent components kept whole", "all": "lesions, every kind"}


def _print_truth(lesions: pd.DataFrame) -> None:
    """One line per lesion kind present (and every kind together when there are several) of the
    metrics against the ground truth, non-confluent first: the paper's protocol tests those."""
    table = truth_by_kind(lesions)
    if table is None:
        return
    present = [kind for kind in table.index[:-1] if table.at[kind, "lesions"]]
    for kind in present + (["all"] if len(present) > 1 else []):
        metrics = table.loc[kind]
        shown = ", ".join(f"{name} {format_metric(metrics, key)}" for name, key in (
            ("F1", "f1"), ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("PPV", "ppv"),
            ("ROC AUC", "roc_auc")))
        print(f"against the ground truth ({int(metrics['prls'])} PRLs of {int(metrics['lesions'])} labelled "
              f"{KIND_LABELS[kind]}): {shown}", file=sys.stderr)


def point_mm(text: str) -> tuple[float, float, float]:
    """``X,Y,Z`` in mm, for ``--at``."""
    try:
        point = tuple(float(v) for v in text.split(","))
    except ValueError:
        point = ()
    if len(point) != 3 or not all(np.isfinite(point)):
        raise argparse.ArgumentTypeError(f"'{text}' is not a position X,Y,Z in mm (three numbers, "
                                         "e.g. --at=-12.5,8,20)")
    return point  # type: ignore[return-value]


def outline_path(args: argparse.Namespace) -> Path | None:
    """Where the lesions outlined from ``--at`` go (``None``: no click given)."""
    if not args.at:
        if args.outline_mask:
            raise InputError("--outline-mask names where the lesions outlined from --at go; give --at X,Y,Z.")
        return None
    if args.manifest or args.mask:
        raise InputError("--at outlines lesions of one subject that has no lesion mask: give its images "
                         "(--phase, --mp2rage, ...) without --mask and without a manifest.")
    if args.prl_labels:
        raise InputError("--prl-labels labels the lesions of a mask by their ids; clicked lesions are numbered "
                         "by click. Give the ground truth as --prl-mask, or drop it.")
    if args.outline_mask:
        return Path(args.outline_mask)
    if not args.output:
        raise InputError("--at writes the outlined lesions to a mask: name it (--outline-mask MASK.nii.gz) or give "
                         "-o SCORES.tsv (the mask then goes beside it, SCORES_mask.nii.gz).")
    output = Path(args.output)
    return output.with_name(output.stem + "_mask.nii.gz")


def clicked_subject(args: argparse.Namespace, outline: Path) -> Subject:
    """The subject of the command line, its lesions outlined from ``--at`` (written to ``outline``)."""
    images = subject_images(args)
    subject = load_unmasked(images, subject=args.subject, prl_mask=args.prl_mask, flip_phase=args.flip_phase)
    mask = mask_from_clicks(subject, args.at)
    write_nifti(nib.Nifti1Image(mask, subject.affine), outline)
    print(f"{int(mask.max())} lesion(s) outlined from {len(args.at)} click(s); mask {outline}", file=sys.stderr)
    return dataclasses.replace(subject, mask=mask, resampled_labels=None,
                               paths=dataclasses.replace(subject.paths, mask=outline))


def subjects_path(output: Path) -> Path:
    """Where the per-subject summary goes beside the per-lesion table ``output``."""
    return output.with_name(output.stem + "_subjects" + (output.suffix or ".tsv"))
