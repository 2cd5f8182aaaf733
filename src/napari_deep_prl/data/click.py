"""A lesion outlined from a click: quick scoring of a subject that has no lesion mask.

The clinician clicks on a lesion (a world coordinate in mm); the lesion is outlined locally from
the subject's structural images, where a white-matter lesion is hypointense on T1 (MP2RAGE,
T1w) and hyperintense on FLAIR:

1. a window of :data:`RADIUS_MM` around the click is looked at; its white matter is the
   brightest tissue on T1 (within :data:`WM_SHARE` of the :data:`T1_WM_PERCENTILE` th
   percentile; with FLAIR alone, the whole window), and each image's white-matter level the
   median there;
2. each structural image's *lesion contrast* is how far a voxel departs from that white matter
   (``1 - I / WM`` on T1, ``I / WM - 1`` on FLAIR), averaged over the images the subject has,
   after a light smoothing (:data:`SMOOTH_MM`) against noise;
3. the seed is the voxel of most contrast within :data:`SEED_MM` of the click (a click a little
   off the lesion's centre still finds it); it needs at least :data:`MIN_CONTRAST` on each image;
4. the outline is every voxel of the window whose contrast on each image reaches half the
   seed's (:data:`EDGE_LEVEL`, a half-maximum edge, like a rater's eye) and stays below
   :data:`CEILING` times it (cerebrospinal fluid is far darker on T1 than a lesion), connected to
   the seed, holes filled.

Limits: the outline follows intensity only, so a lesion touching grey matter or another lesion
(both also dark on T1) can take them in, and a faint lesion (below :data:`MIN_CONTRAST`) is
refused; an outline that reaches the window's edge is refused as a leak. The user is shown the
outline to accept or correct before it is scored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_deep_prl.base.errors import InputError, describe, file_error
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.data.images import Subject, SubjectPaths

#: The window around a click the lesion is looked for in (mm): larger than most WM lesions.
RADIUS_MM = 15.0
#: How far from the click the seed (the voxel of most lesion contrast) may be (mm).
SEED_MM = 2.5
#: The least lesion contrast at the seed (a fraction of white matter's intensity).
MIN_CONTRAST = 0.1
#: The lesion's edge: the share of the seed's contrast a voxel needs (half the maximum, as a
#: rater's eye draws an edge).
EDGE_LEVEL = 0.5
#: A voxel departing from white matter more than this many times the seed does is not the lesion
#: (on T1, cerebrospinal fluid is far darker than a lesion).
CEILING = 1.5
#: Smoothing of the structural images before outlining (Gaussian sigma, mm).
SMOOTH_MM = 0.5
#: White matter on a T1 image: this percentile of the window (WM is the brightest tissue).
T1_WM_PERCENTILE = 90.0
#: White matter in the window: the voxels at least this share of that percentile on T1; each
#: image's white-matter level is their median.
WM_SHARE = 0.95
#: Which way a lesion departs from white matter on each structural contrast (+1 brighter).
LESION_SIGN = {"mp2rage": -1.0, "t1w": -1.0, "flair": 1.0}


def click_voxel(subject: Subject, point_mm: Sequence[float]) -> tuple[int, int, int]:
    """The voxel of ``subject`` a world coordinate (mm, the affine's space) falls in; an
    InputError when it is outside the image."""
    point = np.asarray(point_mm, dtype=float)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError(f"subject {subject.subject}: a click is three finite world coordinates in mm "
                         f"(x, y, z), not {list(point_mm)}.")
    voxel = np.rint(np.linalg.solve(subject.affine, np.append(point, 1.0))[:3]).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= subject.shape):
        raise InputError(f"subject {subject.subject}: the click at {_mm(point)} mm is outside the image "
                         f"(voxel {tuple(int(v) for v in voxel)} of a {subject.shape} grid). Click inside the brain, "
                         "in the images' world coordinates (mm, as the viewer shows them).")
    return tuple(int(v) for v in voxel)  # type: ignore[return-value]


def outline_click(subject: Subject, point_mm: Sequence[float], *, radius_mm: float = RADIUS_MM,
                  min_contrast: float = MIN_CONTRAST) -> np.ndarray:
    """The lesion under a click as a boolean mask on the subject's grid (see the module doc).

    A click on a lesion of ``subject.mask`` gives that lesion as it is. InputError for a click
    outside the image or the brain, or where nothing stands out from white matter.
    """
    voxel = click_voxel(subject, point_mm)
    labels = subject.labels
    if labels[voxel] > 0:
        return labels == labels[voxel]
    where = f"subject {subject.subject}: the click at {_mm(point_mm)} mm"
    if subject.susceptibility == "phase" and not np.any(_ball(subject, voxel, 1.5, subject.images["phase"]) != 0):
        raise InputError(f"{where} is outside the brain (the phase is masked to zero there). Click on a lesion "
                         "inside the brain.")
    window = _window(subject, voxel, radius_mm)
    maps = _lesion_contrast(subject, window)
    contrast = maps.mean(axis=0)
    centre = tuple(v - s.start for v, s in zip(voxel, window))
    near = _ball_mask(contrast.shape, centre, SEED_MM, subject.zooms)
    seed = np.unravel_index(np.argmax(np.where(near, contrast, -np.inf)), contrast.shape)
    peak = float(maps[(slice(None), *seed)].min())
    if not peak >= min_contrast:
        raise InputError(f"{where} is on no lesion: nothing within {SEED_MM:g} mm departs from the local white "
                         f"matter by {min_contrast:.0%} on each of {', '.join(subject.structural)} (the most "
                         f"does by {peak:.0%}). "
                         "Click on the lesion's centre, or paint its outline by hand.")
    inside = _ball_mask(contrast.shape, centre, radius_mm, subject.zooms)
    region = _grow(maps, seed, inside)
    if region is None:
        raise InputError(f"{where} gives an outline that reaches {radius_mm:g} mm from it: no lesion edge stands "
                         "out there (grey matter or a confluent area). Click on the lesion's centre, or "
                         "paint its outline by hand.")
    out = np.zeros(subject.shape, dtype=bool)
    out[window] = region
    return out


def mask_from_clicks(subject: Subject, points_mm: Sequence[Sequence[float]], **options: float) -> np.ndarray:
    """An instance mask (int32, lesion ``i`` numbered ``i`` in click order) of the lesions
    outlined from ``points_mm`` (:func:`outline_click`); clicks on one lesion give it once."""
    if not points_mm:
        raise InputError(f"subject {subject.subject}: no click given. Give each lesion's position (--at X,Y,Z).")
    mask = np.zeros(subject.shape, dtype=np.int32)
    for point in points_mm:
        region = outline_click(subject, point, **options) & (mask == 0)
        if region.any():
            mask[region] = mask.max() + 1
    return mask


def load_unmasked(images: Mapping[str, str | Path], *, subject: str | None = None,
                  prl_mask: str | Path | None = None, flip_phase: bool = False, extra: bool = False) -> Subject:
    """A subject that has no lesion mask, its lesions to be clicked: ``images`` (by contrast: a
    susceptibility image and one or more structural ones) read, checked and put on the
    subject's reference grid as for any subject (:meth:`SubjectPaths.load`, ``flip_phase`` and
    ``extra`` as there), with an empty lesion mask."""
    susceptibility = next((c for c in SUSCEPTIBILITY if c in images), None)
    if susceptibility is None or not any(c in images for c in STRUCTURAL):
        raise InputError(f"subject {subject or '?'} has {', '.join(images) or 'no images'}: clicking lesions needs a "
                         f"susceptibility image ({' or '.join(SUSCEPTIBILITY)}) and one or more structural ones "
                         f"({', '.join(STRUCTURAL)}), the lesion being outlined from them.")
    try:
        reference = nib.load(images[susceptibility])
    except Exception as err:  # nibabel raises many types for unreadable files
        raise file_error(images[susceptibility], f"cannot be read as a NIfTI image ({describe(err)})",
                         "Check that it is a .nii/.nii.gz file and re-export it if it is damaged.") from err
    with tempfile.TemporaryDirectory(prefix="deep-prl-click-") as folder:
        # an empty lesion mask on the susceptibility image's grid: the images are read as for any subject (onto its
        # reference grid, where the clicks are outlined)
        empty = Path(folder, "empty_mask.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(reference.shape[:3], np.uint8), reference.affine), empty)
        return SubjectPaths.from_files(mask=empty, prl_mask=prl_mask, subject=subject,
                                       **images).load(flip_phase=flip_phase, extra=extra)


def _grow(maps: np.ndarray, seed: tuple[int, ...], inside: np.ndarray) -> np.ndarray | None:
    """The voxels connected to ``seed`` whose contrast on every image lies between
    :data:`EDGE_LEVEL` and :data:`CEILING` times the seed's, holes filled; ``None`` when they
    reach the window's edge (a leak)."""
    at_seed = maps[(slice(None), *seed)][:, None, None, None]
    grown, _ = ndimage.label(inside & np.all((maps >= EDGE_LEVEL * at_seed) & (maps <= CEILING * at_seed), axis=0))
    region = ndimage.binary_fill_holes(grown == grown[seed])
    return None if np.any(region & ~ndimage.binary_erosion(inside, border_value=0)) else region


