"""Loading and validating a subject's images.

A *subject* is four co-registered NIfTI images on the grid of the phase image: ``phase``
(unwrapped, filtered; paramagnetic = dark), ``mp2rage`` (MP2RAGE UNI or any T1-weighted image),
``mask`` (white-matter lesions: binary, or integer instance labels kept as given) and optionally
the ground truth: ``prl_mask`` (binary, voxels of lesions that are PRLs) or ``prl_labels`` (a
lesion label table, e.g. the consensus exported from a rating project; see
:func:`read_prl_labels`). A subject may also have *extra* images, named by contrast
(:data:`EXTRA_CONTRASTS`: a FLAIR, a T2*-weighted magnitude, ...), on the same grid: they are
for display (the review shows them beside phase and MP2RAGE) and are read only when asked for,
so training and scoring never pay for them. Cohorts of subjects are
:mod:`napari_deep_prl.data.cohort`.

Arrays keep the voxel order of the files; orientation is carried by the affine, never assumed.
Every problem a user can fix raises :class:`~napari_deep_prl.base.errors.InputError` naming the file
(or manifest row), the problem and the remedy.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning, describe, file_error
from napari_deep_prl.base.filenames import check_id
from napari_deep_prl.data.labels import read_prl_labels
from napari_deep_prl.data.masks import label_lesions

IMAGE_ROLES = ("phase", "mp2rage", "mask", "prl_mask")
#: Optional display-only images, each a manifest column named by its contrast (blank: none).
EXTRA_CONTRASTS = ("flair", "t1w", "magnitude", "swi", "qsm")


#: Largest difference (mm) tolerated between the affines of a subject's images.
AFFINE_TOLERANCE_MM = 1e-3

NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: Largest image read, in voxels (2**28: e.g. 640 × 640 × 640, or a whole head at 0.35 mm);
#: a loaded subject takes about 20 bytes a voxel, so about 5 GB at the limit.
MAX_VOXELS = 2**28
#: Most a deflate stream expands (1,032 : 1): with the gzip trailer, a bound on what a
#: ``.nii.gz`` file can hold once decompressed.
GZIP_MAX_RATIO = 1032


@dataclass(frozen=True)
class SubjectPaths:
    """Where a subject's images are; cheap to hold for a whole cohort."""

    subject: str
    phase: Path
    mp2rage: Path
    mask: Path
    prl_mask: Path | None = None
    prl_labels: Path | None = None
    #: Extra images for display: (contrast, path) pairs, contrasts from :data:`EXTRA_CONTRASTS`,
    #: in manifest column order.
    extra: tuple[tuple[str, Path], ...] = ()
    #: The column of ``prl_labels`` holding the label (``None``: see :func:`read_prl_labels`).
    prl_labels_column: str | None = None

    def __post_init__(self) -> None:
        extra = tuple((str(name), Path(path)) for name, path in self.extra)
        names = [name for name, _ in extra]
        unknown = [name for name in names if name not in EXTRA_CONTRASTS]
        if unknown or len(set(names)) < len(names):
            problem = f"unknown contrast(s) {', '.join(unknown)}" if unknown else f"a contrast given twice ({names})"
            raise InputError(f"subject {self.subject}: {problem} among the extra images. "
                             f"Name each extra image once, by one of {', '.join(EXTRA_CONTRASTS)}.")
        object.__setattr__(self, "extra", extra)

    @classmethod
    def from_files(cls, phase: str | Path, mp2rage: str | Path, mask: str | Path,
                   prl_mask: str | Path | None = None, *, subject: str | None = None,
                   prl_labels: str | Path | None = None,
                   prl_labels_column: str | None = None) -> SubjectPaths:
        """One subject's files; the id (checked, :func:`~napari_deep_prl.base.filenames.check_id`)
        defaults to the ``sub-<label>`` in the phase file's name, else the name itself."""
        if prl_labels_column is not None and prl_labels is None:
            raise InputError(f"a label column ('{prl_labels_column}') is named but no lesion label "
                             "table; give the table (--prl-labels) or drop the column.")
        named = subject or _subject_id_from(Path(phase))
        check_id(named, what="subject id", remedy="Give the subject another id (--subject ID).")
        return cls(named, Path(phase), Path(mp2rage), Path(mask),
                   Path(prl_mask) if prl_mask is not None else None,
                   Path(prl_labels) if prl_labels is not None else None,
                   prl_labels_column=prl_labels_column)

    @property
    def has_truth(self) -> bool:
        """Whether the subject comes with ground truth (a PRL mask or a lesion label table)."""
        return self.prl_mask is not None or self.prl_labels is not None

    def load(self, *, flip_phase: bool = False, extra: bool = False) -> Subject:
        """Load and validate the images; the extra ones only with ``extra`` (display needs them,
        training and scoring do not)."""
        return _load(self, flip_phase=flip_phase, extra=extra)

    def load_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """Only the lesion mask and its affine: what registering lesions needs."""
        data, img = _read_image(self.mask, "mask")
        return _as_label_mask(data, self.mask), img.affine


