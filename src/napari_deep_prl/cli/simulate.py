"""``deep-prl simulate``: write a synthetic, labelled cohort."""

from __future__ import annotations

import argparse
import sys

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output
from napari_deep_prl.data.contrasts import SUSCEPTIBILITY
from napari_deep_prl.simulate import (
    SIMULATED_CONTRASTS,
    SITES,
    ClinicalSite,
    simulate_cohort,
)
from napari_deep_prl.simulate.clinical import (
    CLINICAL_CONTRASTS,
    DEFAULT_CLINICAL_CONTRASTS,
    PHASE_SIGNS,
)

#: Options that describe a clinical site's scans (refused for the research site).
CLINICAL_OPTIONS = {"susceptibility": "--susceptibility", "phase_sign": "--phase-sign", "tilt": "--tilt",
                    "susceptibility_voxel_size": "--susceptibility-voxel-size"}


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl simulate``."""
    p.description = ("Simulate a physics-based cohort: phase from a susceptibility phantom through "
                     "the dipole kernel (paramagnetic = dark), MP2RAGE-like T1 contrast, lesions "
                     "of seven kinds (full/partial-rim PRLs and hard negatives), and for display a "
                     "FLAIR-like image and the T2*-weighted magnitude, all on one grid. With --site "
                     "clinical: a clinical site's scans instead, each on its own grid, co-registered "
                     "in world space: a vendor filtered phase (either sign) or a QSM on a tilted "
                     "0.6 x 0.6 x 2 mm slab, an MPRAGE-like T1w and a FLAIR at 1 mm with the lesion "
                     "masks. Acquisition parameters vary per subject unless fixed by the options below. "
                     "Writes OUT/manifest.csv, OUT/lesions_truth.tsv, OUT/subjects.tsv and sub-XXX/ "
                     "NIfTI images. See docs/simulator.md.")
    p.add_argument("out", metavar="OUT", help="folder to write the cohort into")
    p.add_argument("--subjects", type=int, default=10, metavar="N", help="number of subjects (10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same cohort (0)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="MM",
                   help="voxel size in mm, one value (isotropic) or three (default: varied; with "
                        "--site clinical the structural grid's, default 1)")
    p.add_argument("--fov", type=float, nargs=3, metavar="MM",
                   help="field of view in mm (default 160 192 160)")
    p.add_argument("--field-strength", type=float, metavar="T", help="B0 in tesla (default: 3 or 7)")
    p.add_argument("--te", type=float, metavar="MS", help="echo time in ms (default: varied)")
    p.add_argument("--noise", type=float, help="complex noise SD relative to WM (default: varied)")
    p.add_argument("--lesions", type=int, metavar="N", help="lesions per subject (default: ~30, varied)")
    p.add_argument("--prl-fraction", type=float, default=0.08, metavar="F",
                   help="expected fraction of lesions that are PRLs (0.08)")
    p.add_argument("--confluent-prl-rate", type=float, metavar="F",
                   help="share of PRLs drawn touching a plain lesion: confluent PRLs (default: 0)")
    add_site_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_site_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say which site's scans the simulator makes (``simulate``, ``demo``);
    read back with :func:`site_from_args` and :func:`contrasts_from_args`."""
    p.add_argument("--site", choices=SITES, default="research",
                   help="research: phase, MP2RAGE and masks on one grid (default); clinical: a "
                        "clinical site's scans, each on its own grid")
    p.add_argument("--contrasts", nargs="+", metavar="NAME",
                   choices=(*dict.fromkeys((*SIMULATED_CONTRASTS, *CLINICAL_CONTRASTS)), "none"),
                   help="research site: extra images written for display (manifest columns of the "
                        f"same names): {', '.join(SIMULATED_CONTRASTS)}, or none for phase and MP2RAGE "
                        f"only (default: {' '.join(SIMULATED_CONTRASTS)}); clinical site: the images "
                        f"written besides the susceptibility image, from {', '.join(CLINICAL_CONTRASTS)}, "
                        f"at least one structural (default: {' '.join(DEFAULT_CLINICAL_CONTRASTS)})")
    site = p.add_argument_group("clinical site (--site clinical)")
    site.add_argument("--susceptibility", choices=SUSCEPTIBILITY,
                      help="the susceptibility image: phase (vendor high-pass filtered phase, radians; "
                           "default) or qsm (ppm, paramagnetic positive)")
    site.add_argument("--phase-sign", choices=PHASE_SIGNS,
                      help="the filtered phase's sign for a paramagnetic source: dark (negative, the "
                           "project's convention; default) or bright (as other vendors write it)")
    site.add_argument("--tilt", type=float, metavar="DEG",
                      help="the susceptibility slab's tilt about the left-right axis in degrees "
                           "(default: 10 to 15 either way, varied)")
    site.add_argument("--susceptibility-voxel-size", type=float, nargs="+", metavar="MM",
                      help="the susceptibility slab's voxel size in mm, one value or three "
                           "(default 0.6 0.6 2)")


def run(args: argparse.Namespace) -> int:
    if args.voxel_size is not None and len(args.voxel_size) not in (1, 3):
        raise InputError(f"--voxel-size takes one or three values, got {len(args.voxel_size)}")
    contrasts = contrasts_from_args(args)
    site = site_from_args(args)
    check_output(args.out, folder=True)
    options = {"voxel_size": args.voxel_size, "fov_mm": args.fov,
               "field_strength_t": args.field_strength, "te_ms": args.te, "noise": args.noise,
               "n_lesions": args.lesions, "confluent_prl_rate": args.confluent_prl_rate}
    cohort = simulate_cohort(args.out, args.subjects, args.seed, prl_fraction=args.prl_fraction,
                             overwrite=args.overwrite, site=site, contrasts=contrasts, **options)
    manifest = run_with_tqdm(cohort, desc="simulate", disable=args.quiet)
    print(f"{args.subjects} subjects written; manifest: {manifest}", file=sys.stderr)
    return 0


def contrasts_from_args(args: argparse.Namespace) -> list[str] | None:
    """The images asked for by ``--contrasts`` (``None``: the site's default; ``none``: no extra)."""
    contrasts = args.contrasts
    if contrasts is not None and "none" in contrasts:
        if len(contrasts) > 1:
            raise InputError(f"--contrasts {' '.join(contrasts)}: 'none' cannot be combined with contrasts. "
                             "Give contrast names, or none alone")
        contrasts = []
    return contrasts


def site_from_args(args: argparse.Namespace) -> str | ClinicalSite:
    """The site asked for; the clinical options checked against it."""
    given = [flag for name, flag in CLINICAL_OPTIONS.items() if getattr(args, name) is not None]
    if args.site == "research":
        if given:
            raise InputError(f"{', '.join(given)}: options of a clinical site's scans. Add --site clinical, "
                             "or leave them out for the research layout")
        return "research"
    if args.phase_sign is not None and args.susceptibility == "qsm":
        raise InputError("--phase-sign is the sign of a filtered phase; QSM is paramagnetic-positive by "
                         "definition. Leave --phase-sign out, or use --susceptibility phase")
    if args.susceptibility_voxel_size is not None and len(args.susceptibility_voxel_size) not in (1, 3):
        raise InputError("--susceptibility-voxel-size takes one or three values, "
                         f"got {len(args.susceptibility_voxel_size)}")
    fields = {"susceptibility": args.susceptibility, "phase_sign": args.phase_sign, "tilt_deg": args.tilt,
              "susceptibility_voxel_mm": args.susceptibility_voxel_size}
    return ClinicalSite(**{name: value for name, value in fields.items() if value is not None})