def _lesion_contrast(subject: Subject, window: tuple[slice, ...]) -> np.ndarray:
    """Each structural image's lesion contrast in ``window`` (see the module doc), stacked."""
    sigma = [SMOOTH_MM / z for z in subject.zooms]
    images = {name: ndimage.gaussian_filter(subject.images[name][window].astype(np.float32), sigma)
              for name in subject.structural}
    t1 = next((images[name] for name in images if LESION_SIGN[name] < 0), None)
    # white matter: the brightest tissue on T1; without a T1, the window as a whole
    wm = t1 >= WM_SHARE * np.percentile(t1, T1_WM_PERCENTILE) if t1 is not None else slice(None)
    maps = []
    for name, image in images.items():
        level = float(np.median(image[wm]))
        if level <= 0:
            raise InputError(f"subject {subject.subject}: the {name} image is empty around the click. Click inside "
                             "the brain.")
        maps.append(LESION_SIGN[name] * (image / level - 1.0))
    return np.stack(maps)


def _window(subject: Subject, voxel: tuple[int, int, int], radius_mm: float) -> tuple[slice, ...]:
    reach = [int(np.ceil(radius_mm / z)) + 1 for z in subject.zooms]
    return tuple(slice(max(v - r, 0), min(v + r + 1, n)) for v, r, n in zip(voxel, reach, subject.shape))


def _ball(subject: Subject, voxel: tuple[int, int, int], radius_mm: float, image: np.ndarray) -> np.ndarray:
    window = _window(subject, voxel, radius_mm)
    centre = tuple(v - s.start for v, s in zip(voxel, window))
    return image[window][_ball_mask(image[window].shape, centre, radius_mm, subject.zooms)]


def _ball_mask(shape: tuple[int, ...], centre: tuple[int, ...], radius_mm: float,
               zooms: Sequence[float]) -> np.ndarray:
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((a - c) * z) ** 2 for a, c, z in zip(axes, centre, zooms)) <= radius_mm ** 2


def _mm(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(p):g}" for p in point) + ")"