@dataclass
class Subject:
    """One subject's images as arrays on the phase grid."""

    subject: str
    phase: np.ndarray
    mp2rage: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    prl_mask: np.ndarray | None = None
    paths: SubjectPaths | None = field(default=None, repr=False)
    #: PRL (True) / not PRL (False) by lesion id, from a lesion label table; unlisted lesions
    #: are unlabelled.
    prl_labels: pd.Series | None = field(default=None, repr=False)
    #: Extra images by contrast (float32, on the phase grid), in the order of ``paths.extra``;
    #: empty unless loaded with ``extra=True``.
    extra: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def images(self) -> dict[str, np.ndarray]:
        """Every intensity image by contrast, in display order: phase, MP2RAGE, then the extras."""
        return {"phase": self.phase, "mp2rage": self.mp2rage, **self.extra}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.phase.shape)  # type: ignore[return-value]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (from the affine)."""
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @cached_property
    def labels(self) -> np.ndarray:
        """The mask's lesion labels (:func:`napari_deep_prl.data.masks.label_lesions`), computed
        once: checking, tabulating and showing a subject all need them."""
        return label_lesions(self.mask)


def load_subject(
    phase: str | Path,
    mp2rage: str | Path,
    mask: str | Path,
    prl_mask: str | Path | None = None,
    *,
    subject: str | None = None,
    flip_phase: bool = False,
    prl_labels: str | Path | None = None,
) -> Subject:
    """Load and validate one subject; ``flip_phase`` negates the phase (paramagnetic → dark)."""
    paths = SubjectPaths.from_files(phase, mp2rage, mask, prl_mask, subject=subject, prl_labels=prl_labels)
    return paths.load(flip_phase=flip_phase)


def _load(paths: SubjectPaths, *, flip_phase: bool, extra: bool) -> Subject:
    if paths.prl_mask is not None and paths.prl_labels is not None:
        raise InputError(f"subject {paths.subject}: both a prl_mask ({paths.prl_mask}) and a prl_labels table "
                         f"({paths.prl_labels}) are given. Give one ground truth per subject.")
    phase_data, phase_img = _read_image(paths.phase, "phase")
    images = {"phase": (paths.phase, phase_data, phase_img)}
    roles = [(role, getattr(paths, role)) for role in ("mp2rage", "mask", "prl_mask")]
    for role, path in roles + (list(paths.extra) if extra else []):
        if path is not None:
            data, img = _read_image(path, role)
            _check_same_grid(paths.phase, phase_img, path, img, role)
            images[role] = (path, data, img)
    prl = None
    if "prl_mask" in images:
        prl = _as_label_mask(images["prl_mask"][1], paths.prl_mask) > 0
    phase_array = _as_float(phase_data, paths.phase)
    return Subject(
        subject=paths.subject,
        phase=-phase_array if flip_phase else phase_array,
        mp2rage=_as_float(images["mp2rage"][1], paths.mp2rage),
        mask=_as_label_mask(images["mask"][1], paths.mask),
        affine=np.asarray(phase_img.affine, dtype=np.float64),
        prl_mask=prl,
        paths=paths,
        prl_labels=(read_prl_labels(paths.prl_labels, paths.subject, column=paths.prl_labels_column)
                    if paths.prl_labels is not None else None),
        extra={name: _as_float(images[name][1], path) for name, path in paths.extra if name in images},
    )


def _subject_id_from(path: Path) -> str:
    match = re.search(r"sub-[A-Za-z0-9]+", path.name)
    return match.group(0) if match else strip_nifti_suffix(path.name)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------- images

def header_problems(paths: SubjectPaths) -> list[str]:
    """Everything the headers of a subject's images show to be wrong (a missing or unreadable
    file, not one 3D volume, a bad affine, a grid other than the phase image's), for every image
    and without reading voxels: ``project init`` checks each subject so before registering any."""
    images = [("phase", paths.phase), ("mp2rage", paths.mp2rage), ("mask", paths.mask),
              ("prl_mask", paths.prl_mask), *paths.extra]
    problems, phase = [], None
    for role, path in images:
        if path is None:
            continue
        try:
            img, _ = _read_header(path, role)
            if role == "phase":
                phase = img
            elif phase is not None:
                _check_same_grid(paths.phase, phase, path, img, role)
        except InputError as err:
            problems.append(str(err))
    return problems


