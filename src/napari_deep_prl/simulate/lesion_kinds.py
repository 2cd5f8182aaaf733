"""White-matter lesions: their kinds, shapes, placement and what each kind does to tissue.

Kinds (the ``kind`` column of the truth table):

* ``full_rim`` / ``partial_rim`` — PRLs: a paramagnetic band (iron-laden microglia) along the
  inner edge, covering the whole edge or a cap of 40-100 % of it; the core is iron-depleted.
* ``plain`` — no iron: slightly less diamagnetic than normal white matter (myelin loss).
* ``vein_adjacent`` — plain lesion with a vein running along its edge: a dark curve at the
  edge that a rater (or a first-order statistic) may take for a rim.
* ``homogeneous`` — paramagnetic throughout (e.g. an early lesion); after high-pass filtering and
  with its own dipole field spilling outward it can look rim-like.
* ``central_vein`` — plain lesion centred on a vein (the central vein sign).
* ``confluent`` — two or three blobs that touch: one connected component.

A PRL may also be drawn touching a plain lesion of its own (``confluent_prl_rate``): two drawn
lesions, one component of the binary mask, only the PRL's voxels in the PRL mask.

PRLs are drawn larger than the average lesion (as observed clinically), but the hard negatives
(``vein_adjacent``, ``homogeneous``) share the PRL size distribution, so size alone does not
give PRLs away. Shapes are ellipsoids, irregular blobs (an ellipsoid whose surface is pushed in
and out by smooth noise, at the drawn volume) or periventricular "Dawson's fingers" elongated
away from the ventricles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_deep_prl.simulate.anatomy import COARSE, CSF, OUTSIDE, SCALP, SKULL, Anatomy
from napari_deep_prl.simulate.geometry import (
    box_around,
    box_axes,
    draw_tube,
    random_rotation,
    random_unit,
    smooth_noise,
    wandering_line,
)

KINDS = ("full_rim", "partial_rim", "plain", "vein_adjacent", "homogeneous", "central_vein",
         "confluent")
PRL_KINDS = frozenset({"full_rim", "partial_rim"})
#: Relative frequency of each non-PRL kind.
NON_PRL_MIX = {"plain": 0.36, "central_vein": 0.22, "vein_adjacent": 0.16, "homogeneous": 0.14,
               "confluent": 0.12}
SHAPES = ("ellipsoid", "blob", "elongated")
#: Chance that a lesion of any kind has a vein grazing its edge (``vein_adjacent`` always has).
INCIDENTAL_VEIN = 0.15
#: Smallest lesion kept (voxels): segmentation masks rarely hold smaller components.
MIN_VOXELS = 3


@dataclass
class LesionSpec:
    """Everything drawn for one lesion before it is painted into the volumes."""

    index: int
    kind: str
    shape: str
    centre_mm: np.ndarray
    radii_mm: np.ndarray
    rotation: np.ndarray
    chi_core_ppm: float
    chi_rim_ppm: float = 0.0
    rim_width_mm: float = 0.0
    rim_coverage: float = 0.0
    rim_axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    t1_hypo: float = 0.3
    irregularity: float = 0.0
    central_vein: bool = False
    adjacent_vein: bool = False
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def prl(self) -> bool:
        return self.kind in PRL_KINDS

    @property
    def extent_mm(self) -> float:
        """Radius of a ball holding the lesion and all its parts."""
        reach = [float(self.radii_mm.max()) * (1 + self.irregularity)]
        reach += [np.linalg.norm(c - self.centre_mm) + r.max() for c, r, _ in self.parts]
        return max(reach)


@dataclass
class LesionPaint:
    """What the lesions add to a subject, on the full grid."""

    owner: np.ndarray      # int32: index + 1 of the spec that painted each voxel, 0 elsewhere
    prl: np.ndarray        # bool: voxels of PRL lesions
    chi: np.ndarray        # float32 susceptibility change (ppm)
    t1_hypo: np.ndarray    # float32 fractional MP2RAGE drop


def draw_specs(anatomy: Anatomy, n_lesions: int, prl_rate: float, rng: np.random.Generator,
               confluent_prl_rate: float = 0.0) -> list[LesionSpec]:
    """Choose kinds, sizes, shapes and non-overlapping white-matter positions for the lesions;
    a share ``confluent_prl_rate`` of the PRLs gets a plain lesion touching it (not counted in
    ``n_lesions``)."""
    specs: list[LesionSpec] = []
    non_prl = list(NON_PRL_MIX)
    weights = np.array(list(NON_PRL_MIX.values()))
    cells = np.argwhere(anatomy.wm_depth_mm > 0)
    if not len(cells):
        return specs
    for _ in range(n_lesions):
        if rng.random() < prl_rate:
            kind = "full_rim" if rng.random() < 0.5 else "partial_rim"
        else:
            kind = non_prl[rng.choice(len(non_prl), p=weights / weights.sum())]
        spec = _draw_one(len(specs), kind, anatomy, cells, specs, rng)
        if spec is not None:
            specs.append(spec)
            if spec.prl and confluent_prl_rate and rng.random() < confluent_prl_rate:
                neighbour = _touching(spec, len(specs), specs, rng)
                if neighbour is not None:
                    specs.append(neighbour)
    return specs


def _touching(host: LesionSpec, index: int, placed: list[LesionSpec],
              rng: np.random.Generator) -> LesionSpec | None:
    """A plain ellipsoid lesion overlapping ``host``'s edge (a neck between them), clear of the
    other lesions; ``None`` when it would come too close to one."""
    radii = max(_radius("plain", rng), 2.5) * rng.uniform(0.9, 1.2, 3)
    offset = random_unit(rng) * 0.95 * (host.radii_mm.mean() + radii.mean())
    spec = LesionSpec(index=index, kind="plain", shape="ellipsoid", centre_mm=host.centre_mm + offset,
                      radii_mm=radii, rotation=random_rotation(rng), chi_core_ppm=0.0)
    _draw_contrast(spec, rng)
    for other in placed:
        if other is not host and (np.linalg.norm(other.centre_mm - spec.centre_mm)
                                  <= other.extent_mm + spec.extent_mm + 2.5):
            return None
    return spec


def _radius(kind: str, rng: np.random.Generator) -> float:
    if kind in PRL_KINDS or kind in ("vein_adjacent", "homogeneous"):
        return float(np.clip(rng.lognormal(np.log(3.6), 0.35), 2.5, 9.0))
    return float(np.clip(rng.lognormal(np.log(2.3), 0.5), 0.8, 9.0))


def _draw_one(index: int, kind: str, anatomy: Anatomy, cells: np.ndarray,
              placed: list[LesionSpec], rng: np.random.Generator) -> LesionSpec | None:
    radius = _radius(kind, rng)
    shape = SHAPES[rng.choice(3, p=[0.35, 0.45, 0.20])]
    if shape == "elongated":
        radii = radius * np.array([rng.uniform(1.6, 2.6), 0.75, 0.75])
    else:
        radii = radius * rng.uniform(0.75, 1.25, 3)
    irregularity = rng.uniform(0.15, 0.35) if shape == "blob" else 0.0
    spec = LesionSpec(index=index, kind=kind, shape=shape, centre_mm=np.zeros(3), radii_mm=radii,
                      rotation=random_rotation(rng), chi_core_ppm=0.0, irregularity=irregularity)
    _draw_contrast(spec, rng)
    if kind == "confluent":
        for _ in range(rng.integers(1, 3)):
            r2 = _radius("plain", rng) * rng.uniform(0.8, 1.4, 3)
            offset = random_unit(rng) * 0.9 * (radii.mean() + r2.mean())
            spec.parts.append((offset, r2, random_rotation(rng)))
    centre = _place(spec, anatomy, cells, placed, rng)
    if centre is None:
        return None
    spec.centre_mm = centre
    spec.parts = [(centre + off, r, rot) for off, r, rot in spec.parts]
    return spec


def _draw_contrast(spec: LesionSpec, rng: np.random.Generator) -> None:
    """Susceptibility and T1 contrast by kind (ppm relative to normal white matter)."""
    kind = spec.kind
    spec.chi_core_ppm = float(rng.uniform(-0.004, 0.012))
    spec.t1_hypo = float(rng.uniform(0.08, 0.45))
    if kind in PRL_KINDS:
        spec.chi_core_ppm = float(rng.uniform(-0.008, 0.006))
        spec.chi_rim_ppm = float(rng.uniform(0.05, 0.12))
        spec.rim_width_mm = float(rng.uniform(1.0, 2.2))
        spec.rim_coverage = 1.0 if kind == "full_rim" else float(rng.uniform(0.4, 0.9))
        spec.rim_axis = random_unit(rng)
        spec.t1_hypo = float(rng.uniform(0.15, 0.5))
        spec.central_vein = bool(rng.random() < 0.3)
    elif kind == "homogeneous":
        spec.chi_core_ppm = float(rng.uniform(0.015, 0.06))
        spec.t1_hypo = float(rng.uniform(0.05, 0.35))
    elif kind == "central_vein":
        spec.central_vein = True
    elif kind == "vein_adjacent":
        spec.adjacent_vein = True
    # MS lesions are perivenular: any lesion, PRLs included, may have a vein passing its edge.
    spec.adjacent_vein = spec.adjacent_vein or bool(rng.random() < INCIDENTAL_VEIN)


def _place(spec: LesionSpec, anatomy: Anatomy, cells: np.ndarray, placed: list[LesionSpec],
           rng: np.random.Generator, tries: int = 300) -> np.ndarray | None:
    """A white-matter centre far enough from other lesions (elongated ones by the ventricles).

    ``cells`` are the white-matter cells of the coarse distance maps to draw from; all
    ``tries`` candidates are drawn and tested at once, the first acceptable one wins.
    """
    shape = np.array(anatomy.shape)
    vox = np.array(anatomy.voxel_size)
    short = float(spec.radii_mm.min())
    chosen = cells[rng.integers(len(cells), size=tries)]
    idx = np.minimum(chosen * COARSE + rng.integers(0, COARSE, (tries, 3)), shape - 1)
    depth = anatomy.wm_depth_mm[tuple(chosen.T)]
    if spec.shape == "elongated":
        vent = anatomy.ventricle_mm[tuple(chosen.T)]
        ok = (vent > short + 0.5) & (vent < short + 4.0) & (depth > 0.6 * short)
    else:
        ok = depth >= 0.8 * spec.radii_mm.max() + 0.5
    centres = (idx - (shape - 1) / 2) * vox
    if placed:
        others = np.array([o.centre_mm for o in placed])
        clearance = np.array([o.extent_mm for o in placed]) + spec.extent_mm + 2.5 * vox.max()
        gaps = np.sqrt(((centres[:, None, :] - others[None]) ** 2).sum(axis=2))
        ok &= (gaps > clearance).all(axis=1)
    if not ok.any():
        return None
    first = int(np.argmax(ok))
    if spec.shape == "elongated":
        spec.rotation = _align_x(_gradient(anatomy.ventricle_mm, chosen[first]), rng)
    return centres[first]


def _gradient(volume: np.ndarray, idx: np.ndarray) -> np.ndarray:
    g = np.zeros(3)
    for ax in range(3):
        hi, lo = idx.copy(), idx.copy()
        hi[ax] = min(hi[ax] + 1, volume.shape[ax] - 1)
        lo[ax] = max(lo[ax] - 1, 0)
        g[ax] = volume[tuple(hi)] - volume[tuple(lo)]
    return g if np.linalg.norm(g) > 0 else np.array([1.0, 0.0, 0.0])


def _align_x(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column (the lesion's long axis) is ``direction``."""
    a = direction / np.linalg.norm(direction)
    b = np.cross(a, random_unit(rng))
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], axis=1)


