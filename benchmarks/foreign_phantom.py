"""A foreign phantom: PRL cohorts made without ``napari_deep_prl.simulate``, to check generality.

The method must learn PRLs, not one generator's quirks, so this generator differs from the
package's simulator wherever a design choice was free:

- anatomy: an ellipsoidal brain with blobby grey-matter islands in white matter (no head,
  no ventricles); anisotropic voxels (0.9 × 0.9 × 1.2 mm), a 112 × 112 × 80 grid;
- rims: a Gaussian susceptibility profile centred on the lesion edge (half of it outside the
  lesion mask), full or covering a cap of 45–90 % of the surface (package: a band inside the
  lesion);
- veins: straight cylinders anywhere, grazing a lesion or through its centre;
- phase: B0 tilted up to 20° off the voxel z axis, 3 or 7 T, TE 12–28 ms, **paramagnetic
  bright** (the package's convention is dark), background field removed by a normalised
  Gaussian high-pass (homodyne-like) that leaves bright and dark bands at the brain's edge;
- T1: uint16 scanner-like values (WM 3000, lesions 1300–2500), multiplicative and additive
  noise; the lesion mask holds instance labels (int16).

Hard negatives as in real data: homogeneously paramagnetic lesions, veins at the edge or the
centre. About 11 % of lesions are PRLs. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

SHAPE = (112, 112, 80)
VOXEL_MM = np.array([0.9, 0.9, 1.2])
GAMMA_HZ_PER_T = 42.58e6


def _smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), sigma)
    return field / field.std()


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _dipole_field(chi: np.ndarray, b0: np.ndarray) -> np.ndarray:
    """Field offset (ppm) of a susceptibility map (ppm), B0 along the unit vector ``b0``."""
    k = np.meshgrid(*[np.fft.fftfreq(n, d) for n, d in zip(SHAPE, VOXEL_MM)], indexing="ij")
    k2 = sum(ki ** 2 for ki in k)
    k2[0, 0, 0] = 1.0
    kernel = 1 / 3 - sum(ki * bi for ki, bi in zip(k, b0)) ** 2 / k2
    kernel[0, 0, 0] = 0.0
    return np.real(np.fft.ifftn(np.fft.fftn(chi) * kernel)).astype(np.float32)


def _cylinder(grid: list[np.ndarray], point: np.ndarray, direction: np.ndarray, radius: float) -> np.ndarray:
    rel = np.stack([g - p for g, p in zip(grid, point)])
    along = np.tensordot(direction, rel, 1)
    return ((rel ** 2).sum(0) - along ** 2 < radius ** 2) & (np.abs(along) < 25)


def foreign_subject(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Phase (rad), T1 (uint16), lesion instance labels (int16), PRL mask (uint8)."""
    grid = np.meshgrid(*[np.arange(n) * d for n, d in zip(SHAPE, VOXEL_MM)], indexing="ij")
    centre = np.array(SHAPE) * VOXEL_MM / 2
    radius = np.sqrt(sum(((g - c) / (0.46 * n * d)) ** 2 for g, c, n, d in zip(grid, centre, SHAPE, VOXEL_MM)))
    brain = radius + 0.08 * _smooth_noise(rng, 6) < 1
    wm = brain & (radius + 0.12 * _smooth_noise(rng, 5) < 0.8)
    chi = np.where(wm, -0.02, 0.015).astype(np.float32) * brain
    t1 = np.where(brain, np.where(wm, 3000.0, 2100.0), 500.0)
    labels = np.zeros(SHAPE, np.int16)
    prl = np.zeros(SHAPE, np.uint8)
    sites = np.argwhere(ndi.binary_erosion(wm, iterations=6)) * VOXEL_MM
    wanted, placed = rng.integers(18, 36), 0
    for _ in range(200):
        if placed == wanted:
            break
        c = sites[rng.integers(len(sites))]
        radii = rng.uniform(1.8, 6.5) * rng.uniform(0.7, 1.3, 3)
        box = tuple(slice(max(0, int((c[a] - 12) / VOXEL_MM[a])), min(SHAPE[a], int((c[a] + 12) / VOXEL_MM[a]) + 1))
                    for a in range(3))
        rel = [g[box] - c[a] for a, g in enumerate(grid)]
        axes, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        turned = [sum(axes[a, b] * rel[b] for b in range(3)) for a in range(3)]
        rho = np.sqrt(sum((turned[a] / radii[a]) ** 2 for a in range(3)))
        rho *= 1 + 0.12 * rng.standard_normal() * np.cos(3 * np.arctan2(turned[1], turned[0]))
        inside = rho < 1
        if inside.sum() < 8 or (labels[box][ndi.binary_dilation(inside, iterations=3)] > 0).any():
            continue
        placed += 1
        labels[box][inside] = placed
        t1[box][inside] = rng.uniform(1300, 2500)
        kind = rng.random()
        if kind < 0.11:  # PRL
            edge_mm = (rho - 1) * radii.mean()
            shell = np.exp(-0.5 * (edge_mm / rng.uniform(0.6, 1.2)) ** 2)
            axis = _unit(rng)
            cosine = sum(axis[a] * rel[a] for a in range(3)) / np.maximum(np.sqrt(sum(r ** 2 for r in rel)), 1e-6)
            coverage = rng.choice([1.0, rng.uniform(0.45, 0.9)])
            chi[box] += rng.uniform(0.08, 0.18) * shell * (cosine > 1 - 2 * coverage)
            prl[box][inside] = 1
        elif kind < 0.27:  # homogeneously paramagnetic
            chi[box][inside] += rng.uniform(0.02, 0.055)
        elif kind < 0.42:  # a vein grazing the edge
            direction = _unit(rng)
            side = np.cross(direction, rng.standard_normal(3))
            point = c + side / np.linalg.norm(side) * (radii.mean() + 0.6)
            chi[_cylinder(grid, point, direction, rng.uniform(0.5, 0.9))] += rng.uniform(0.3, 0.45)
        elif kind < 0.52:  # a central vein
            chi[_cylinder(grid, c, _unit(rng), rng.uniform(0.4, 0.7))] += rng.uniform(0.3, 0.45)
    for _ in range(rng.integers(15, 30)):
        vein = _cylinder(grid, sites[rng.integers(len(sites))], _unit(rng), rng.uniform(0.4, 1.0))
        chi[vein & brain] += rng.uniform(0.3, 0.45)

    tilt, azimuth = np.radians(rng.uniform(0, 20)), rng.uniform(0, 2 * np.pi)
    b0 = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    rad_per_ppm = 2 * np.pi * GAMMA_HZ_PER_T * rng.choice([3.0, 7.0]) * rng.uniform(0.012, 0.028) * 1e-6
    background = 2.0 * _smooth_noise(rng, 20) + 0.02 * (grid[0] - centre[0])
    total = (rad_per_ppm * _dipole_field(chi * brain, b0) + background) * brain
    weight = ndi.gaussian_filter(brain.astype(np.float32), 5)
    phase = (total - ndi.gaussian_filter(total, 5) / np.maximum(weight, 1e-3)) * brain
    phase += rng.uniform(0.015, 0.05) * rng.standard_normal(SHAPE) * brain
    t1 = t1 * (1 + 0.04 * rng.standard_normal(SHAPE)) + 30 * rng.standard_normal(SHAPE)
    return phase.astype(np.float32), np.clip(t1, 0, 4095).astype(np.uint16), labels, prl


def write_foreign_cohort(folder: Path, subjects: int, seed: int) -> Path:
    """Write ``subjects`` foreign subjects and their manifest (with ``prl_mask``); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([*VOXEL_MM, 1.0])
    rows = ["subject,phase,mp2rage,mask,prl_mask"]
    for i in range(subjects):
        sid = f"foreign{seed:02d}x{i:03d}"
        names = [f"{sid}_{part}.nii.gz" for part in ("phase", "t1", "lesions", "prl")]
        for name, data in zip(names, foreign_subject(rng)):
            nib.save(nib.Nifti1Image(data, affine), folder / name)
        rows.append(",".join([sid, *names]))
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest
