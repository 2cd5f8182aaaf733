"""Putting a subject's images on one grid: grids, their overlap, and resampling by the affines.

A clinical site reconstructs each scan on its own grid (an SWI slab of 0.6 × 0.6 × 2 mm tilted
to the brain, a T1 at 1 mm isotropic, lesion masks on the FLAIR's or T1's grid), all
co-registered in world (scanner) space. A subject's images are put on its *reference grid* by
their affines, in memory; nothing is written. The reference is the susceptibility image's grid,
unless that grid is anisotropic and a structural image has a finer isotropic one
(:func:`default_reference`), or the manifest names another (see :mod:`napari_deep_prl.data.images`).

* Images are interpolated **linearly** (trilinear, :func:`resample_image`): it never overshoots,
  so no dark or bright band appears along a vein or a lesion's edge (a cubic spline rings there,
  and a ring along a lesion's edge is what a paramagnetic rim looks like), and it costs less
  than reading the images.
* Masks take the **nearest** voxel (:func:`resample_labels`): lesion ids are those of the mask
  on its own grid, and only the lesions' bounding box is resampled. A lesion smaller than the
  reference grid's voxels, or outside its field of view, can vanish, and a thin one can split:
  :func:`lesion_changes` finds both, and the loader reports them.
* Images that do not overlap in world space, or overlap too little (:data:`MIN_OVERLAP`), are not
  co-registered: :func:`check_overlap` refuses them naming both files and their extents in mm.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.masks import FULL_CONNECTIVITY, bounding_box

#: Largest difference (mm) between two affines of the same grid: images within it are on one
#: grid and are read as they are, without resampling.
AFFINE_TOLERANCE_MM = 1e-3
#: Least share of the smaller grid's volume that must lie inside the other grid.
MIN_OVERLAP = 0.5
#: Least share of a mask's lesions whose centre must lie inside the reference grid.
MIN_LESIONS_INSIDE = 0.5
#: Points per axis sampled to measure an overlap.
OVERLAP_SAMPLES = 24
#: A grid is anisotropic when its longest voxel side is at least this many times its shortest
#: (an SWI slab of 0.6 × 0.6 × 2 mm: 3.3; a research 3D EPI phase of 1 × 1 × 1.2 mm: 1.2).
ANISOTROPY = 2.0


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in world space: its shape and its voxel-to-world (mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of(cls, shape: tuple[int, ...], affine: np.ndarray) -> Grid:
        return cls(tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=np.float64))  # type: ignore[arg-type]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size (mm) along each array axis."""
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def volume_mm3(self) -> float:
        return float(np.prod(self.shape) * abs(np.linalg.det(self.affine[:3, :3])))

    def same_as(self, other: Grid) -> bool:
        """Whether the two are one grid: the same shape, affines within :data:`AFFINE_TOLERANCE_MM`."""
        return self.shape == other.shape and float(np.max(np.abs(self.affine - other.affine))) <= AFFINE_TOLERANCE_MM

    def to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates (mm) of voxel coordinates (N × 3)."""
        return np.asarray(index, float) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_index(self, world: np.ndarray) -> np.ndarray:
        """Voxel coordinates of world points (N × 3, mm)."""
        inverse = np.linalg.inv(self.affine)
        return np.asarray(world, float) @ inverse[:3, :3].T + inverse[:3, 3]

    def holds(self, index: np.ndarray) -> np.ndarray:
        """Which voxel coordinates (N × 3) lie inside the grid's field of view (voxels' outer faces)."""
        return np.all((index >= -0.5) & (index <= np.array(self.shape) - 0.5), axis=1)

    def extent_mm(self) -> np.ndarray:
        """The world box (3 × 2: min, max in mm) of the grid's field of view."""
        corners = np.array(np.meshgrid(*[(-0.5, s - 0.5) for s in self.shape], indexing="ij")).reshape(3, -1).T
        world = self.to_world(corners)
        return np.stack([world.min(axis=0), world.max(axis=0)], axis=1)

    def describe(self) -> str:
        """``shape (235, 296, 58), 0.6 × 0.6 × 2 mm, x -70.5 to 70.5, y ..., z ... mm``."""
        box = ", ".join(f"{axis} {lo:.1f} to {hi:.1f}" for axis, (lo, hi) in zip("xyz", self.extent_mm()))
        voxel = " × ".join(f"{z:.3g}" for z in self.zooms)
        return f"shape {self.shape}, {voxel} mm voxels, {box} mm"

    def lattice(self, n: int = OVERLAP_SAMPLES) -> np.ndarray:
        """Voxel coordinates (n³ × 3) of an even lattice filling the field of view."""
        axes = [(np.arange(n) + 0.5) / n * s - 0.5 for s in self.shape]
        return np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T


