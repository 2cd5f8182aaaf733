"""Planes of a lesion's neighbourhood as the review draws them (numpy only, no Qt).

A subject's arrays keep their file's voxel order; the review shows them in anatomical
orientation whatever that order is: each volume is viewed (no copy) with its axes reordered and
flipped to RAS by the affine, then a plane is cut with anterior or superior up and the subject's
right on the right (neurological convention, as napari shows world coordinates). Outlines are
segments on the borders *between* voxels, so the voxels just outside a lesion — where a rim is —
stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

#: Plane name -> (fixed axis, row axis, column axis) in RAS voxel axes; rows run top to bottom
#: from anterior/superior, columns left to right with increasing x (or y on sagittal planes).
PLANES = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}
#: Letters drawn at the (left, right, top, bottom) edges of a plane.
EDGE_LETTERS = {
    "axial": ("L", "R", "A", "P"),
    "coronal": ("L", "R", "S", "I"),
    "sagittal": ("P", "A", "S", "I"),
}
#: How contrasts are named on screen.
TITLES = {"phase": "phase", "mp2rage": "MP2RAGE", "flair": "FLAIR", "t1w": "T1-w",
          "magnitude": "magnitude", "swi": "SWI", "qsm": "QSM"}
#: Contrasts centred on zero (paramagnetic dark): a symmetric grey window.
SIGNED = frozenset({"phase", "qsm"})
#: Percentile of |value| giving a signed contrast's symmetric window (veins saturate).
SIGNED_PERCENTILE = 99.5
#: Percentiles of the non-zero voxels giving other contrasts' windows.
ROBUST_PERCENTILES = (1.0, 99.5)


def title(contrast: str) -> str:
    return TITLES.get(contrast, contrast)


def default_window(contrast: str, volume: np.ndarray) -> tuple[float, float]:
    """A grey window from every 8th voxel: symmetric around 0 for signed contrasts, robust
    percentiles of the non-zero voxels otherwise."""
    sample = volume[::2, ::2, ::2]
    values = sample[sample != 0]
    if not values.size:
        return (-1.0, 1.0) if contrast in SIGNED else (0.0, 1.0)
    if contrast in SIGNED:
        half = float(np.percentile(np.abs(values), SIGNED_PERCENTILE))
        return (-half, half) if half > 0 else (-1.0, 1.0)
    low, high = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)


@dataclass(frozen=True)
class Orientation:
    """How a volume of ``shape`` with ``affine`` maps onto RAS voxel axes."""

    ornt: np.ndarray
    shape: tuple[int, int, int]
    zooms: np.ndarray

    @classmethod
    def of(cls, shape: tuple[int, ...], affine: np.ndarray) -> Orientation:
        ornt = io_orientation(affine)
        zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        ras_zooms = np.empty(3)
        ras_zooms[ornt[:, 0].astype(int)] = zooms
        return cls(ornt, tuple(int(s) for s in shape[:3]), ras_zooms)  # type: ignore[arg-type]

    def volume(self, array: np.ndarray) -> np.ndarray:
        """``array`` with its axes in RAS order (a view)."""
        return apply_orientation(array, self.ornt)

    def voxel(self, ijk: tuple[float, float, float]) -> np.ndarray:
        """A voxel position of the file's array as a position in the RAS-ordered array."""
        out = np.empty(3)
        for axis, (target, flip) in enumerate(self.ornt):
            value = float(ijk[axis])
            out[int(target)] = self.shape[axis] - 1 - value if flip < 0 else value
        return out


def half_sizes(plane: str, fov_mm: float, zooms: np.ndarray) -> tuple[int, int]:
    """Half the crop (rows, columns) in voxels for a square field of view of ``fov_mm``."""
    _, row, col = PLANES[plane]
    return (max(2, int(np.ceil(fov_mm / 2 / zooms[row]))), max(2, int(np.ceil(fov_mm / 2 / zooms[col]))))


def crop(volume: np.ndarray, plane: str, index: int, centre: np.ndarray,
         half: tuple[int, int]) -> np.ndarray:
    """The plane ``index`` along ``plane``'s fixed axis around ``centre`` (RAS voxels), as
    displayed (row 0 at the top); zero outside the volume."""
    fixed, row, col = PLANES[plane]
    out = np.zeros((2 * half[0] + 1, 2 * half[1] + 1), dtype=volume.dtype)
    if not 0 <= index < volume.shape[fixed]:
        return out
    taken = [slice(None)] * 3
    taken[fixed] = index
    sheet = volume[tuple(taken)]
    if row > col:
        sheet = sheet.T  # rows first
    starts = (int(round(centre[row])) - half[0], int(round(centre[col])) - half[1])
    src, dst = [], []
    for start, size, n in zip(starts, out.shape, sheet.shape):
        lo, hi = max(start, 0), min(start + size, n)
        if hi <= lo:
            return out[::-1]
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = sheet[tuple(src)]
    return out[::-1]


def grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``image`` windowed to 0-255 (uint8, C-contiguous: ready for a QImage)."""
    low, high = window
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / max(high - low, 1e-12))
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8))


def outline_segments(mask: np.ndarray) -> np.ndarray:
    """Segments ``(x0, y0, x1, y1)`` in voxel units along the borders between voxels inside and
    outside ``mask`` (a displayed plane): ``(c, r)`` is the top-left corner of voxel ``[r, c]``."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(mask[:, 1:] != mask[:, :-1])
    vertical = np.stack([cols + 1, rows, cols + 1, rows + 1], axis=1)
    rows, cols = np.nonzero(mask[1:, :] != mask[:-1, :])
    horizontal = np.stack([cols, rows + 1, cols + 1, rows + 1], axis=1)
    return np.concatenate([vertical, horizontal]).astype(np.float64)


def strip_indices(box: tuple[slice, ...], plane: str, current: int, count: int,
                  size: int) -> list[int]:
    """Up to ``count`` consecutive slice indices along ``plane``'s fixed axis covering the
    lesion's extent ``box`` (RAS) and one slice beyond each side, centred on ``current`` when the
    lesion has more slices than fit."""
    fixed = PLANES[plane][0]
    first, last = box[fixed].start - 1, box[fixed].stop  # one beyond each side
    first, last = max(first, 0), min(last, size - 1)
    if last - first + 1 > count:
        first = min(max(current - count // 2, first), last - count + 1)
        last = first + count - 1
    return list(range(first, last + 1))
