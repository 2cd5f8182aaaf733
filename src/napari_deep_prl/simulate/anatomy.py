"""A head-shaped brain phantom: tissue classes, deep grey matter and veins.

The brain is an ellipsoid narrowed at the front and the bottom, with a randomly wobbling
surface, a folded cortex, sulcal and interhemispheric CSF, lateral ventricles of varying size
(atrophy) and iron-rich deep grey nuclei. Veins are partial-volume tubes: thin medullary veins
running outward from the ventricles in every orientation, and larger cortical veins on the
surface. Sizes are in millimetres and scale with the field of view, so a small test grid is a
small brain, not a cropped one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_deep_prl.simulate.geometry import (
    draw_tube,
    grid_axes,
    random_unit,
    smooth_noise,
    wandering_line,
)
from napari_deep_prl.simulate.params import SubjectParams

# Tissue classes of ``Anatomy.tissue``.
OUTSIDE, CSF, GM, WM, DEEP_GM, SKULL, SCALP = range(7)

#: Susceptibility (ppm, relative to CSF) of each tissue class; deep GM gets extra iron per nucleus.
CHI_PPM = {OUTSIDE: 0.0, CSF: 0.0, GM: 0.01, WM: -0.025, DEEP_GM: 0.04, SKULL: 0.0, SCALP: 0.0}
#: MP2RAGE (UNI-like) value of each class; air is drawn as the UNI's salt-and-pepper noise.
T1_VALUE = {OUTSIDE: 0.0, CSF: 0.18, GM: 0.56, WM: 0.80, DEEP_GM: 0.66, SKULL: 0.08, SCALP: 0.62}
#: T2*-weighted magnitude at a typical TE (sets the local phase noise; the magnitude image).
MAGNITUDE = {OUTSIDE: 0.0, CSF: 1.0, GM: 0.9, WM: 0.8, DEEP_GM: 0.55, SKULL: 0.05, SCALP: 0.7}
#: FLAIR-like value of each class: CSF suppressed, GM brighter than WM, iron-rich deep GM a
#: little darker than cortex, scalp fat bright.
FLAIR_VALUE = {OUTSIDE: 0.0, CSF: 0.06, GM: 0.62, WM: 0.45, DEEP_GM: 0.52, SKULL: 0.05, SCALP: 0.7}
#: MPRAGE-like T1-weighted value of each class: less grey-white contrast than the MP2RAGE UNI
#: (GM/WM 0.68), CSF dark, scalp fat bright, and air dark (a noise floor, not the UNI's
#: salt-and-pepper).
T1W_VALUE = {OUTSIDE: 0.0, CSF: 0.22, GM: 0.60, WM: 0.88, DEEP_GM: 0.72, SKULL: 0.12, SCALP: 0.95}

#: Venous blood susceptibility range (ppm): deoxyhaemoglobin at ~60 % oxygenation.
VEIN_CHI_PPM = (0.30, 0.45)

#: Subsampling of the distance maps used to place lesions (exact distances are not needed).
COARSE = 2


@dataclass
class Anatomy:
    """Tissue of one phantom on its grid (all arrays share ``shape``)."""

    tissue: np.ndarray          # uint8 class per voxel (constants above)
    chi: np.ndarray             # float32 susceptibility (ppm), veins not yet included
    vein_fraction: np.ndarray   # float32 partial-volume fraction of venous blood
    brain: np.ndarray           # bool brain mask (where phase is defined)
    wm_depth_mm: np.ndarray     # float32 distance (mm) into white matter, on the COARSE grid
    ventricle_mm: np.ndarray    # float32 distance (mm) to the ventricles, on the COARSE grid
    voxel_size: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tissue.shape


def make_anatomy(params: SubjectParams, rng: np.random.Generator) -> Anatomy:
    """Build the tissue classes, their susceptibility and the global venous tree."""
    shape, vox = params.shape, params.voxel_size
    x, y, z = grid_axes(shape, vox)
    fov = np.array(params.fov_mm)
    semi = fov * np.array([0.39, 0.41, 0.36]) * rng.uniform(0.94, 1.02)
    centre = np.array([0.0, rng.uniform(-0.02, 0.02) * fov[1], 0.04 * fov[2]])
    xn, yn, zn = (x - centre[0]) / semi[0], (y - centre[1]) / semi[1], (z - centre[2]) / semi[2]
    # Narrower at the front and bottom than an ellipsoid: a head, not a ball.
    narrowing = (1.0 + 0.10 * yn.clip(0, None) + 0.08 * (-zn).clip(0, None))
    radius = np.sqrt((xn * narrowing) ** 2 + yn ** 2 + zn ** 2)
    radius = radius + 0.035 * smooth_noise(shape, vox, 30.0, rng)

    # Sulci are sheets where a smooth random field crosses zero, down to ~12 mm below the
    # surface; cortical grey matter lines the surface and both banks of every sulcus.
    depth_mm = (1.0 - radius) * float(semi.mean())
    folds = smooth_noise(shape, vox, 9.0, rng)
    tissue = np.full(shape, OUTSIDE, np.uint8)
    tissue[radius < 1.16] = SCALP
    tissue[radius < 1.10] = SKULL
    tissue[radius < 1.04] = CSF
    brain = radius < 1.0
    tissue[brain] = WM
    sulcal_depth = 12.0 + 3.0 * folds
    tissue[brain & ((depth_mm < 2.8) | ((np.abs(folds) < 0.5) & (depth_mm < sulcal_depth)))] = GM
    tissue[brain & (np.abs(folds) < 0.1) & (depth_mm < sulcal_depth - 2.5)] = CSF
    fissure = brain & (np.abs(x - centre[0]) < 0.9 * max(vox[0], 1.0)) & (zn > -0.25)
    tissue[fissure] = CSF

    chi_extra = _deep_grey(tissue, (xn, yn, zn), rng)
    ventricles = _ventricles(shape, vox, (xn, yn, zn), semi, rng)
    tissue[ventricles] = CSF

    chi = np.zeros(shape, np.float32)
    for cls, value in CHI_PPM.items():
        chi[tissue == cls] = value
    chi += chi_extra
    chi[tissue == WM] += 0.004 * smooth_noise(shape, vox, 20.0, rng)[tissue == WM]

    coarse_vox = tuple(COARSE * v for v in vox)
    vent_dist = ndimage.distance_transform_edt(~_any_in_cell(ventricles), sampling=coarse_vox)
    wm_depth = ndimage.distance_transform_edt(~_any_in_cell(tissue != WM), sampling=coarse_vox)
    anatomy = Anatomy(tissue, chi, np.zeros(shape, np.float32), brain,
                      wm_depth.astype(np.float32), vent_dist.astype(np.float32), vox)
    _veins(anatomy, ventricles, semi, centre, rng)
    return anatomy


def _any_in_cell(mask: np.ndarray) -> np.ndarray:
    """Max-pool a mask over COARSE^3 cells, so a one-voxel sheet (the fissure) is not skipped."""
    shape = tuple(n // COARSE for n in mask.shape)
    pooled = np.zeros(shape, bool)
    for offset in np.ndindex(*(COARSE,) * 3):
        pooled |= mask[tuple(slice(o, o + COARSE * n, COARSE) for o, n in zip(offset, shape))]
    return pooled


def _deep_grey(tissue: np.ndarray, norm: tuple[np.ndarray, ...],
               rng: np.random.Generator) -> np.ndarray:
    """Thalami, caudate heads and lentiform nuclei (the latter iron-rich): paramagnetic GM."""
    xn, yn, zn = norm
    extra = np.zeros(tissue.shape, np.float32)
    nuclei = [  # centre (normalised), semi-axes (normalised), extra chi range
        ((0.14, -0.12, -0.05), (0.11, 0.14, 0.16), (0.00, 0.03)),   # thalamus
        ((0.12, 0.22, 0.08), (0.06, 0.10, 0.12), (0.02, 0.05)),     # caudate head
        ((0.32, 0.08, -0.05), (0.07, 0.18, 0.17), (0.05, 0.12)),    # lentiform nucleus
    ]
    for (cx, cy, cz), (ax, ay, az), (lo, hi) in nuclei:
        for side in (-1, 1):
            inside = (((xn - side * cx) / ax) ** 2 + ((yn - cy) / ay) ** 2
                      + ((zn - cz) / az) ** 2) < 1.0
            inside &= tissue == WM
            tissue[inside] = DEEP_GM
            extra[inside] = rng.uniform(lo, hi)
    return extra


def _ventricles(shape: tuple[int, int, int], vox: tuple[float, float, float],
                norm: tuple[np.ndarray, ...], semi: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Two banana-shaped lateral ventricles; their size varies (atrophy is common in MS)."""
    xn, yn, zn = norm
    scale = rng.uniform(0.8, 1.6)
    wobble = 0.25 * smooth_noise(shape, vox, 12.0, rng)
    mask = np.zeros(shape, bool)
    for side in (-1, 1):
        cx = side * rng.uniform(0.08, 0.12)
        bend = 0.18 * yn ** 2  # the body arches up, the horns dip down
        r2 = (((xn - cx) / (0.055 * scale)) ** 2 + (yn / (0.42 + 0.03 * scale)) ** 2
              + ((zn - 0.12 + bend) / (0.10 * scale)) ** 2)
        mask |= r2 + wobble < 1.0
    return mask


