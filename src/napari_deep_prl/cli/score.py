"""``deep-prl score``: PRL probability of every lesion of a cohort or of one subject."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from napari_deep_prl.checkpoint import load_checkpoint
from napari_deep_prl.errors import InputError
from napari_deep_prl.io import load_subject, open_cohort
from napari_deep_prl.progress import run_with_tqdm
from napari_deep_prl.score import score_cohort
from napari_deep_prl.tables import separator_for, write_atomic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score lesions with trained Deep-PRL model(s): PRL probability, decision, uncertainty",
        description="One row per lesion: subject, lesion, x, y, z (voxel centre), x_mm, y_mm, z_mm, "
                    "volume_mm3, prl_probability, prl (0/1 at the models' validation threshold), "
                    "uncertainty (SD over models x TTA views; n/a for one model without --tta), "
                    "confluent. Also writes SCORES_subjects.tsv: lesions, prl_count, prl_ge1, "
                    "prl_ge4 per subject.",
    )
    p.add_argument("manifest", nargs="?", metavar="MANIFEST", help="cohort manifest CSV or subject folder layout")
    p.add_argument("--phase", help="phase image of one subject (instead of a manifest)")
    p.add_argument("--mp2rage", help="MP2RAGE / T1-weighted image of that subject")
    p.add_argument("--mask", help="lesion mask of that subject")
    p.add_argument("--subject", help="subject id for --phase/--mp2rage/--mask (default: from the file name)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL.pt",
                   help="checkpoint; repeat for an ensemble (probabilities averaged)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over the 8 axis flips")
    p.add_argument("-o", "--output", metavar="SCORES.tsv", help="per-lesion table; default: TSV to stdout")
    p.add_argument("--nifti-dir", metavar="DIR", help="also write each subject's probability map (NIfTI) here")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--batch-size", type=int, default=16, help="patches per forward pass (16)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: one per core; on a busy shared machine 1 is often faster)")
    p.add_argument("--flip-phase", action="store_true", help="negate the phase (when paramagnetic is bright)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    single = [args.phase, args.mp2rage, args.mask]
    if args.manifest and any(single):
        raise InputError("give either a manifest or --phase/--mp2rage/--mask, not both.")
    if args.manifest:
        cohort = list(open_cohort(args.manifest))
    elif all(single):
        cohort = [load_subject(*single, subject=args.subject, flip_phase=args.flip_phase)]
    else:
        raise InputError("give a manifest, or all of --phase, --mp2rage and --mask.")
    checkpoints = [load_checkpoint(path) for path in args.model]
    scores = run_with_tqdm(score_cohort(cohort, checkpoints, tta=args.tta, nifti_dir=args.nifti_dir,
                                        batch_size=args.batch_size, device=args.device,
                                        flip_phase=args.flip_phase),
                           desc="score", disable=args.quiet)
    if args.output:
        out = Path(args.output)
        _write(scores.lesions, out)
        summary = _write(scores.subjects, out.with_name(out.stem + "_subjects" + (out.suffix or ".tsv")))
        print(f"{len(scores.lesions)} lesions of {len(cohort)} subject(s), "
              f"{int(scores.subjects['prl_count'].sum())} scored PRL; table {out}, subjects {summary}",
              file=sys.stderr)
    else:
        scores.lesions.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6g", na_rep="n/a")
    return 0


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads: OpenMP threads spin badly when cores are oversubscribed."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads}: give 1 or more")
        torch.set_num_threads(threads)


def _write(table: pd.DataFrame, path: Path) -> Path:
    """BIDS-style table: missing values as ``n/a``."""
    return write_atomic(path, lambda fh: table.to_csv(fh, sep=separator_for(path), index=False,
                                                      float_format="%.6g", na_rep="n/a"))
