"""``deep-prl lesions``: list the lesions of a cohort or of one subject."""

from __future__ import annotations

import argparse
import sys

from napari_deep_prl.errors import InputError
from napari_deep_prl.io import load_subject, open_cohort
from napari_deep_prl.lesions import cohort_lesion_table, lesion_table
from napari_deep_prl.progress import run_with_tqdm
from napari_deep_prl.tables import write_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lesions",
        help="list lesions (centre, volume, confluent flag) as a table",
        description="One row per lesion: subject, lesion, x, y, z (voxel centre of mass), x_mm, y_mm, "
                    "z_mm (world), volume_voxels, volume_mm3, confluent, bounding box; prl_fraction and "
                    "prl when a prl_mask is given. Lesions are 26-connected components of a binary mask "
                    "or the labels of an instance mask.",
    )
    p.add_argument("manifest", nargs="?", help="cohort manifest CSV or subject folder layout")
    p.add_argument("--phase", help="phase image of one subject (instead of a manifest)")
    p.add_argument("--mp2rage", help="MP2RAGE / T1-weighted image of that subject")
    p.add_argument("--mask", help="lesion mask of that subject")
    p.add_argument("--prl-mask", help="optional PRL mask of that subject")
    p.add_argument("--subject", help="subject id for --phase/--mp2rage/--mask (default: from the file name)")
    p.add_argument("-o", "--output", help="output table (.tsv or .csv); default: print TSV to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    single = [args.phase, args.mp2rage, args.mask]
    if args.manifest and any(single):
        raise InputError("give either a manifest or --phase/--mp2rage/--mask, not both.")
    if args.manifest:
        table = run_with_tqdm(cohort_lesion_table(open_cohort(args.manifest)), desc="lesions",
                              disable=args.quiet)
    elif all(single):
        table = lesion_table(load_subject(args.phase, args.mp2rage, args.mask, args.prl_mask,
                                          subject=args.subject))
    else:
        raise InputError("give a manifest, or all of --phase, --mp2rage and --mask.")
    if args.output:
        write_table(table, args.output)
        print(f"{len(table)} lesions written to {args.output}", file=sys.stderr)
    else:
        table.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6g")
    return 0