def anisotropic(grid: Grid) -> bool:
    """Whether the grid's longest voxel side is at least :data:`ANISOTROPY` times its shortest."""
    return max(grid.zooms) >= ANISOTROPY * min(grid.zooms)


def default_reference(susceptibility: Grid, structural: Mapping[str, Grid]) -> str | None:
    """The structural image whose grid is a subject's reference by default, or ``None`` for the
    susceptibility image's own grid.

    A patch is a fixed number of voxels: on an anisotropic susceptibility slab (0.6 × 0.6 × 2 mm)
    it spans a small extent in plane and sees a rim through thick slices, and lesions outgrow it.
    So when the susceptibility grid is :func:`anisotropic`, the reference is the structural
    image (in ``structural``'s order on a tie) whose grid is isotropic and whose longest voxel
    side is the shortest, if that is shorter than the susceptibility grid's longest side. A mask
    drawn on that grid then keeps every lesion (docs/benchmarks.md, "Protocols", compares both).
    """
    if not anisotropic(susceptibility):
        return None
    longest = {name: max(grid.zooms) for name, grid in structural.items()
               if not anisotropic(grid) and max(grid.zooms) < max(susceptibility.zooms)}
    return min(longest, key=longest.__getitem__) if longest else None


def overlap(a: Grid, b: Grid) -> float:
    """The share (0 to 1) of the smaller grid's field of view that lies inside the other's."""
    small, large = (a, b) if a.volume_mm3 <= b.volume_mm3 else (b, a)
    return float(large.holds(large.to_index(small.to_world(small.lattice()))).mean())