def _veins(anatomy: Anatomy, ventricles: np.ndarray, semi: np.ndarray, centre: np.ndarray,
           rng: np.random.Generator) -> None:
    """Medullary veins (thin, radial from the ventricles, every orientation) and cortical veins."""
    vox = anatomy.voxel_size
    shape = np.array(anatomy.shape)
    vent_idx = np.argwhere(ventricles)
    volume_scale = float(np.prod(semi) / (62.0 * 79.0 * 58.0))
    if len(vent_idx):
        for _ in range(int(70 * volume_scale) + 4):
            start = (vent_idx[rng.integers(len(vent_idx))] - (shape - 1) / 2) * vox
            outward = start - centre
            outward = outward / (np.linalg.norm(outward) + 1e-9) + 0.6 * random_unit(rng)
            pts = wandering_line(start, outward, rng.uniform(15, 45) * volume_scale ** (1 / 3),
                                 2.0, 0.25, rng)
            draw_tube(anatomy.vein_fraction, pts, rng.uniform(0.2, 0.45), vox)
    for _ in range(int(25 * volume_scale) + 2):
        direction = random_unit(rng)
        on_surface = centre + semi * 0.97 * direction
        tangent = np.cross(direction, random_unit(rng))
        pts = wandering_line(on_surface, tangent, rng.uniform(20, 60) * volume_scale ** (1 / 3),
                             2.5, 0.15, rng)
        draw_tube(anatomy.vein_fraction, pts, rng.uniform(0.5, 1.2), vox)
    anatomy.vein_fraction[~anatomy.brain & (anatomy.tissue != CSF)] = 0.0