def _read_header(path: Path, role: str) -> tuple[nib.Nifti1Image, tuple[int, int, int]]:
    """A NIfTI image's header, checked (one 3D volume, a valid affine, a plausible size), and its
    3D shape; no voxel is read. Every failure becomes an InputError."""
    if not path.exists():
        raise file_error(path, f"{role} image not found",
                         "Check the path (manifest paths are relative to the manifest's folder).")
    if path.is_dir():
        raise file_error(path, f"{role} path is a folder, not a NIfTI file",
                         "Give the .nii or .nii.gz file inside it.")
    with _header_fixes_as_warnings(path):
        try:
            img = nib.load(str(path))
        except Exception as err:  # nibabel raises many types for broken headers
            img = _uncompressed_named_gz(path)
            if img is None:
                raise file_error(path, f"cannot be read as a NIfTI image ({describe(err)})",
                                 "Check that it is a .nii/.nii.gz file and re-export it if it is damaged.") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise file_error(path, f"is a {type(img).__name__}, not a NIfTI image",
                         "Convert it to NIfTI (.nii or .nii.gz), e.g. with dcm2niix.")
    shape = tuple(int(s) for s in img.shape)
    spatial = _spatial_shape(shape, path, role)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise file_error(path, "has an invalid affine (not finite or singular)",
                         "Fix the qform/sform of the header so voxel sizes and orientation are defined.")
    _check_size(path, role, img)
    return img, spatial


