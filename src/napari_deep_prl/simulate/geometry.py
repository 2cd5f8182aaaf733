"""Shared geometry for the phantom: smooth random fields, grid coordinates, tubes and boxes.

Everything works in millimetres on a voxel grid whose axes are (x, y, z) with ``voxel_size``
spacing and the grid centre at the origin, so anatomy and lesion sizes are physical and do not
change with resolution.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import ndimage

Vec3 = tuple[float, float, float]


def grid_axes(shape: tuple[int, int, int], voxel_size: Vec3,
              start: tuple[int, int, int] = (0, 0, 0),
              full_shape: tuple[int, int, int] | None = None) -> list[np.ndarray]:
    """Open-grid (broadcastable) mm coordinates of voxel centres, origin at the full grid's centre.

    ``start`` and ``full_shape`` let a sub-box share the coordinates of the full volume.
    """
    full = full_shape or shape
    axes = []
    for ax in range(3):
        idx = np.arange(start[ax], start[ax] + shape[ax], dtype=np.float32)
        coord = (idx - (full[ax] - 1) / 2.0) * np.float32(voxel_size[ax])
        view = [1, 1, 1]
        view[ax] = shape[ax]
        axes.append(coord.reshape(view))
    return axes


def smooth_noise(shape: tuple[int, ...], voxel_size: Vec3, scale_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance random field with correlation length ``scale_mm`` (float32).

    Drawn on a coarse grid (spacing ``scale_mm / 2``), smoothed there and interpolated up, so a
    full-brain field costs a fraction of a second instead of a large Gaussian filter.
    """
    step = scale_mm / 2.0
    coarse = tuple(max(4, int(np.ceil(n * v / step)) + 3) for n, v in zip(shape, voxel_size))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.5,
                                    mode="wrap")
    field /= field.std() + 1e-12
    # Map fine voxel centres into coarse coordinates (coarse voxel 1 = fine origin).
    coords = [1.0 + (np.arange(n, dtype=np.float32) * v) / step for n, v in zip(shape, voxel_size)]
    return separable_linear(field, coords)


def separable_linear(field: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Trilinear interpolation on a separable grid, one axis at a time (cheap, float32)."""
    out = field
    for ax, c in enumerate(coords):
        lo = np.clip(np.floor(c).astype(np.intp), 0, out.shape[ax] - 2)
        frac = (c - lo).astype(np.float32)
        shape = [1] * out.ndim
        shape[ax] = len(c)
        frac = frac.reshape(shape)
        out = np.take(out, lo, axis=ax) * (1 - frac) + np.take(out, lo + 1, axis=ax) * frac
    return out.astype(np.float32, copy=False)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def random_unit(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit 3-vector."""
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def box_around(centre_mm: np.ndarray, half_mm: float, shape: tuple[int, int, int],
               voxel_size: Vec3) -> tuple[slice, slice, slice] | None:
    """Index box covering ``centre_mm ± half_mm`` clipped to the grid (``None`` if outside)."""
    sl = []
    for ax in range(3):
        c = centre_mm[ax] / voxel_size[ax] + (shape[ax] - 1) / 2.0
        h = half_mm / voxel_size[ax]
        lo, hi = max(0, int(np.floor(c - h))), min(shape[ax], int(np.ceil(c + h)) + 1)
        if hi <= lo:
            return None
        sl.append(slice(lo, hi))
    return tuple(sl)


def box_axes(box: tuple[slice, slice, slice], full_shape: tuple[int, int, int],
             voxel_size: Vec3) -> list[np.ndarray]:
    """mm coordinates (open grid) of the voxels of ``box`` in the full grid's frame."""
    shape = tuple(s.stop - s.start for s in box)
    return grid_axes(shape, voxel_size, tuple(s.start for s in box), full_shape)


def draw_tube(fraction: np.ndarray, points_mm: np.ndarray, radius_mm: float,
              voxel_size: Vec3) -> None:
    """Paint a polyline tube into ``fraction`` (in place) as a partial-volume fraction in [0, 1].

    A tube wider than a voxel gets a linear ramp of one voxel width around its wall. A thinner
    one (most veins: 0.2-0.8 mm across) is spread as a cone one voxel in radius whose integral
    equals the true cross-section, so its total susceptibility (what the field depends on) stays
    right. Overlapping tubes keep the maximum.
    """
    vox = float(np.mean(voxel_size))
    thin = radius_mm < vox / 2
    for a, b in pairwise(points_mm):
        mid, half = (a + b) / 2, np.linalg.norm(b - a) / 2 + radius_mm + vox
        box = box_around(mid, half, fraction.shape, voxel_size)
        if box is None:
            continue
        x, y, z = box_axes(box, fraction.shape, voxel_size)
        seg = b - a
        length2 = float(seg @ seg) or 1e-12
        t = ((x - a[0]) * seg[0] + (y - a[1]) * seg[1] + (z - a[2]) * seg[2]) / length2
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt((x - a[0] - t * seg[0]) ** 2 + (y - a[1] - t * seg[1]) ** 2
                    + (z - a[2] - t * seg[2]) ** 2)
        if thin:
            pv = (3 * (radius_mm / vox) ** 2 * np.clip(1 - d / vox, 0.0, 1.0)).astype(np.float32)
        else:
            pv = np.clip((radius_mm - d) / vox + 0.5, 0.0, 1.0).astype(np.float32)
        np.maximum(fraction[box], pv, out=fraction[box])


def wandering_line(start: np.ndarray, direction: np.ndarray, length_mm: float, step_mm: float,
                   wiggle: float, rng: np.random.Generator) -> np.ndarray:
    """Points of a gently curving path (persistent random walk) — the course of a vein."""
    n = max(2, int(np.ceil(length_mm / step_mm)) + 1)
    pts = np.empty((n, 3))
    pts[0] = start
    d = direction / np.linalg.norm(direction)
    for i in range(1, n):
        d = d + wiggle * rng.standard_normal(3)
        d /= np.linalg.norm(d)
        pts[i] = pts[i - 1] + step_mm * d
    return pts
