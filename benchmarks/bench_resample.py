"""Resampling versus loading: does putting a clinical subject's images on one grid cost more than
reading them?

Simulates one brain-sized clinical subject (``--site clinical``: a filtered phase on a tilted
0.6 × 0.6 × 2 mm slab; T1w, FLAIR and the masks at 1 mm, 160 × 192 × 160), writes its NIfTI
files, then times (median of repeated runs, same process), for each reference grid:

* loading the subject (``SubjectPaths.load``: reading and checking every file, the sign check,
  resampling), and
* the resampling alone, on the arrays as read: images by trilinear interpolation, the lesion
  mask and the PRL mask by nearest neighbour, with the check for lost and split lesions.

It prints the resampling time over the rest of the load. Target (issue 33): ≤ 1 ×.
Run: ``python benchmarks/bench_resample.py``.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import nibabel as nib
import numpy as np
from timing import median_seconds

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.masks import label_lesions
from napari_deep_prl.data.resample import (
    Grid,
    lesion_changes,
    resample_image,
    resample_labels,
)
from napari_deep_prl.simulate import simulate_cohort

REPEATS = 5
SEED = 0


def resampling(subject: Subject) -> Callable[[], None]:
    """What loading ``subject`` spent on resampling, as a call on the arrays as read."""
    reference = subject.grids[subject.reference].grid

    def nearest(labels: np.ndarray, grid: Grid, lesions: bool) -> None:
        moved = resample_labels(labels, grid, reference)
        if lesions:
            lesion_changes(labels, moved)

    work = []
    for name, record in subject.grids.items():
        if record.resampling == "linear":
            work.append(partial(resample_image, nib.load(record.file).get_fdata(dtype=np.float32), record.grid,
                                reference))
        elif record.resampling == "nearest":
            labels = np.asanyarray(nib.load(record.file).dataobj).astype(np.int32)
            work.append(partial(nearest, label_lesions(labels) if name == "mask" else labels, record.grid,
                                name == "mask"))
    return lambda: [step() for step in work]


def quiet_load(paths: SubjectPaths) -> Subject:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lesions a slab's 2 mm slices lose are reported; not timed here
        return paths.load()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = run_to_end(simulate_cohort(tmp, 1, SEED, site="clinical", prl_fraction=0.5))
        paths = read_manifest(manifest)[0]
        for reference in (None, "t1w"):
            chosen = replace(paths, reference=reference)
            subject = quiet_load(chosen)
            load = median_seconds(lambda p=chosen: quiet_load(p), REPEATS)
            resample = median_seconds(resampling(subject), REPEATS)
            moved = [f"{name} {record.grid.shape}" for name, record in subject.grids.items()
                     if record.resampling in ("linear", "nearest")]
            zooms = " × ".join(f"{z:.2g}" for z in subject.zooms)
            print(f"reference {subject.reference} {subject.shape} ({zooms} mm), "
                  f"resampled: {', '.join(moved)}")
            print(f"  load with resampling:  {load * 1000:7.1f} ms")
            print(f"  resampling alone:      {resample * 1000:7.1f} ms   = {resample / (load - resample):.2f} x "
                  "the rest of the load")
            if subject.lesion_changes:
                print(f"  resampling the mask {subject.lesion_changes.describe()}")


if __name__ == "__main__":
    main()
