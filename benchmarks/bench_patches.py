"""Patch extraction versus loading: is cutting all patches of a subject cheaper than reading it?

Simulates one brain-sized 1 mm subject with 50 lesions, writes its NIfTI files, then times
(median of repeated runs, same process):

* loading its three images (phase, MP2RAGE, mask) with validation, and
* labelling the lesions and extracting all 28³ patches (per-subject and per-patch scaling).

Target (issue 2): extraction takes no longer than the load. Run: ``python benchmarks/bench_patches.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from timing import median_seconds

from napari_deep_prl.data.images import load_subject
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, extract_patches
from napari_deep_prl.simulate import simulate_subject
from napari_deep_prl.simulate.cohort import write_subject

REPEATS = 5


def main() -> None:
    sim = simulate_subject(0, n_lesions=50, voxel_size=(1.0, 1.0, 1.0), fov_mm=(160.0, 192.0, 160.0))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_subject(sim, Path(tmp))
        files = {"phase": paths.image("phase"), "mp2rage": paths.image("mp2rage"), "mask": paths.mask}
        subject = load_subject(**files)
        load = median_seconds(lambda: load_subject(**files), REPEATS)
    lesions = find_lesions(subject)
    print(f"subject grid {subject.shape}, {len(lesions)} lesions")
    label = median_seconds(lambda: find_lesions(subject), REPEATS)
    print(f"load 3 NIfTI files (.nii.gz):        {load * 1000:7.1f} ms")
    print(f"label lesions + table:               {label * 1000:7.1f} ms")
    for normalisation in ("subject", "patch"):
        config = PatchConfig(normalisation=normalisation)
        extract = median_seconds(lambda: extract_patches(subject, lesions, config), REPEATS)  # noqa: B023 (called at once, inside the loop)
        total = label + extract
        print(f"extract all patches ({normalisation:7s}):    {extract * 1000:7.1f} ms   "
              f"labelling + extraction = {total / load:.2f} x load time")


if __name__ == "__main__":
    main()
