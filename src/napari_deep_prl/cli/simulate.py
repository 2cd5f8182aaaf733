"""``deep-prl simulate``: write a synthetic, labelled cohort."""

from __future__ import annotations

import argparse
import sys

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output
from napari_deep_prl.simulate import SIMULATED_CONTRASTS, simulate_cohort


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl simulate``."""
    p.description = ("Simulate a physics-based cohort: phase from a susceptibility phantom through "
                     "the dipole kernel (paramagnetic = dark), MP2RAGE-like T1 contrast, lesions "
                     "of seven kinds (full/partial-rim PRLs and hard negatives), and for display a "
                     "FLAIR-like image and the T2*-weighted magnitude. Acquisition "
                     "parameters vary per subject unless fixed by the options below. Writes "
                     "OUT/manifest.csv, OUT/lesions_truth.tsv, OUT/subjects.tsv and sub-XXX/ "
                     "NIfTI images. See docs/simulator.md.")
    p.add_argument("out", metavar="OUT", help="folder to write the cohort into")
    p.add_argument("--subjects", type=int, default=10, metavar="N", help="number of subjects (10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same cohort (0)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="MM",
                   help="voxel size in mm, one value (isotropic) or three (default: varied)")
    p.add_argument("--fov", type=float, nargs=3, metavar="MM",
                   help="field of view in mm (default 160 192 160)")
    p.add_argument("--field-strength", type=float, metavar="T", help="B0 in tesla (default: 3 or 7)")
    p.add_argument("--te", type=float, metavar="MS", help="echo time in ms (default: varied)")
    p.add_argument("--noise", type=float, help="complex noise SD relative to WM (default: varied)")
    p.add_argument("--lesions", type=int, metavar="N", help="lesions per subject (default: ~30, varied)")
    p.add_argument("--prl-fraction", type=float, default=0.08, metavar="F",
                   help="expected fraction of lesions that are PRLs (0.08)")
    p.add_argument("--contrasts", nargs="+", choices=(*SIMULATED_CONTRASTS, "none"),
                   default=list(SIMULATED_CONTRASTS), metavar="NAME",
                   help="extra images written for display (manifest columns of the same names): "
                        f"{', '.join(SIMULATED_CONTRASTS)}, or none for phase and MP2RAGE only "
                        f"(default: {' '.join(SIMULATED_CONTRASTS)})")
    p.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.voxel_size is not None and len(args.voxel_size) not in (1, 3):
        raise InputError(f"--voxel-size takes one or three values, got {len(args.voxel_size)}")
    if "none" in args.contrasts and len(args.contrasts) > 1:
        raise InputError(f"--contrasts {' '.join(args.contrasts)}: 'none' cannot be combined with contrasts. "
                         "Give contrast names, or none alone")
    check_output(args.out, folder=True)
    options = {"voxel_size": args.voxel_size, "fov_mm": args.fov,
               "field_strength_t": args.field_strength, "te_ms": args.te, "noise": args.noise,
               "n_lesions": args.lesions}
    manifest = run_with_tqdm(
        simulate_cohort(args.out, args.subjects, args.seed, prl_fraction=args.prl_fraction,
                        overwrite=args.overwrite, contrasts=[c for c in args.contrasts if c != "none"],
                        **options),
        desc="simulate", disable=args.quiet)
    print(f"{args.subjects} subjects written; manifest: {manifest}", file=sys.stderr)
    return 0