def _read_image(path: Path, role: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a NIfTI image's data as a 3D array; every failure becomes an InputError."""
    img, spatial = _read_header(path, role)
    try:
        data = np.asanyarray(img.dataobj)
    except MemoryError as err:
        raise file_error(path, f"not enough memory to read the {role} image of shape {spatial}",
                         "Check the header's dimensions or free memory.") from err
    except Exception as err:  # truncated gzip, short file, bad scaling...
        raise file_error(path, f"image data cannot be read ({describe(err)}); the file may be truncated",
                         "Re-export or re-copy the file.") from err
    return data.reshape(spatial), img


def _check_size(path: Path, role: str, img: nib.Nifti1Image) -> None:
    """What the header promises, checked before a byte of data is allocated: the data type, the
    voxel count against :data:`MAX_VOXELS`, and the data's bytes against what the file holds
    (a 1 kB file cannot hold a gigabyte image however its header reads)."""
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise file_error(path, f"{role} image is complex-valued",
                         "Give the unwrapped phase (real-valued), not the complex signal.")
    if dtype.kind not in "biuf":
        raise file_error(path, f"{role} image has an unsupported data type ({dtype})",
                         "Save it as an integer or floating-point NIfTI.")
    voxels = int(np.prod(img.shape, dtype=object))
    if voxels > MAX_VOXELS:
        raise file_error(path, f"{role} image header claims {img.shape} = {voxels:,} voxels, more than the "
                         f"{MAX_VOXELS:,} this package reads (docs/data.md, 'Input limits')",
                         "If the header is right, crop the image to the brain or resample it; if not, the "
                         "header is damaged: re-export the image")
    needed = int(img.dataobj.offset) + voxels * dtype.itemsize
    holds, compressed = _most_bytes(path)
    if needed > holds and not (compressed and _decompresses_to(path, needed)):
        holds = "it decompresses to fewer" if compressed else f"the file holds {holds:,}"
        raise file_error(path, f"{role} image header promises {img.shape} {dtype} voxels, {needed:,} bytes of "
                         f"file, but {holds}: the file is truncated or its header is damaged",
                         "Re-export or re-copy the file")


def _most_bytes(path: Path) -> tuple[int, bool]:
    """The most bytes the file can give once read, and whether it is gzip-compressed: its size,
    or for gzip the sizes its trailer allows (ISIZE, the length modulo 2**32, below the file's
    size × :data:`GZIP_MAX_RATIO`). A file of several gzip members can give more than this: see
    :func:`_decompresses_to`."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b" or size < 18:
            return size, False
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    most = size * GZIP_MAX_RATIO
    return (isize + (most - isize) // 2**32 * 2**32 if isize <= most else most), True


def _decompresses_to(path: Path, needed: int) -> bool:
    """Whether the gzip file gives at least ``needed`` bytes, decompressed a MB at a time and
    kept nowhere (for the rare files of several members, whose trailer counts the last one)."""
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while total < needed:
                chunk = fh.read(1 << 20)
                if not chunk:
                    return False
                total += len(chunk)
    except (OSError, EOFError, zlib.error):  # damaged or cut short: it does not hold them
        return False
    return True


_NIBABEL_LOG_LOCK = threading.Lock()


@contextmanager
def _header_fixes_as_warnings(path: Path) -> Iterator[None]:
    """nibabel prints the header fixes it makes on reading (e.g. a zero voxel size set to 1) to
    stderr, without the file's name; report each as an InputWarning that names the file."""
    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append  # type: ignore[method-assign]
    logger = nib.imageglobals.logger
    with _NIBABEL_LOG_LOCK:  # the logger is global; subjects may load in threads
        saved = list(logger.handlers)
        for handler in saved:
            logger.removeHandler(handler)
        logger.addHandler(collector)
        try:
            yield
        finally:
            logger.removeHandler(collector)
            for handler in saved:
                logger.addHandler(handler)
    for record in records:
        warnings.warn(f"{path}: header fixed on reading: {record.getMessage()}", InputWarning, stacklevel=5)


def _uncompressed_named_gz(path: Path) -> nib.Nifti1Image | None:
    """An uncompressed NIfTI saved under a ``.gz`` name (renamed by hand, or by a tool that
    forgot to compress), read with a warning; None when the file is something else."""
    if path.suffix != ".gz":
        return None
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # really gzip: broken, not misnamed
        return None
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            img = kind.from_bytes(raw)
        except Exception:  # not this kind of NIfTI: try the next
            continue
        warnings.warn(f"{path}: not gzip-compressed although named .gz; read as an uncompressed NIfTI "
                      "(rename it to .nii to silence this).", InputWarning, stacklevel=4)
        return img
    return None


def _spatial_shape(shape: tuple[int, ...], path: Path, role: str) -> tuple[int, int, int]:
    if len(shape) < 3:
        raise file_error(path, f"{role} image is {len(shape)}D with shape {shape}, not a 3D volume",
                         "Give a 3D image.")
    extra = shape[3:]
    if any(s != 1 for s in extra):
        raise file_error(path, f"{role} image has shape {shape}: {int(np.prod(extra))} volumes, not one",
                         "Extract the single 3D volume to use (e.g. with fslroi or nibabel).")
    if min(shape[:3]) < 1:
        raise file_error(path, f"{role} image is empty (shape {shape})", "Re-export the image.")
    return shape[:3]  # type: ignore[return-value]


def _check_same_grid(ref_path: Path, ref: nib.Nifti1Image, path: Path, img: nib.Nifti1Image, role: str) -> None:
    ref_shape, shape = tuple(ref.shape[:3]), tuple(img.shape[:3])
    if ref_shape != shape:
        raise InputError(
            f"{path}: {role} image shape {shape} differs from the phase image {ref_path} with shape {ref_shape}. "
            "All inputs of a subject must be on the phase grid: resample them to the phase image first."
        )
    diff = float(np.max(np.abs(np.asarray(img.affine) - np.asarray(ref.affine))))
    if diff > AFFINE_TOLERANCE_MM:
        raise InputError(
            f"{path}: {role} image affine differs from the phase image {ref_path} by up to {diff:.4g} mm "
            f"(tolerance {AFFINE_TOLERANCE_MM} mm). All inputs of a subject must share the phase grid: "
            "register and resample them to the phase image first."
        )


def _as_float(data: np.ndarray, path: Path) -> np.ndarray:
    """Float32 intensities; NaN/Inf become 0 (with a warning), a blank image is refused."""
    out = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(out)
    n_bad = int(bad.sum())
    finite = out[~bad] if n_bad else out  # a copy only in the rare case of NaN/Inf voxels
    if finite.size == 0:
        raise file_error(path, "the image has no finite voxel (every voxel is NaN or Inf)",
                         "Check that the right file is given and re-export it.")
    low, high = finite.min(), finite.max()
    if low == high:
        raise file_error(path, f"the image is blank: every voxel is {low:g}",
                         "Check that the right file is given and re-export it.")
    if n_bad:
        out = np.where(bad, np.float32(0), out)
        warnings.warn(f"{path}: {n_bad} NaN/Inf voxels replaced with 0.", InputWarning, stacklevel=3)
    return out


def _as_label_mask(data: np.ndarray, path: Path) -> np.ndarray:
    """A mask as int32 labels: binary or instance labels, kept as given."""
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            warnings.warn(f"{path}: {int((~finite).sum())} NaN/Inf voxels replaced with 0.",
                          InputWarning, stacklevel=3)
            data = np.where(finite, data, 0)
        fractional = data != np.round(data)
        if fractional.any():
            example = float(data[fractional].flat[0])
            raise file_error(path, f"mask has non-integer values (e.g. {example:.3g})",
                             "Give a binary or integer-labelled mask; threshold a probability map first.")
    if data.size and data.min() < 0:
        raise file_error(path, f"mask has negative values (minimum {data.min()})",
                         "Give a binary or non-negative integer-labelled mask.")
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise file_error(path, "mask labels exceed the int32 range", "Relabel the lesions from 1.")
    return np.asarray(data, dtype=np.int32)


