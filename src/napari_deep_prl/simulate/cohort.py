"""Writing a synthetic cohort to disk: NIfTI images, manifest, truth and parameter tables.

Layout of the research site (the default; discoverable by
:func:`napari_deep_prl.data.cohort.discover` as well as through the manifest), every image on one
grid::

    OUT/manifest.csv              subject,phase,mp2rage[,flair],mask,prl_mask[,magnitude]
    OUT/lesions_truth.tsv         one row per lesion: lesion table + kind and drawn parameters
    OUT/subjects.tsv              one row per subject: acquisition parameters, lesion/PRL counts
    OUT/sub-001/sub-001_phase.nii.gz, _mp2rage, _mask, _prl_mask[, _flair, _magnitude]

A clinical site (``site="clinical"``, :mod:`napari_deep_prl.simulate.clinical`) writes its
susceptibility image on a tilted slab and the structural images and masks on a 1 mm grid::

    OUT/manifest.csv              subject,phase|qsm[,mp2rage][,t1w][,flair],mask,prl_mask[,magnitude]
    OUT/subjects.tsv              ... plus the site's facts: susceptibility, phase_sign, grids, tilt
    OUT/sub-001/sub-001_phase.nii.gz (or _qsm), _t1w, _flair, _mask, _prl_mask[, _magnitude]

The tables and the manifest are rewritten (atomically) after every subject, so a cancelled run
leaves a smaller but consistent cohort.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning, file_error
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import write_nifti, write_table
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.contrasts import SUSCEPTIBILITY
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.simulate.clinical import (
    CLINICAL_CONTRASTS,
    DEFAULT_CLINICAL_CONTRASTS,
    ClinicalSimulated,
    ClinicalSite,
    check_clinical_contrasts,
    resolve_site,
    simulate_clinical_subject,
)
from napari_deep_prl.simulate.grids import nifti_image
from napari_deep_prl.simulate.params import draw_params
from napari_deep_prl.simulate.subject import (
    DESCRIPTIONS,
    SIMULATED_CONTRASTS,
    Simulated,
    check_contrasts,
    simulate_subject,
)

#: Leading truth-table columns (the rest follow in the lesion table's order).
TRUTH_LEAD = ("subject", "lesion", "kind", "prl")
#: Image roles written per subject, as ``<subject>_<role>.nii.gz`` (and the extra contrasts asked for).
ROLES = ("phase", "mp2rage", "mask", "prl_mask")
#: Every image a cohort of either site may hold (what overwriting a cohort removes).
WRITTEN = tuple(dict.fromkeys((*ROLES, *SIMULATED_CONTRASTS, *SUSCEPTIBILITY, *CLINICAL_CONTRASTS)))


def simulate_cohort(out_dir: str | Path, n_subjects: int, seed: int = 0, *,
                    prl_fraction: float = 0.08, overwrite: bool = False,
                    site: str | ClinicalSite = "research", contrasts: Sequence[str] | None = None,
                    **options: object) -> Generator[Progress, None, Path]:
    """Simulate ``n_subjects`` subjects into ``out_dir``; yields progress, returns the manifest.

    ``options`` are :class:`~napari_deep_prl.simulate.SubjectParams` fields held fixed for every
    subject (e.g. ``voxel_size=(1, 1, 1)``, ``field_strength_t=3``); the others vary per subject.
    ``site``: ``"research"`` (phase, MP2RAGE and masks on one grid) or ``"clinical"`` (or a
    :class:`~napari_deep_prl.simulate.ClinicalSite`: a filtered phase or QSM on a tilted slab,
    structural images and masks on a 1 mm grid). ``contrasts``: for the research site the
    display-only images written besides phase and MP2RAGE (default flair and magnitude; ``()``
    writes none, and changes nothing else); for a clinical site the images written besides the
    susceptibility image (default t1w and flair; see
    :data:`~napari_deep_prl.simulate.clinical.CLINICAL_CONTRASTS`). Each is a manifest column of
    its name. A cohort that came out without any PRL is written, with an
    :class:`~napari_deep_prl.base.errors.InputWarning`.
    """
    out = Path(out_dir)
    if n_subjects < 1:
        raise InputError(f"cannot simulate {n_subjects} subjects. Ask for at least 1")
    clinical = resolve_site(site)
    draw_params(np.random.default_rng(0), prl_fraction, **options)  # fail before writing
    if clinical is None:
        contrasts = check_contrasts(SIMULATED_CONTRASTS if contrasts is None else contrasts)
    else:
        contrasts = check_clinical_contrasts(DEFAULT_CLINICAL_CONTRASTS if contrasts is None else contrasts)
    manifest = out / "manifest.csv"
    if manifest.exists() and not overwrite:
        raise file_error(out, "already holds a cohort (manifest.csv)",
                         "Choose another folder or overwrite it (--overwrite)")
    if out.exists() and not out.is_dir():
        raise file_error(out, "is a file, not a folder", "Give a folder to write the cohort into")
    out.mkdir(parents=True, exist_ok=True)
    if manifest.exists():
        _remove_previous(out, manifest)
    rows: list = []
    truths: list[pd.DataFrame] = []
    subjects: list[dict[str, object]] = []
    yield Progress(0, n_subjects, "subject")
    for index in range(n_subjects):
        if clinical is None:
            sim = simulate_subject(seed, index=index, prl_fraction=prl_fraction, contrasts=contrasts, **options)
            rows.append(write_subject(sim, out))
            sid, facts = sim.subject.subject, {}
        else:
            sim = simulate_clinical_subject(seed, index=index, site=clinical, prl_fraction=prl_fraction,
                                            contrasts=contrasts, **options)
            rows.append(write_clinical_subject(sim, out))
            sid, facts = sim.subject, sim.acquisition
        truths.append(sim.truth)
        subjects.append({"subject": sid, "lesions": len(sim.truth), "prls": int(sim.truth["prl"].sum()),
                         **facts, **sim.params.as_dict()})
        truth = pd.concat(truths, ignore_index=True)
        write_table(truth[[*TRUTH_LEAD, *(c for c in truth if c not in TRUTH_LEAD)]],
                    out / "lesions_truth.tsv")
        write_table(pd.DataFrame(subjects), out / "subjects.tsv")
        if clinical is None:
            write_manifest(rows, manifest)
        else:
            write_table(pd.DataFrame(rows), manifest)
        yield Progress(index + 1, n_subjects, "subject", sid,
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
        for role in WRITTEN:
            (folder / f"{subject}_{role}.nii.gz").unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write_subject(sim: Simulated, out_dir: Path) -> SubjectPaths:
    """Write one subject's images (phase, MP2RAGE, the extra contrasts) and masks under
    ``out_dir/<subject>/``."""
    subject = sim.subject
    folder = out_dir / subject.subject
    folder.mkdir(parents=True, exist_ok=True)
    images = {**{name: image.astype(np.float32) for name, image in subject.images.items()},
              "mask": subject.mask.astype(np.uint8), "prl_mask": subject.prl_mask.astype(np.uint8)}
    paths = {}
    for role, data in images.items():
        paths[role] = folder / f"{subject.subject}_{role}.nii.gz"
        write_nifti(nifti_image(data, subject.affine, DESCRIPTIONS[role]), paths[role])
    return SubjectPaths(subject.subject, tuple((name, paths[name]) for name in subject.images), paths["mask"],
                        paths["prl_mask"])


def write_clinical_subject(sim: ClinicalSimulated, out_dir: Path) -> dict[str, str]:
    """Write a clinical subject's images, each on its own grid, under ``out_dir/<subject>/``;
    returns its manifest row (paths relative to ``out_dir``)."""
    (out_dir / sim.subject).mkdir(parents=True, exist_ok=True)
    row = {"subject": sim.subject}
    for name, image in sim.images.items():
        row[name] = f"{sim.subject}/{sim.subject}_{name}.nii.gz"
        write_nifti(image, out_dir / row[name])
    return row
