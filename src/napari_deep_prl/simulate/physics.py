"""Image formation: susceptibility -> field -> filtered phase, and the MP2RAGE-like T1 image.

Phase sign convention: **paramagnetic = dark**. The phase written is
``phase = -2 pi gamma_bar B0 TE * delta_B / B0``, so where a paramagnetic source raises the
local field (inside a vein parallel to B0, along the equator of a paramagnetic shell seen in an
axial slice) the phase is negative, as on most scanners' (left-handed) phase images used in the
PRL literature. Loaders offer ``flip_phase`` for data with the opposite convention.

The field is the macroscopic dipole field with the Lorentz-sphere correction, computed in
k-space with the kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` (``b`` the B0 direction, which may be
tilted). A smooth background field (air-tissue interfaces) is added, then removed imperfectly by
a Gaussian high-pass filter normalised inside the brain — which, as on real filtered phase,
also attenuates large homogeneous lesions and leaves residuals near the brain surface.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import fft

from napari_deep_prl.simulate.anatomy import MAGNITUDE, OUTSIDE, T1_VALUE, WM, Anatomy
from napari_deep_prl.simulate.geometry import grid_axes, separable_linear, smooth_noise

_WORKERS = min(4, os.cpu_count() or 1)


def kspace_grid(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]
                ) -> list[np.ndarray]:
    """Broadcastable spatial frequencies (cycles/mm) matching ``scipy.fft.rfftn``'s layout."""
    ks = []
    for ax in range(3):
        freq = (fft.rfftfreq if ax == 2 else fft.fftfreq)(shape[ax], d=voxel_size[ax])
        view = [1, 1, 1]
        view[ax] = freq.size
        ks.append(freq.astype(np.float32).reshape(view))
    return ks


def dipole_kernel(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                  b0_direction: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """The unit dipole kernel in (half) k-space, ``D(0) = 0`` (no mean field offset)."""
    kx, ky, kz = kspace_grid(shape, voxel_size)
    b = np.asarray(b0_direction, np.float32)
    b = b / np.linalg.norm(b)
    k2 = kx ** 2 + ky ** 2 + kz ** 2
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.float32(1 / 3) - kb ** 2 / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32)


def gaussian_transfer(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                      sigma_mm: float) -> np.ndarray:
    """k-space transfer function of a Gaussian blur of ``sigma_mm``."""
    kx, ky, kz = kspace_grid(shape, voxel_size)
    return np.exp(np.float32(-2 * np.pi ** 2 * sigma_mm ** 2) * (kx ** 2 + ky ** 2 + kz ** 2))


def field_ppm(chi: np.ndarray, voxel_size: tuple[float, float, float],
              b0_direction: tuple[float, float, float] = (0.0, 0.0, 1.0),
              psf_sigma_mm: float = 0.0) -> np.ndarray:
    """Relative field offset (ppm) of a susceptibility map (ppm), optionally blurred by the PSF."""
    spectrum = fft.rfftn(chi.astype(np.float32, copy=False), workers=_WORKERS)
    spectrum *= dipole_kernel(chi.shape, voxel_size, b0_direction)
    if psf_sigma_mm > 0:
        spectrum *= gaussian_transfer(chi.shape, voxel_size, psf_sigma_mm)
    return fft.irfftn(spectrum, s=chi.shape, workers=_WORKERS).astype(np.float32)


def highpass(phase: np.ndarray, mask: np.ndarray, voxel_size: tuple[float, float, float],
             sigma_mm: float) -> np.ndarray:
    """Gaussian high-pass inside ``mask``: phase minus its mask-normalised local mean."""
    transfer = gaussian_transfer(phase.shape, voxel_size, sigma_mm)
    m = mask.astype(np.float32)

    def blur(volume: np.ndarray) -> np.ndarray:
        spectrum = fft.rfftn(volume, workers=_WORKERS)
        spectrum *= transfer
        return fft.irfftn(spectrum, s=volume.shape, workers=_WORKERS)

    local_mean = blur(phase * m) / np.maximum(blur(m), 1e-3)
    return np.where(mask, phase - local_mean, 0.0).astype(np.float32)