def paint_lesions(anatomy: Anatomy, specs: list[LesionSpec],
                  rng: np.random.Generator) -> LesionPaint:
    """Rasterise every lesion (mask, rim, contrast) and draw lesion-bound veins into the anatomy."""
    shape, vox = anatomy.shape, anatomy.voxel_size
    paint = LesionPaint(np.zeros(shape, np.int32), np.zeros(shape, bool),
                        np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    allowed = ~np.isin(anatomy.tissue, (OUTSIDE, CSF, SKULL, SCALP))
    for spec in specs:
        box = box_around(spec.centre_mm, spec.extent_mm + 3 * max(vox), shape, vox)
        x, y, z = box_axes(box, shape, vox)
        inside = _inside(spec, (x, y, z), rng) & allowed[box] & (paint.owner[box] == 0)
        inside = _largest_component(inside)
        if inside.sum() < MIN_VOXELS:
            continue
        depth = ndimage.distance_transform_edt(inside, sampling=vox).astype(np.float32)
        paint.owner[box][inside] = spec.index + 1
        paint.prl[box] |= inside & spec.prl
        chi = np.where(inside, np.float32(spec.chi_core_ppm), np.float32(0))
        if spec.prl:
            rim = inside & (depth <= spec.rim_width_mm + 0.5 * min(vox))
            rim &= _coverage(spec, (x, y, z), rng)
            chi[rim] += spec.chi_rim_ppm
        paint.chi[box] += chi
        hypo = spec.t1_hypo * (0.55 + 0.45 * np.clip(depth / 2.5, 0, 1))
        paint.t1_hypo[box] = np.where(inside, hypo, paint.t1_hypo[box])
        _lesion_veins(spec, anatomy, rng)
    return paint


def _inside(spec: LesionSpec, xyz: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """Implicit shape: union of (noise-perturbed) ellipsoids."""
    blobs = [(spec.centre_mm, spec.radii_mm, spec.rotation), *spec.parts]
    result = None
    for centre, radii, rot in blobs:
        d = [xyz[i] - np.float32(centre[i]) for i in range(3)]
        r2 = sum(((d[0] * rot[0, k] + d[1] * rot[1, k] + d[2] * rot[2, k]) / radii[k]) ** 2
                 for k in range(3))
        blob = r2 < 1.0
        if spec.irregularity and blob.any():
            box_shape = np.broadcast_shapes(*(a.shape for a in xyz))
            noise = smooth_noise(box_shape, _spacing(xyz), max(2.0, 0.9 * radii.mean()), rng)
            blob = _same_size(np.sqrt(r2) + spec.irregularity * noise, int(blob.sum()))
        result = blob if result is None else result | blob
    return result


def _same_size(radius: np.ndarray, n_voxels: int) -> np.ndarray:
    """The ``n_voxels`` voxels of smallest perturbed radius.

    The noise reshapes a blob but must not resize it: its correlation length is about the blob's
    size, so cutting at radius 1 would scale whole lesions (a drawn PRL could shrink to a handful
    of voxels, a plain lesion swell threefold).
    """
    flat = radius.ravel()
    cut = np.partition(flat, n_voxels - 1)[n_voxels - 1]
    return radius <= cut


def _spacing(xyz: tuple[np.ndarray, ...]) -> tuple[float, float, float]:
    return tuple(float(a.ravel()[1] - a.ravel()[0]) if a.size > 1 else 1.0 for a in xyz)


def _coverage(spec: LesionSpec, xyz: tuple[np.ndarray, ...], rng: np.random.Generator) -> np.ndarray:
    """Voxels in the cap (of area fraction ``rim_coverage``) around ``rim_axis``, ragged edge."""
    if spec.rim_coverage >= 1.0:
        return np.ones(np.broadcast_shapes(*(a.shape for a in xyz)), bool)
    d = [xyz[i] - np.float32(spec.centre_mm[i]) for i in range(3)]
    norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) + 1e-6
    cosine = sum(d[i] * np.float32(spec.rim_axis[i]) for i in range(3)) / norm
    ragged = 0.15 * smooth_noise(cosine.shape, _spacing(xyz), 3.0, rng)
    # On a sphere the cap {cos > t} covers a fraction (1 - t) / 2 of the surface.
    return cosine + ragged > 1.0 - 2.0 * spec.rim_coverage


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def _lesion_veins(spec: LesionSpec, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """A vein through the centre (central vein sign) or grazing the edge (a rim mimic)."""
    if spec.central_vein:
        axis = spec.rotation[:, 0] if spec.shape == "elongated" else random_unit(rng)
        half = spec.radii_mm.max() + rng.uniform(3.0, 10.0)
        pts = wandering_line(spec.centre_mm - half * axis, axis, 2 * half, 1.5, 0.05, rng)
        draw_tube(anatomy.vein_fraction, pts, rng.uniform(0.2, 0.45), anatomy.voxel_size)
    if spec.adjacent_vein:
        along = random_unit(rng)
        out = np.cross(along, random_unit(rng))
        out /= np.linalg.norm(out)
        local = spec.rotation.T @ out
        reach = 1.0 / np.linalg.norm(local / spec.radii_mm)  # ellipsoid radius along ``out``
        radius = rng.uniform(0.4, 0.9)
        touch = spec.centre_mm + out * (reach + rng.uniform(-0.5, 0.8) * radius)
        half = spec.radii_mm.max() + rng.uniform(4.0, 10.0)
        pts = wandering_line(touch - half * along, along, 2 * half, 1.5, 0.05, rng)
        draw_tube(anatomy.vein_fraction, pts, radius, anatomy.voxel_size)