@dataclass(frozen=True)
class ImageGrid:
    """One image's own grid, as its file has it, and how it was put on the reference grid:
    ``resampling`` is ``"reference"`` (its grid is the reference grid), ``"none"`` (on the
    reference grid already: read as it is), ``"linear"`` (trilinear interpolation) or
    ``"nearest"`` (nearest neighbour, labels kept). :meth:`as_dict` is what outputs and
    checkpoints record."""

    file: Path
    grid: Grid
    resampling: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: ``file``, ``shape``, ``affine`` (4 × 4, mm), ``voxel_mm``, ``resampling``."""
        return {"file": str(self.file), "shape": list(self.grid.shape),
                "affine": [[float(v) for v in row] for row in self.grid.affine],
                "voxel_mm": [round(z, 6) for z in self.grid.zooms], "resampling": self.resampling}


#: How images and masks are put on the reference grid (:func:`resample_image`, :func:`resample_labels`).
INTERPOLATION = {"images": "linear", "masks": "nearest"}


def grids_record(subjects: Iterable[tuple[str | None, Mapping[str, ImageGrid]]]) -> dict[str, object]:
    """What a model records of the grids its training subjects came on, from each subject's
    reference role and :class:`ImageGrid` by image: how many subjects took each image's grid as
    the reference, and per image how it came onto it (the resampling kinds seen) and its median
    voxel size (mm); with the interpolation used (:data:`INTERPOLATION`). Subjects made in memory
    (no grids) count for nothing."""
    references: Counter[str] = Counter()
    kinds: dict[str, set[str]] = {}
    zooms: dict[str, list[tuple[float, ...]]] = {}
    for reference, grids in subjects:
        if reference is None or not grids:
            continue
        references[reference] += 1
        for role, record in grids.items():
            kinds.setdefault(role, set()).add(record.resampling)
            zooms.setdefault(role, []).append(record.grid.zooms)
    return {"reference": dict(references), "interpolation": dict(INTERPOLATION),
            "images": {role: {"resampling": sorted(kinds[role]),
                              "voxel_mm": [round(float(z), 3) for z in np.median(zooms[role], axis=0)]}
                       for role in kinds}}


def check_overlap(reference: Grid, reference_file: Path, grid: Grid, file: Path, role: str) -> None:
    """Refuse an image whose grid overlaps the reference grid by less than :data:`MIN_OVERLAP`."""
    shared = overlap(reference, grid)
    if shared >= MIN_OVERLAP:
        return
    raise InputError(
        f"{file}: the {role} image and the reference image {reference_file} "
        + ("do not overlap in world space" if shared == 0 else
           f"overlap by only {shared:.0%} of the smaller one in world space")
        + f" ({role}: {grid.describe()}; reference: {reference.describe()}). A subject's images must be "
        "co-registered (one scanner session, or registered beforehand): register them first (e.g. ANTs' "
        "antsRegistration or FSL's flirt), then give the registered images (docs/data.md, 'Images on their "
        "own grids').")


def check_lesions_inside(labels: np.ndarray, grid: Grid, file: Path, reference: Grid, reference_file: Path) -> None:
    """Refuse a mask most of whose lesions (by their centres) lie outside the reference grid."""
    ids, centres = lesion_centres(labels)
    if ids.size == 0:
        return
    outside = ~reference.holds(reference.to_index(grid.to_world(centres)))
    if outside.mean() <= 1 - MIN_LESIONS_INSIDE:
        return
    raise InputError(
        f"{file}: {int(outside.sum())} of the mask's {ids.size} lesions lie outside the reference image "
        f"{reference_file} (mask: {grid.describe()}; reference: {reference.describe()}): the mask and the "
        "images are not co-registered. Register them first (the mask on the grid of the image it was drawn "
        "on), then give the registered files (docs/data.md, 'Images on their own grids').")


def lesions_outside(labels: np.ndarray, target: Grid, source: Grid) -> list[int]:
    """The ids of the lesions (``labels`` on ``target``) with voxels beyond ``source``'s outer
    voxel centres, where :func:`resample_image` of a ``source`` image reads 0."""
    index = np.argwhere(labels > 0)
    if index.size == 0:
        return []
    reach = source.to_index(target.to_world(index))
    beyond = ~np.all((reach >= 0) & (reach <= np.array(source.shape) - 1), axis=1)
    return [int(i) for i in np.unique(labels[tuple(index[beyond].T)])]


def lesion_centres(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion ids of a label volume and their centres of mass (N × 3 voxel coordinates)."""
    box = bounding_box(labels > 0)
    if box is None:
        return np.zeros(0, np.int64), np.zeros((0, 3))
    inside = labels[box]
    ids = np.unique(inside[inside > 0])
    centres = np.array(ndimage.center_of_mass(inside > 0, inside, ids)).reshape(-1, 3)
    return ids, centres + np.array([s.start for s in box])


