"""``deep-prl calibrate``: a model recalibrated for a new site on its labelled lesions
(:mod:`napari_deep_prl.scoring.recalibrate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, write_or_rescue
from napari_deep_prl.cli._subjects import add_subject_arguments, subjects_from_args
from napari_deep_prl.cli.score import set_threads
from napari_deep_prl.model.checkpoint import load_models, save_models
from napari_deep_prl.model.inference import PRECISIONS
from napari_deep_prl.scoring.recalibrate import (
    MIN_LESIONS,
    MIN_OTHERS,
    MIN_PRLS,
    Recalibration,
    default_site,
    recalibrate_cohort,
)


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl calibrate``."""
    p.description = ("Recalibrate MODEL.pt for a new site: score the site's labelled lesions (a manifest with "
                     "prl_mask or prl_labels, a BIDS dataset or one subject's files) with its networks' raw "
                     "probabilities, refit the calibration and the decision threshold by the model's own rule, "
                     "keep the weights, and save the result as SITE_MODEL.pt (a new id, recording the "
                     f"recalibration). Needs at least {MIN_LESIONS} labelled lesions, {MIN_PRLS} of them PRLs "
                     f"and {MIN_OTHERS} not. Score the site with the new model: `deep-prl score --model "
                     "SITE_MODEL.pt ...`.")
    p.add_argument("model", metavar="MODEL.pt", help="the model to recalibrate (one network or an ensemble file)")
    add_subject_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="SITE_MODEL.pt", help="the recalibrated model to write")
    p.add_argument("--model", dest="more", action="append", default=[], metavar="MORE.pt",
                   help="another checkpoint scored with MODEL.pt as one model (as `deep-prl score --model A.pt "
                        "--model B.pt`); repeat as needed. All the networks are recalibrated and saved together "
                        "in SITE_MODEL.pt, as an ensemble file")
    p.add_argument("--site", metavar="NAME",
                   help="the site's name, recorded in the model (default: the manifest's folder or file name)")
    p.add_argument("--exclude-confluent", action="store_true", help="leave confluent lesions out")
    p.add_argument("--flip-phase", action="store_true", help="negate the phase (when paramagnetic is bright)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device (auto)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="network arithmetic while scoring the labelled lesions (float32, as training validates)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    check_output(output)
    set_threads(args.threads)
    cohort = subjects_from_args(args)
    checkpoints = load_models(args.model, *args.more)
    labels_from = args.manifest or args.mask
    result = run_with_tqdm(recalibrate_cohort(
        checkpoints, cohort, site=args.site or default_site(labels_from), labels_from=str(Path(labels_from).absolute()),
        flip_phase=args.flip_phase, exclude_confluent=args.exclude_confluent, device=args.device,
        precision=args.precision), desc="recalibrate", disable=args.quiet)
    save_site_model(result, output)
    return 0


def save_site_model(result: Recalibration, output: Path) -> Path:
    """Save the recalibrated model (kept in the temporary folder when ``output`` cannot be
    written) and say what changed, on stderr."""
    path = write_or_rescue(lambda folder: save_models(result.checkpoints, folder / output.name), output.parent,
                           "the recalibrated model")
    print(result.summary(), file=sys.stderr)
    print(f"model {path} (id {', '.join(c.id for c in result.checkpoints)}; was "
          f"{', '.join(c.metadata['recalibration']['previous_id'] for c in result.checkpoints)})", file=sys.stderr)
    return path
