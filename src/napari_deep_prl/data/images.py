"""Loading and validating a subject's images.

A *subject* is one **susceptibility** image — ``phase`` (unwrapped or high-pass filtered phase,
paramagnetic dark) or ``qsm`` (susceptibility in ppm, paramagnetic bright) — one or more
**structural** images (``mp2rage``, ``t1w``, ``flair``), the lesion ``mask`` (white-matter
lesions: binary, or integer instance labels kept as given) and optionally the ground truth:
``prl_mask`` (binary, voxels of lesions that are PRLs) or ``prl_labels`` (a lesion label table,
e.g. the consensus exported from a rating project; see :func:`read_prl_labels`). It may also
have **display-only** images (``magnitude``, ``swi``): the review shows them, and they are read
only when asked for (``extra=True``), so training and scoring never pay for them. Every image is
named by its contrast (:mod:`napari_deep_prl.data.contrasts`); cohorts of subjects are
:mod:`napari_deep_prl.data.cohort`.

**Grids.** Each image may come on its own grid (shape and affine), as long as all are
co-registered in world space. They are put on the subject's *reference grid*: the
susceptibility image's, or, when that grid is anisotropic (an SWI slab of 0.6 × 0.6 × 2 mm), the
finest isotropic structural grid (:func:`~napari_deep_prl.data.resample.default_reference`);
:attr:`SubjectPaths.reference` (a manifest's ``reference`` column) may name another of its
images or ``mask`` instead. :mod:`napari_deep_prl.data.resample` puts them there:
images linearly, masks by nearest neighbour with the lesion ids of the mask's own grid. An image
already on the reference grid (same shape, affine within 0.001 mm) is read as it is, bit for bit.
Images that do not overlap enough are refused; lesions that resampling loses or splits are
reported (an ``InputWarning``) and recorded. The susceptibility image is checked for its sign
convention, and a QSM for its units, on its own grid (:mod:`napari_deep_prl.data.susceptibility`).

**The Subject API**, which training, scoring and the viewer build on:

``Subject.images``
    every intensity image by contrast, float32 on the reference grid: the susceptibility image
    first, then the structural ones in manifest order, then — only when loaded with
    ``extra=True`` — the display-only ones.
``Subject.susceptibility``, ``Subject.structural``
    the susceptibility image's contrast (``"phase"`` or ``"qsm"``) and the structural
    contrasts (a tuple, in ``images`` order).
``Subject.mask``, ``Subject.labels``, ``Subject.prl_mask``, ``Subject.prl_labels``
    the lesion mask (int32), its lesion labels (the ids the mask has on its own grid), the PRL
    mask (bool) and a label table's labels, on the reference grid.
``Subject.affine``, ``Subject.shape``, ``Subject.zooms``
    the reference grid.
``Subject.phase``, ``Subject.mp2rage``
    ``images["phase"]`` and ``images["mp2rage"]``; an ``InputError`` naming the subject and
    the images it has when it has no such image.
``Subject.grids``, ``Subject.reference``, ``Subject.space``
    each image's own grid and how it came onto the reference grid
    (:class:`~napari_deep_prl.data.resample.ImageGrid` by image: its contrast, ``mask``,
    ``prl_mask``; ``ImageGrid.as_dict()`` for outputs and checkpoints; the reference image's
    even when it was not read), and which image's grid is the reference; empty and ``None`` for
    a subject made in memory.
``Subject.lesion_changes``
    the lesions that resampling the mask lost or split
    (:class:`~napari_deep_prl.data.resample.LesionChanges`).

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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError, InputWarning, describe, file_error
from napari_deep_prl.base.filenames import check_id
from napari_deep_prl.data.contrasts import DISPLAY_ONLY, STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.data.labels import read_prl_labels
from napari_deep_prl.data.masks import is_instance_mask, label_lesions
from napari_deep_prl.data.resample import (
    Grid,
    ImageGrid,
    LesionChanges,
    anisotropic,
    check_lesions_inside,
    check_overlap,
    default_reference,
    lesion_changes,
    lesions_outside,
    resample_image,
    resample_labels,
)
from napari_deep_prl.data.susceptibility import check_susceptibility

#: Every image contrast a subject may have, in the order of ``Subject.images``.
CONTRASTS = (*SUSCEPTIBILITY, *STRUCTURAL, *DISPLAY_ONLY)

NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: Largest image read, in voxels (2**28: e.g. 640 × 640 × 640, or a whole head at 0.35 mm);
#: a loaded subject takes about 20 bytes a voxel, so about 5 GB at the limit.
MAX_VOXELS = 2**28
#: Most a deflate stream expands (1,032 : 1): with the gzip trailer, a bound on what a
#: ``.nii.gz`` file can hold once decompressed.
GZIP_MAX_RATIO = 1032


def contrast_order(names: Iterable[str], who: str) -> list[str]:
    """``names`` (a subject's image contrasts) in the order of :data:`CONTRASTS`' groups — the
    susceptibility image, the structural ones, the display-only ones — each group in the order
    given; an InputError naming ``who`` for an unknown or repeated contrast, or unless there is
    exactly one susceptibility image."""
    names = list(names)
    unknown = [n for n in names if n not in CONTRASTS]
    if unknown:
        raise InputError(f"{who}: unknown image contrast(s) {', '.join(map(str, unknown))}. Name each image by "
                         f"its contrast, one of {', '.join(CONTRASTS)} (docs/data.md).")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{who}: the {', '.join(repeated)} image is given twice. Give each contrast once.")
    susceptibility = [n for n in names if n in SUSCEPTIBILITY]
    if not susceptibility:
        raise InputError(f"{who} has no susceptibility image (it has {', '.join(names) or 'none'}). Give a phase "
                         "(unwrapped or filtered phase) or a qsm (susceptibility map in ppm).")
    if len(susceptibility) > 1:
        raise InputError(f"{who} has two susceptibility images ({' and '.join(susceptibility)}): a subject has "
                         "one. Give one of them; the other can be neither a model input nor shown.")
    return [n for group in (SUSCEPTIBILITY, STRUCTURAL, DISPLAY_ONLY) for n in names if n in group]


def _absent(subject: str, missing: Sequence[str], has: Iterable[str]) -> str:
    return (f"subject {subject} has no {' or '.join(missing)} image (it has {', '.join(has)}), and this needs "
            f"it. Give the subject {'these images' if len(missing) > 1 else 'one'} (a manifest column named by the "
            "contrast), or use what it has.")


@dataclass(frozen=True)
class SubjectPaths:
    """Where a subject's images are; cheap to hold for a whole cohort."""

    subject: str
    #: (contrast, path) pairs, put in :func:`contrast_order`: the susceptibility image, the
    #: structural ones, the display-only ones.
    images: tuple[tuple[str, Path], ...]
    mask: Path
    prl_mask: Path | None = None
    prl_labels: Path | None = None
    #: The column of ``prl_labels`` holding the label (``None``: see :func:`read_prl_labels`).
    prl_labels_column: str | None = None
    #: The image whose grid the others are put on: a contrast of ``images``, or ``"mask"``
    #: (``None``: the default, :func:`~napari_deep_prl.data.resample.default_reference`).
    reference: str | None = None

    def __post_init__(self) -> None:
        given = {str(name): Path(path) for name, path in self.images}
        if len(given) < len(self.images):
            contrast_order([str(name) for name, _ in self.images], f"subject {self.subject}")  # says which
        order = contrast_order(given, f"subject {self.subject}")
        object.__setattr__(self, "images", tuple((name, given[name]) for name in order))
        if not self.structural:
            raise InputError(f"subject {self.subject} has no structural image (it has {', '.join(order)}). "
                             f"Give one or more of {', '.join(STRUCTURAL)}.")
        object.__setattr__(self, "mask", Path(self.mask))
        for name in ("prl_mask", "prl_labels"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.reference is not None and self.reference not in (*order, "mask"):
            raise InputError(f"subject {self.subject}: the reference grid '{self.reference}' is none of its images "
                             f"({', '.join(order)}, mask). Name one of them, or none for the default "
                             "(the susceptibility image's grid; on an anisotropic slab the finest structural one).")

    @classmethod
    def from_files(cls, *, mask: str | Path, prl_mask: str | Path | None = None, subject: str | None = None,
                   prl_labels: str | Path | None = None, prl_labels_column: str | None = None,
                   reference: str | None = None, **images: str | Path | None) -> SubjectPaths:
        """One subject's files, each image given by its contrast (``phase=...``, ``t1w=...``;
        ``None``: not given). The id (checked, :func:`~napari_deep_prl.base.filenames.check_id`)
        defaults to the ``sub-<label>`` in the susceptibility image's file name, else the name itself."""
        if prl_labels_column is not None and prl_labels is None:
            raise InputError(f"a label column ('{prl_labels_column}') is named but no lesion label "
                             "table; give the table (--prl-labels) or drop the column.")
        given = {name: Path(path) for name, path in images.items() if path is not None}
        named_by = next((given[name] for name in SUSCEPTIBILITY if name in given), Path(mask))
        named = subject or _subject_id_from(named_by)
        check_id(named, what="subject id", remedy="Give the subject another id (--subject ID).")
        return cls(named, tuple(given.items()), Path(mask),
                   Path(prl_mask) if prl_mask is not None else None,
                   Path(prl_labels) if prl_labels is not None else None,
                   prl_labels_column=prl_labels_column, reference=reference)

    @property
    def susceptibility(self) -> str:
        """The susceptibility image's contrast: ``"phase"`` or ``"qsm"``."""
        return self.images[0][0]

    @property
    def structural(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.images if name in STRUCTURAL)

    @property
    def display_only(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.images if name in DISPLAY_ONLY)

    def image(self, contrast: str) -> Path:
        """The file of the image of ``contrast``; an InputError naming what the subject has."""
        for name, path in self.images:
            if name == contrast:
                return path
        raise InputError(_absent(self.subject, [contrast], (name for name, _ in self.images)))

    @property
    def has_truth(self) -> bool:
        """Whether the subject comes with ground truth (a PRL mask or a lesion label table)."""
        return self.prl_mask is not None or self.prl_labels is not None

    def load(self, *, flip_phase: bool = False, extra: bool = False,
             contrasts: Sequence[str] | None = None) -> Subject:
        """Load and validate the images, on the reference grid. ``flip_phase`` negates a phase
        (paramagnetic → dark). ``contrasts``: read only these images (and the susceptibility
        image), each one the subject must have (an InputError naming what it has otherwise);
        ``None``: all but the display-only ones. ``extra``: the display-only ones too (display
        needs them, training and scoring do not)."""
        return _load(self, flip_phase=flip_phase, extra=extra, contrasts=contrasts)

    def load_mask(self) -> LesionMask:
        """Only the lesion mask, on the reference grid: what registering lesions needs (the
        reference image's header is read, not its voxels)."""
        return _lesion_mask(self, _reference(self))


@dataclass
class LesionMask:
    """A subject's lesion mask on its reference grid (:meth:`SubjectPaths.load_mask`)."""

    #: int32: binary, or instance labels.
    mask: np.ndarray
    #: The reference grid's affine.
    affine: np.ndarray
    #: The mask's own grid and how it came onto the reference grid.
    grid: ImageGrid
    #: Lesions resampling lost or split.
    changes: LesionChanges = field(default_factory=LesionChanges)
    #: The lesion labels of a resampled mask (the ids of its own grid); or those a project registered;
    #: ``None``: from :attr:`mask`.
    resampled_labels: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def labels(self) -> np.ndarray:
        """The lesion labels: the ids the mask has on its own grid."""
        if self.resampled_labels is not None:
            return self.resampled_labels
        return label_lesions(self.mask, Grid.of(self.mask.shape, self.affine).zooms)


@dataclass
class Subject:
    """One subject's images as arrays on its reference grid (see the module doc: the Subject API)."""

    subject: str
    #: Intensity images by contrast (float32, reference grid), put in :func:`contrast_order`.
    images: dict[str, np.ndarray]
    mask: np.ndarray
    affine: np.ndarray
    prl_mask: np.ndarray | None = None
    paths: SubjectPaths | None = field(default=None, repr=False)
    #: PRL (True) / not PRL (False) by lesion id, from a lesion label table; unlisted lesions
    #: are unlabelled.
    prl_labels: pd.Series | None = field(default=None, repr=False)
    #: Each image's own grid and how it came onto the reference grid, by image (contrasts,
    #: ``mask``, ``prl_mask``); empty for a subject made in memory.
    grids: dict[str, ImageGrid] = field(default_factory=dict, repr=False)
    #: The lesions that resampling the mask lost or split.
    lesion_changes: LesionChanges = field(default_factory=LesionChanges, repr=False)
    #: The lesion labels of a mask resampled onto the reference grid (the ids of its own grid);
    #: or those a project registered (confluent components whole, as
    #: before they were split); ``None``: :attr:`labels` come from :attr:`mask`.
    resampled_labels: np.ndarray | None = field(default=None, repr=False)
    #: Which image's grid is the reference grid: a contrast or ``"mask"`` (``None`` for a
    #: subject made in memory).
    reference: str | None = None

    def __post_init__(self) -> None:
        order = contrast_order(self.images, f"subject {self.subject}")
        self.images = {name: self.images[name] for name in order}
        shape = tuple(np.shape(self.mask))
        wrong = [f"{name} {tuple(np.shape(image))}" for name, image in self.images.items()
                 if tuple(np.shape(image)) != shape]
        if wrong:
            raise InputError(f"subject {self.subject}: image shapes {', '.join(wrong)} differ from the mask's {shape}. "
                             "Give every array on one grid.")

    @property
    def susceptibility(self) -> str:
        """The susceptibility image's contrast: ``"phase"`` or ``"qsm"``."""
        return next(iter(self.images))

    @property
    def structural(self) -> tuple[str, ...]:
        return tuple(name for name in self.images if name in STRUCTURAL)

    @property
    def phase(self) -> np.ndarray:
        """``images["phase"]``; an InputError when the subject has none."""
        return self._image("phase")

    @property
    def mp2rage(self) -> np.ndarray:
        """``images["mp2rage"]``; an InputError when the subject has none."""
        return self._image("mp2rage")

    def _image(self, contrast: str) -> np.ndarray:
        if contrast not in self.images:
            raise InputError(_absent(self.subject, [contrast], self.images))
        return self.images[contrast]

    @property
    def space(self) -> str:
        """The BIDS ``space-`` label of maps on the reference grid: the reference image's
        contrast (``mask`` for the mask's grid; the susceptibility image's for a subject made
        in memory), so a map says which grid it lies on."""
        return self.reference or self.susceptibility

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)  # type: ignore[return-value]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (from the affine)."""
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @cached_property
    def labels(self) -> np.ndarray:
        """The mask's lesion labels (:func:`napari_deep_prl.data.masks.label_lesions`, or those
        of the mask on its own grid when it was resampled), computed once: checking,
        tabulating and showing a subject all need them."""
        return self.resampled_labels if self.resampled_labels is not None else label_lesions(self.mask, self.zooms)


def load_subject(*, mask: str | Path, prl_mask: str | Path | None = None, subject: str | None = None,
                 flip_phase: bool = False, prl_labels: str | Path | None = None, reference: str | None = None,
                 extra: bool = False, **images: str | Path | None) -> Subject:
    """Load and validate one subject, its images given by contrast
    (``load_subject(phase=..., mp2rage=..., mask=...)``); ``flip_phase`` negates a phase
    (paramagnetic → dark)."""
    paths = SubjectPaths.from_files(mask=mask, prl_mask=prl_mask, subject=subject, prl_labels=prl_labels,
                                    reference=reference, **images)
    return paths.load(flip_phase=flip_phase, extra=extra)


@dataclass(frozen=True)
class _Reference:
    """The image whose grid a subject's images are put on."""

    role: str
    path: Path
    grid: Grid


def _reference(paths: SubjectPaths) -> _Reference:
    """The image named as the reference, else the susceptibility image unless its grid is
    anisotropic and a structural image's is finer (:func:`~napari_deep_prl.data.resample.default_reference`)."""
    if paths.reference is not None:
        return _header_grid(paths, paths.reference)
    susceptibility = _header_grid(paths, paths.susceptibility)
    if not anisotropic(susceptibility.grid):
        return susceptibility
    structural = {name: _header_grid(paths, name) for name in paths.structural}
    finer = default_reference(susceptibility.grid, {name: ref.grid for name, ref in structural.items()})
    return susceptibility if finer is None else structural[finer]


def _header_grid(paths: SubjectPaths, role: str) -> _Reference:
    """The grid of a subject's image (a contrast or ``mask``) from its header."""
    path = paths.mask if role == "mask" else paths.image(role)
    img, spatial = _read_header(path, role)
    return _Reference(role, path, Grid.of(spatial, img.affine))


def _placement(reference: _Reference, grid: Grid, path: Path, role: str, *, labels: bool = False) -> str:
    """How an image comes onto the reference grid (:attr:`~napari_deep_prl.data.resample.ImageGrid.resampling`),
    after checking that its grid overlaps the reference grid enough."""
    if role == reference.role:
        return "reference"
    if grid.same_as(reference.grid):
        return "none"
    check_overlap(reference.grid, reference.path, grid, path, role)
    return "nearest" if labels else "linear"


def _load(paths: SubjectPaths, *, flip_phase: bool, extra: bool, contrasts: Sequence[str] | None) -> Subject:
    if paths.prl_mask is not None and paths.prl_labels is not None:
        raise InputError(f"subject {paths.subject}: both a prl_mask ({paths.prl_mask}) and a prl_labels table "
                         f"({paths.prl_labels}) are given. Give one ground truth per subject.")
    if flip_phase and paths.susceptibility != "phase":
        raise InputError(f"subject {paths.subject}: flip_phase (--flip-phase) negates a phase image, but the "
                         f"susceptibility image is a QSM ({paths.image(paths.susceptibility)}), paramagnetic-bright "
                         "by definition. Drop --flip-phase; if the QSM's sign is wrong, negate the file "
                         "(e.g. fslmaths qsm -mul -1 qsm_negated).")
    reference = _reference(paths)
    images: dict[str, np.ndarray] = {}
    # The reference image's grid is recorded even when the image is not read (``contrasts``).
    grids = {reference.role: ImageGrid(reference.path, reference.grid, "reference")}
    for contrast, path in _wanted(paths, extra, contrasts):
        data, img = _read_image(path, contrast)
        grid = Grid.of(data.shape, img.affine)
        grids[contrast] = ImageGrid(path, grid, _placement(reference, grid, path, contrast))
        array = _as_float(data, path)
        if contrast == paths.susceptibility:
            array = -array if flip_phase else array
            check_susceptibility(array, grid.affine, contrast, path, flipped=flip_phase)
        images[contrast] = resample_image(array, grid, reference.grid) if grids[contrast].resampling == "linear" \
            else array
    lesions = _lesion_mask(paths, reference)
    grids["mask"] = lesions.grid
    prl = None
    if paths.prl_mask is not None:
        data, img = _read_image(paths.prl_mask, "prl_mask")
        grid = Grid.of(data.shape, img.affine)
        grids["prl_mask"] = ImageGrid(paths.prl_mask, grid,
                                      _placement(reference, grid, paths.prl_mask, "prl_mask", labels=True))
        prl = _as_label_mask(data, paths.prl_mask) > 0
        if grids["prl_mask"].resampling == "nearest":
            prl = resample_labels(prl.view(np.uint8), grid, reference.grid) > 0
    subject = Subject(
        subject=paths.subject,
        images=images,
        mask=lesions.mask,
        affine=reference.grid.affine,
        prl_mask=prl,
        paths=paths,
        prl_labels=(read_prl_labels(paths.prl_labels, paths.subject, column=paths.prl_labels_column)
                    if paths.prl_labels is not None else None),
        grids=grids,
        lesion_changes=lesions.changes,
        resampled_labels=lesions.resampled_labels,
        reference=reference.role,
    )
    _warn_lesions_outside(subject, reference.grid)
    return subject


def _warn_lesions_outside(subject: Subject, reference: Grid) -> None:
    """Warn of lesions that reach beyond a resampled image's field of view (e.g. a susceptibility
    slab narrower than the 1 mm structural reference): the image reads 0 there, so the network
    sees no rim where there may be one."""
    for contrast, record in subject.grids.items():
        if record.resampling != "linear" or contrast not in subject.images:
            continue
        outside = lesions_outside(subject.labels, reference, record.grid)
        if outside:
            shown = ", ".join(map(str, outside[:10])) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
            warnings.warn(f"subject {subject.subject}: lesion(s) {shown} reach beyond the field of view of the "
                          f"{contrast} image {record.file} ({record.grid.describe()}); it reads 0 there, so their "
                          "scores and rim evidence miss part of the lesion. Acquire or reconstruct that image over "
                          "the whole brain, or judge these lesions yourself.", InputWarning, stacklevel=3)


def _wanted(paths: SubjectPaths, extra: bool, contrasts: Sequence[str] | None) -> list[tuple[str, Path]]:
    """The images to read: the susceptibility image, the ``contrasts`` asked for (``None``: the
    structural ones), and with ``extra`` the display-only ones."""
    names = [name for name, _ in paths.images]
    if contrasts is None:
        asked = set(paths.structural)
    else:
        asked = set(contrasts)
        missing = [name for name in dict.fromkeys(contrasts) if name not in names]
        if missing:
            raise InputError(_absent(paths.subject, missing, names))
    asked |= {paths.susceptibility} | (set(paths.display_only) if extra else set())
    return [(name, path) for name, path in paths.images if name in asked]


def _lesion_mask(paths: SubjectPaths, reference: _Reference) -> LesionMask:
    """The mask on the reference grid: read as it is, or resampled with its lesion ids kept
    (refused when most lesions fall outside the reference grid; lost and split lesions reported)."""
    data, img = _read_image(paths.mask, "mask")
    mask = _as_label_mask(data, paths.mask)
    grid = Grid.of(mask.shape, img.affine)
    record = ImageGrid(paths.mask, grid, _placement(reference, grid, paths.mask, "mask", labels=True))
    if record.resampling != "nearest":
        return LesionMask(mask, reference.grid.affine, record)
    labels = label_lesions(mask, grid.zooms)
    check_lesions_inside(labels, grid, paths.mask, reference.grid, reference.path)
    moved = resample_labels(labels, grid, reference.grid)
    changes = lesion_changes(labels, moved)
    if changes:
        warnings.warn(f"subject {paths.subject}: resampling the lesion mask {paths.mask} onto the grid of "
                      f"{reference.path} {changes.describe()} (lesions smaller than its voxels, outside its field "
                      "of view, or thin). Lesion ids stay those of the mask; a lost lesion is in no table or "
                      "score. To keep every lesion whole, take the mask's grid as the reference (manifest column "
                      "reference: mask).", InputWarning, stacklevel=2)
    # A binary mask stays binary (its lesions' confluence is judged as a binary mask's); an
    # instance mask keeps its labels.
    resampled = moved if is_instance_mask(mask) else (moved > 0).astype(np.int32)
    return LesionMask(resampled, reference.grid.affine, record, changes, moved)


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
    file, not one 3D volume, a bad affine, a grid that does not overlap the reference grid), for
    every image and without reading voxels: ``project init`` checks each subject so before
    registering any."""
    problems = []
    try:
        reference = _reference(paths)
    except InputError as err:
        problems.append(str(err))
        reference = None
    for role, path in [*paths.images, ("mask", paths.mask), ("prl_mask", paths.prl_mask)]:
        if path is None:
            continue
        try:
            img, spatial = _read_header(path, role)
            if reference is not None:
                _placement(reference, Grid.of(spatial, img.affine), path, role)
        except InputError as err:
            problems.append(str(err))
    return list(dict.fromkeys(problems))  # a header the reference's choice read fails once


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
        except Exception:  # not this kind of NIfTI: try the next  # noqa: BLE001 (any failure means the same here)
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
        volumes = int(np.prod(extra))
        if role in SUSCEPTIBILITY:
            raise file_error(path, f"{role} image has shape {shape}: {volumes} volumes, not one (the echoes of a "
                             "multi-echo scan?)", f"Give one 3D {role} image: one echo, or the echoes combined "
                             f"into one {role} image (e.g. by the scanner's or a QSM pipeline's echo combination)")
        raise file_error(path, f"{role} image has shape {shape}: {volumes} volumes, not one",
                         "Extract the single 3D volume to use (e.g. with fslroi or nibabel).")
    if min(shape[:3]) < 1:
        raise file_error(path, f"{role} image is empty (shape {shape})", "Re-export the image.")
    return shape[:3]  # type: ignore[return-value]


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


