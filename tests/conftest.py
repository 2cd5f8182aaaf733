"""Shared fixtures: tiny NIfTI subjects written on the fly (no simulator needed)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.images import SubjectPaths


def blob_mask(shape=(32, 32, 24), centres=((8, 8, 8), (20, 20, 12), (10, 24, 16)), radius=2.5) -> np.ndarray:
    """A binary mask of spheres (one lesion each)."""
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=np.uint8)
    for c in centres:
        d2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
        mask[d2 <= radius**2] = 1
    return mask


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0]) if affine is None else affine), str(path))
    return path


@pytest.fixture(name="save_nifti")
def save_nifti_fixture():
    """The :func:`save_nifti` helper, for tests that write broken or odd images."""
    return save_nifti


def write_subject_files(folder: Path, name: str = "sub-01", *, mask: np.ndarray | None = None, prl_lesions=(0,),
                        seed: int = 0, affine: np.ndarray | None = None, rim_lesions=(),
                        extra=()) -> SubjectPaths:
    """A small subject's NIfTI files in ``folder/name``. Lesions (connected components, 0-based)
    in ``prl_lesions`` are PRLs in its prl_mask; those in ``rim_lesions`` carry a dark phase shell
    (a paramagnetic rim), which a network can learn to see. ``extra``: contrasts besides phase
    and MP2RAGE (e.g. ``("flair",)``), written as ``<name>_<contrast>.nii.gz``."""
    rng = np.random.default_rng(seed)
    mask = blob_mask() if mask is None else mask
    shape = mask.shape
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    phase = rng.normal(0, 0.02, shape).astype(np.float32)
    mp2rage = (0.8 + rng.normal(0, 0.02, shape)).astype(np.float32)
    mp2rage[mask > 0] = 0.4
    from scipy import ndimage

    labels, _ = ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))
    prl = np.isin(labels, [i + 1 for i in prl_lesions]).astype(np.uint8)
    rimmed = np.isin(labels, [i + 1 for i in rim_lesions])
    phase[ndimage.binary_dilation(rimmed) & ~rimmed] -= 0.3
    return SubjectPaths(
        name,
        (("phase", save_nifti(folder / f"{name}_phase.nii.gz", phase, affine)),
         ("mp2rage", save_nifti(folder / f"{name}_mp2rage.nii.gz", mp2rage, affine)),
         *((contrast, save_nifti(folder / f"{name}_{contrast}.nii.gz",
                                 np.random.default_rng([seed, i]).normal(0.5, 0.05, shape).astype(np.float32), affine))
           for i, contrast in enumerate(extra))),
        save_nifti(folder / f"{name}_mask.nii.gz", mask, affine),
        save_nifti(folder / f"{name}_prlmask.nii.gz", prl, affine),
    )


@pytest.fixture
def write_subject(tmp_path):
    """Factory writing a small subject's NIfTI files (:func:`write_subject_files`, in ``tmp_path``
    unless ``folder`` is given); returns its :class:`SubjectPaths`."""

    def write(name: str = "sub-01", *, folder: Path | None = None, **options) -> SubjectPaths:
        return write_subject_files(folder or tmp_path, name, **options)

    return write


@pytest.fixture
def manifest(tmp_path, write_subject) -> Path:
    """A manifest of three small subjects with relative paths."""
    subjects = [write_subject(f"sub-0{i}", seed=i) for i in (1, 2, 3)]
    return write_manifest(subjects, tmp_path / "manifest.csv")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for this test session (tests/postgres_server.py), started on first use."""
    from postgres_server import PostgresServer

    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_address(request, tmp_path):
    """Where a new rating store goes, on each engine: a file in ``tmp_path``, or an empty database
    on the test session's PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "ratings.sqlite"
    return request.getfixturevalue("postgres_server").new_database()
