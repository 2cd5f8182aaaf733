"""Writing a synthetic cohort to disk: NIfTI images, manifest, truth and parameter tables.

Layout (discoverable by :func:`napari_deep_prl.data.cohort.discover` as well as through the manifest)::

    OUT/manifest.csv              subject,phase,mp2rage,mask,prl_mask[,flair][,magnitude]
    OUT/lesions_truth.tsv         one row per lesion: lesion table + kind and drawn parameters
    OUT/subjects.tsv              one row per subject: acquisition parameters, lesion/PRL counts
    OUT/sub-001/sub-001_phase.nii.gz, _mp2rage, _mask, _prl_mask[, _flair, _magnitude]

The tables and the manifest are rewritten (atomically) after every subject, so a cancelled run
leaves a smaller but consistent cohort.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning, file_error
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import write_nifti, write_table
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.simulate.params import draw_params
from napari_deep_prl.simulate.subject import (
    CONTRAST_DESCRIPTIONS,
    PHASE_DESCRIPTION,
    SIMULATED_CONTRASTS,
    Simulated,
    check_contrasts,
    simulate_subject,
)

#: Leading truth-table columns (the rest follow in the lesion table's order).
TRUTH_LEAD = ("subject", "lesion", "kind", "prl")
#: Image roles written per subject, as ``<subject>_<role>.nii.gz`` (and the extra contrasts asked for).
ROLES = ("phase", "mp2rage", "mask", "prl_mask")


def simulate_cohort(out_dir: str | Path, n_subjects: int, seed: int = 0, *,
                    prl_fraction: float = 0.08, overwrite: bool = False,
                    contrasts: Sequence[str] = SIMULATED_CONTRASTS,
                    **options: object) -> Generator[Progress, None, Path]:
    """Simulate ``n_subjects`` subjects into ``out_dir``; yields progress, returns the manifest.

    ``options`` are :class:`~napari_deep_prl.simulate.SubjectParams` fields held fixed for every
    subject (e.g. ``voxel_size=(1, 1, 1)``, ``field_strength_t=3``); the others vary per subject.
    ``contrasts``: the display-only images written besides phase and MP2RAGE (manifest columns
    of the same names); ``()`` writes none, and changes nothing else. A cohort that came out
    without any PRL is written, with an :class:`~napari_deep_prl.base.errors.InputWarning`.
    """
    out = Path(out_dir)
    if n_subjects < 1:
        raise InputError(f"cannot simulate {n_subjects} subjects. Ask for at least 1")
    draw_params(np.random.default_rng(0), prl_fraction, **options)  # fail before writing
    contrasts = check_contrasts(contrasts)
    manifest = out / "manifest.csv"
    if manifest.exists() and not overwrite:
        raise file_error(out, "already holds a cohort (manifest.csv)",
                         "Choose another folder or overwrite it (--overwrite)")
    if out.exists() and not out.is_dir():
        raise file_error(out, "is a file, not a folder", "Give a folder to write the cohort into")
    out.mkdir(parents=True, exist_ok=True)
    if manifest.exists():
        _remove_previous(out, manifest)
    rows: list[SubjectPaths] = []
    truths: list[pd.DataFrame] = []
    subjects: list[dict[str, object]] = []
    yield Progress(0, n_subjects, "subject")
    for index in range(n_subjects):
        sim = simulate_subject(seed, index=index, prl_fraction=prl_fraction, contrasts=contrasts, **options)
        rows.append(write_subject(sim, out))
        truths.append(sim.truth)
        subjects.append({"subject": sim.subject.subject, "lesions": len(sim.truth),
                         "prls": int(sim.truth["prl"].sum()), **sim.params.as_dict()})
        truth = pd.concat(truths, ignore_index=True)
        write_table(truth[[*TRUTH_LEAD, *(c for c in truth if c not in TRUTH_LEAD)]],
                    out / "lesions_truth.tsv")
        write_table(pd.DataFrame(subjects), out / "subjects.tsv")
        write_manifest(rows, manifest)
        yield Progress(index + 1, n_subjects, "subject", sim.subject.subject,
                       {"lesions": float(len(truth)), "prl": float(truth["prl"].sum())})
    if not truth["prl"].any():
        warnings.warn(f"{out}: the simulated cohort has no PRL at all ({n_subjects} subject(s), "
                      f"{len(truth)} lesions, PRL fraction {prl_fraction:g}): training, cross-validation "
                      "and PRL counts need some. Simulate more subjects, another seed or a larger "
                      "PRL fraction (--subjects, --seed, --prl-fraction).", InputWarning, stacklevel=2)
    return manifest


def _remove_previous(out: Path, manifest: Path) -> None:
    """Delete the images of the cohort being overwritten (only files this module names)."""
    listed = pd.read_csv(manifest, dtype=str).get("subject", pd.Series(dtype=str)).dropna()
    for subject in listed:
        if not re.fullmatch(r"sub-[A-Za-z0-9]+", subject):
            continue
        folder = out / subject
        for role in ROLES + SIMULATED_CONTRASTS:
            (folder / f"{subject}_{role}.nii.gz").unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write_subject(sim: Simulated, out_dir: Path) -> SubjectPaths:
    """Write one subject's four images, and its extra contrasts, under ``out_dir/<subject>/``."""
    subject = sim.subject
    folder = out_dir / subject.subject
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "phase": (subject.phase.astype(np.float32), PHASE_DESCRIPTION),
        "mp2rage": (subject.mp2rage.astype(np.float32), "deep-prl sim: MP2RAGE UNI-like, [0, 1]"),
        "mask": (subject.mask.astype(np.uint8), "deep-prl sim: lesion mask (binary)"),
        "prl_mask": (subject.prl_mask.astype(np.uint8), "deep-prl sim: voxels of PRLs"),
        **{name: (image.astype(np.float32), CONTRAST_DESCRIPTIONS[name]) for name, image in subject.extra.items()},
    }
    paths = {}
    for role, (data, description) in images.items():
        image = nib.Nifti1Image(data, subject.affine)
        image.header["descrip"] = description.encode()[:79]
        image.header.set_xyzt_units("mm")
        image.set_qform(subject.affine, code=1)
        image.set_sform(subject.affine, code=1)
        paths[role] = folder / f"{subject.subject}_{role}.nii.gz"
        write_nifti(image, paths[role])
    return SubjectPaths(subject.subject, paths["phase"], paths["mp2rage"], paths["mask"],
                        paths["prl_mask"], extra=tuple((name, paths[name]) for name in subject.extra))