def resample_image(data: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """``data`` (on ``source``) on the ``target`` grid by trilinear interpolation, float32; 0
    outside ``source``'s field of view (beyond its outer voxels' centres)."""
    return _sample(np.asarray(data, np.float32), np.linalg.inv(source.affine) @ target.affine, target.shape,
                   linear=True)


def resample_labels(labels: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """``labels`` (integers, on ``source``) on the ``target`` grid by nearest neighbour, labels
    kept; only the target box that the labels' bounding box maps to is computed."""
    out = np.zeros(target.shape, labels.dtype)
    box = bounding_box(labels > 0)
    if box is None:
        return out
    corners = np.array(np.meshgrid(*[(s.start - 0.5, s.stop - 0.5) for s in box], indexing="ij")).reshape(3, -1).T
    reach = target.to_index(source.to_world(corners))
    low = np.clip(np.floor(reach.min(axis=0)).astype(int), 0, target.shape)
    high = np.clip(np.ceil(reach.max(axis=0)).astype(int) + 1, 0, target.shape)
    if np.any(high <= low):
        return out
    mapping = np.linalg.inv(source.affine) @ target.affine
    mapping[:3, 3] += mapping[:3, :3] @ low  # the box's first voxel is index 0
    out[tuple(slice(lo, hi) for lo, hi in zip(low, high))] = _sample(labels, mapping, tuple(high - low), linear=False)
    return out


#: Points sampled at a time: a few MB of coordinates and weights, which stay in cache.
_CHUNK_POINTS = 2**18


def _sample(volume: np.ndarray, mapping: np.ndarray, shape: tuple[int, ...], *, linear: bool) -> np.ndarray:
    """``volume`` sampled at ``mapping`` @ index (voxel coordinates of ``volume``) for every index
    of a grid of ``shape``: trilinear (``linear``) or nearest; 0 outside the volume.

    Numpy, a slab of output rows at a time: the affine map's coordinates are a plane plus a
    step per row, and each corner a ``take`` from the flattened volume (twice as fast as
    ``scipy.ndimage.affine_transform``, whose general spline code handles any order).
    """
    if volume.flags.f_contiguous and not volume.flags.c_contiguous:
        # As NIfTI files store them: sample the C-ordered view with every axis reversed, into an
        # output likewise reversed, so that the output's last axis walks the source's memory.
        reverse = [2, 1, 0, 3]
        return _sample(volume.T, mapping[reverse][:, reverse], shape[::-1], linear=linear).T
    n = np.array(volume.shape)
    if linear:  # a face of zeros beyond the last voxels: the upper corners need no bounds check
        padded = np.zeros(tuple(n + 1), volume.dtype)
        padded[: n[0], : n[1], : n[2]] = volume
        volume = padded
    volume = np.ascontiguousarray(volume)
    flat = volume.ravel()
    strides = np.array(volume.strides) // volume.itemsize
    along = mapping[:3, :3].astype(np.float32)
    plane = [along[d, 1] * np.arange(shape[1], dtype=np.float32)[:, None]
             + along[d, 2] * np.arange(shape[2], dtype=np.float32)[None, :] + np.float32(mapping[d, 3])
             for d in range(3)]
    out = np.zeros(shape, volume.dtype)
    rows = max(1, _CHUNK_POINTS // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], rows):
        step = np.arange(start, min(start + rows, shape[0]), dtype=np.float32)[:, None, None]
        coords = [plane[d][None] + along[d, 0] * step for d in range(3)]
        if not linear:
            coords = [np.floor(c + np.float32(0.5)) for c in coords]
        inside = np.ones(coords[0].shape, bool)
        for d in range(3):
            inside &= (coords[d] >= 0) & (coords[d] <= n[d] - 1)
        corner = [np.floor(c) for c in coords] if linear else coords
        index = np.where(inside, sum(corner[d].astype(np.int64) * strides[d] for d in range(3)), 0)
        if linear:
            w = [c - f for c, f in zip(coords, corner)]
            s0, s1, s2 = strides
            v = [flat.take(index + offset) for offset in (0, s2, s1, s1 + s2, s0, s0 + s2, s0 + s1, s0 + s1 + s2)]
            c00, c01 = v[0] + w[2] * (v[1] - v[0]), v[2] + w[2] * (v[3] - v[2])
            c10, c11 = v[4] + w[2] * (v[5] - v[4]), v[6] + w[2] * (v[7] - v[6])
            c0, c1 = c00 + w[1] * (c01 - c00), c10 + w[1] * (c11 - c10)
            values = c0 + w[0] * (c1 - c0)
        else:
            values = flat.take(index)
        out[start:start + len(step)] = np.where(inside, values, 0)
    return out


@dataclass(frozen=True)
class LesionChanges:
    """Lesions that resampling a mask onto the reference grid lost (``vanished``: smaller than
    its voxels, or outside its field of view) or broke into pieces (``split``), by id."""

    vanished: tuple[int, ...] = ()
    split: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.vanished or self.split)

    def describe(self) -> str:
        """``lost lesion(s) 4, 9 and split lesion(s) 12``."""
        parts = [f"{what} lesion(s) {', '.join(map(str, ids))}"
                 for what, ids in (("lost", self.vanished), ("split", self.split)) if ids]
        return " and ".join(parts)


def lesion_changes(source: np.ndarray, target: np.ndarray) -> LesionChanges:
    """Which lesions of ``source`` (labels) are missing from ``target`` (the same labels
    resampled), and which fall into more 26-connected pieces there than they had."""
    before = _pieces(source)
    after = _pieces(target)
    vanished = tuple(int(i) for i in sorted(set(before) - set(after)))
    split = tuple(int(i) for i in sorted(after) if after[i] > before.get(i, 1))
    return LesionChanges(vanished, split)


def _pieces(labels: np.ndarray) -> dict[int, int]:
    """Each lesion id's count of 26-connected pieces."""
    box = bounding_box(labels > 0)
    if box is None:
        return {}
    inside = labels[box]
    pieces = {}
    for index, where in enumerate(ndimage.find_objects(inside)):
        if where is not None:
            pieces[index + 1] = int(ndimage.label(inside[where] == index + 1, structure=FULL_CONNECTIVITY)[1])
    return pieces
