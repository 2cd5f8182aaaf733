"""``deep-prl lesions``: list the lesions of a cohort or of one subject."""

from __future__ import annotations

import argparse
import sys

from napari_deep_prl.base.progress import run_with_tqdm
from napari_deep_prl.base.tables import check_output, print_table, write_table
from napari_deep_prl.cli._subjects import add_subject_arguments, subjects_from_args
from napari_deep_prl.data.lesions import cohort_lesion_table


def register(p: argparse.ArgumentParser) -> None:
    """Fill the parser of ``deep-prl lesions``."""
    p.description = ("One row per lesion: subject, lesion, x, y, z (voxel centre of mass), x_mm, y_mm, "
                     "z_mm (world), volume_voxels, volume_mm3, confluent, bounding box; prl_fraction and "
                     "prl when a prl_mask is given. Lesions are 26-connected components of a binary mask "
                     "or the labels of an instance mask.")
    add_subject_arguments(p)
    p.add_argument("-o", "--output", help="output table (.tsv or .csv); default: print TSV to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    subjects = subjects_from_args(args)
    table = run_with_tqdm(cohort_lesion_table(subjects), desc="lesions", disable=args.quiet or len(subjects) == 1)
    if args.output:
        write_table(table, args.output)
        print(f"{len(table)} lesions written to {args.output}", file=sys.stderr)
    else:
        print_table(table, sys.stdout)
    return 0