def background_field(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                     amplitude_rad: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth background phase: a random low-order polynomial plus air-cavity bumps at the base.

    It is smooth, so it is evaluated on a 4x coarser grid and interpolated.
    """
    step = 4
    coarse = tuple(n // step + 2 for n in shape)
    x, y, z = grid_axes(coarse, tuple(step * v for v in voxel_size))
    half = np.array(coarse) * step * np.array(voxel_size) / 2
    xn, yn, zn = x / half[0], y / half[1], z / half[2]
    c = rng.standard_normal(9)
    poly = (c[0] * xn + c[1] * yn + c[2] * zn + c[3] * xn * yn + c[4] * yn * zn + c[5] * xn * zn
            + c[6] * xn ** 2 + c[7] * yn ** 2 + c[8] * zn ** 2)
    bumps = np.zeros(coarse, np.float32)
    for _ in range(rng.integers(1, 4)):  # sinuses / mastoids: below and in front of the brain
        centre = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.9), rng.uniform(-1.1, -0.8)])
        width = rng.uniform(0.25, 0.4)
        bumps += rng.choice([-1, 1]) * 2.0 * np.exp(
            -((xn - centre[0]) ** 2 + (yn - centre[1]) ** 2 + (zn - centre[2]) ** 2) / width ** 2)
    total = (amplitude_rad * (poly / 3.0 + bumps)).astype(np.float32)
    offset = (np.array(coarse) - 1) / 2 - (np.array(shape) - 1) / (2 * step)
    return separable_linear(total, [offset[ax] + np.arange(shape[ax], dtype=np.float32) / step
                                     for ax in range(3)])


def phase_noise(magnitude: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Phase error of complex Gaussian noise on a signal of the given magnitude (wrap-free)."""
    noise = sigma * rng.standard_normal((2, *magnitude.shape), dtype=np.float32)
    return np.arctan2(noise[1], np.maximum(magnitude, 0.05) + noise[0]).astype(np.float32)


def magnitude_image(anatomy: Anatomy) -> np.ndarray:
    """T2*-weighted magnitude: tissue values, darkened by venous blood (sets local phase noise)."""
    lut = np.zeros(max(MAGNITUDE) + 1, np.float32)
    for cls, value in MAGNITUDE.items():
        lut[cls] = value
    return lut[anatomy.tissue] * (1.0 - 0.7 * anatomy.vein_fraction)


def mp2rage_image(anatomy: Anatomy, t1_hypo: np.ndarray, bias: float, noise: float,
                  rng: np.random.Generator) -> np.ndarray:
    """MP2RAGE-UNI-like image: WM bright, GM darker, CSF dark, lesions hypointense, noisy air.

    The UNI image has a residual smooth bias (B1+ inhomogeneity) and the characteristic
    salt-and-pepper background outside the head.
    """
    lut = np.zeros(max(T1_VALUE) + 1, np.float32)
    for cls, value in T1_VALUE.items():
        lut[cls] = value
    shape, vox = anatomy.shape, anatomy.voxel_size
    image = lut[anatomy.tissue] * (1.0 - t1_hypo)
    image *= 1.0 + bias * smooth_noise(shape, vox, 40.0, rng)
    image = fft.irfftn(fft.rfftn(image, workers=_WORKERS)
                       * gaussian_transfer(shape, vox, 0.35 * min(vox)),
                       s=shape, workers=_WORKERS).astype(np.float32)
    image += noise * T1_VALUE[WM] * rng.standard_normal(shape, dtype=np.float32)
    air = anatomy.tissue == OUTSIDE
    image[air] = rng.beta(0.4, 0.6, int(air.sum())).astype(np.float32)
    return np.clip(image, 0.0, 1.0)
