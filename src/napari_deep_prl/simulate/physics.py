"""Image formation: susceptibility -> field -> filtered phase, the MP2RAGE-like T1 image, the
FLAIR-like image and T2*-weighted magnitude; for a clinical site also an MPRAGE-like T1-weighted
image, a vendor-like (homodyne) filtered phase and a QSM reconstruction.

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

from napari_deep_prl.data.susceptibility import dipole_kernel, kspace_grid
from napari_deep_prl.simulate.anatomy import (
    FLAIR_VALUE,
    MAGNITUDE,
    OUTSIDE,
    T1_VALUE,
    T1W_VALUE,
    WM,
    Anatomy,
)
from napari_deep_prl.simulate.geometry import grid_axes, separable_linear, smooth_noise

_WORKERS = min(4, os.cpu_count() or 1)

#: Each lesion's FLAIR value as a multiple of white matter's, drawn per lesion.
FLAIR_LESION_GAIN = (1.6, 2.2)
#: Each lesion's T2*-weighted magnitude as a multiple of its tissue's (longer T2* where myelin is
#: lost), drawn per lesion, before its iron darkens it.
MAGNITUDE_LESION_GAIN = (1.05, 1.25)
#: Extra R2* (1/s) per ppm of paramagnetic susceptibility per tesla: the ratio of the post-mortem
#: R2*-iron and susceptibility-iron slopes of grey matter at 3 T (about 280 1/s per ppm), and
#: what makes the phantom's deep grey matter as dark as its magnitude table says.
R2STAR_PER_PPM_PER_T = 90.0
#: How much of a lesion's T1 drop (as the MP2RAGE UNI shows it) an MPRAGE shows: lesions are less
#: conspicuous on MPRAGE, whose T1 contrast is lower and carries the receive bias (Kober et al.,
#: Invest Radiol 2012, 47:346).
MPRAGE_LESION_CONTRAST = 0.75


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
    local_mean = filtered(phase * m, transfer) / np.maximum(filtered(m, transfer), 1e-3)
    return np.where(mask, phase - local_mean, 0.0).astype(np.float32)


def filtered(volume: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """``volume`` filtered by a k-space ``transfer`` function (e.g. :func:`gaussian_transfer`)."""
    spectrum = fft.rfftn(volume, workers=_WORKERS)
    spectrum *= transfer
    return fft.irfftn(spectrum, s=volume.shape, workers=_WORKERS)


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


def complex_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Real and imaginary parts (stacked on axis 0) of complex Gaussian noise of SD ``sigma``."""
    return sigma * rng.standard_normal((2, *shape), dtype=np.float32)


def phase_noise(magnitude: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Phase error of complex Gaussian noise on a signal of the given magnitude (wrap-free)."""
    noise = complex_noise(magnitude.shape, sigma, rng)
    return np.arctan2(noise[1], np.maximum(magnitude, 0.05) + noise[0]).astype(np.float32)


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The magnitude of ``image`` plus complex Gaussian noise: Rician, a noise floor in the air."""
    noise = complex_noise(image.shape, sigma, rng)
    return np.hypot(image + noise[0], noise[1]).astype(np.float32)


def tissue_values(anatomy: Anatomy, table: dict[int, float]) -> np.ndarray:
    """Each voxel's value from its tissue class (``table``: class -> value)."""
    lut = np.zeros(max(table) + 1, np.float32)
    for cls, value in table.items():
        lut[cls] = value
    return lut[anatomy.tissue]


def blurred(image: np.ndarray, voxel_size: tuple[float, float, float], sigma_mm: float) -> np.ndarray:
    """``image`` blurred by a Gaussian point-spread function of ``sigma_mm`` (float32)."""
    return filtered(image, gaussian_transfer(image.shape, voxel_size, sigma_mm)).astype(np.float32)


def magnitude_image(anatomy: Anatomy) -> np.ndarray:
    """T2*-weighted magnitude: tissue values, darkened by venous blood (sets local phase noise)."""
    return tissue_values(anatomy, MAGNITUDE) * (1.0 - 0.7 * anatomy.vein_fraction)


def t2star_magnitude(anatomy: Anatomy, owner: np.ndarray, lesion_chi: np.ndarray, *,
                     field_strength_t: float, te_ms: float, bias: float, noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """The T2*-weighted magnitude image of the phase's gradient echo (for display).

    :func:`magnitude_image` (veins dark, iron-rich deep grey matter dark) with the lesions: each
    a little brighter (myelin loss lengthens T2*), then darkened by its paramagnetic iron as
    ``exp(-TE R2*')`` with ``R2*' =`` :data:`R2STAR_PER_PPM_PER_T` ``x B0 x chi`` (so a PRL's rim,
    or a homogeneously paramagnetic lesion, is darker, more so at 7 T). ``owner`` numbers the
    lesions (0 outside), ``lesion_chi`` is their susceptibility change (ppm). A smooth receive
    bias, the phase's PSF and Rician noise of the phase's complex noise SD (``noise``).
    """
    gain = np.ones(int(owner.max()) + 1, np.float32)
    gain[1:] = rng.uniform(*MAGNITUDE_LESION_GAIN, len(gain) - 1)
    r2_extra = np.float32(R2STAR_PER_PPM_PER_T * field_strength_t) * np.maximum(lesion_chi, 0)
    image = magnitude_image(anatomy) * gain[owner] * np.exp(-r2_extra * np.float32(te_ms * 1e-3))
    image *= 1.0 + bias * smooth_noise(anatomy.shape, anatomy.voxel_size, 40.0, rng)
    return rician(blurred(image, anatomy.voxel_size, 0.4 * min(anatomy.voxel_size)), noise, rng)


def flair_image(anatomy: Anatomy, owner: np.ndarray, bias: float, noise: float,
                rng: np.random.Generator) -> np.ndarray:
    """A FLAIR-like image (for display): CSF suppressed (dark), WM mid-grey, GM brighter, lesions
    hyperintense.

    Each lesion (``owner`` numbers them, 0 outside) gets its own brightness, a multiple of white
    matter's drawn from :data:`FLAIR_LESION_GAIN`, whatever its kind: FLAIR is not
    susceptibility-weighted, so a PRL's rim does not show and PRLs look like other lesions. A
    smooth bias and Rician noise of SD ``noise`` relative to white matter, as the MP2RAGE's.
    """
    gain = np.zeros(int(owner.max()) + 1, np.float32)
    gain[1:] = rng.uniform(*FLAIR_LESION_GAIN, len(gain) - 1)
    image = np.where(owner > 0, np.float32(FLAIR_VALUE[WM]) * gain[owner], tissue_values(anatomy, FLAIR_VALUE))
    image *= 1.0 + bias * smooth_noise(anatomy.shape, anatomy.voxel_size, 40.0, rng)
    return rician(blurred(image, anatomy.voxel_size, 0.35 * min(anatomy.voxel_size)), noise * FLAIR_VALUE[WM], rng)


def mp2rage_image(anatomy: Anatomy, t1_hypo: np.ndarray, bias: float, noise: float,
                  rng: np.random.Generator) -> np.ndarray:
    """MP2RAGE-UNI-like image: WM bright, GM darker, CSF dark, lesions hypointense, noisy air.

    The UNI image has a residual smooth bias (B1+ inhomogeneity) and the characteristic
    salt-and-pepper background outside the head.
    """
    shape, vox = anatomy.shape, anatomy.voxel_size
    image = tissue_values(anatomy, T1_VALUE) * (1.0 - t1_hypo)
    image *= 1.0 + bias * smooth_noise(shape, vox, 40.0, rng)
    image = blurred(image, vox, 0.35 * min(vox))
    image += noise * T1_VALUE[WM] * rng.standard_normal(shape, dtype=np.float32)
    air = anatomy.tissue == OUTSIDE
    image[air] = rng.beta(0.4, 0.6, int(air.sum())).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def t1w_image(anatomy: Anatomy, t1_hypo: np.ndarray, bias: float, noise: float,
              rng: np.random.Generator) -> np.ndarray:
    """MPRAGE-like T1-weighted image: WM bright, GM darker, CSF dark, scalp fat bright, lesions
    hypointense (:data:`MPRAGE_LESION_CONTRAST` of their MP2RAGE drop), a receive-coil profile
    brighter towards the surface of the head (``2 x bias`` at the edge of the field of view) on
    top of a smooth bias, and Rician noise of SD ``noise`` relative to white matter (a dark noise
    floor in the air, not the UNI's salt-and-pepper).
    """
    shape, vox = anatomy.shape, anatomy.voxel_size
    image = tissue_values(anatomy, T1W_VALUE) * (1.0 - np.float32(MPRAGE_LESION_CONTRAST) * t1_hypo)
    half = [np.float32(n * v / 2) for n, v in zip(shape, vox)]
    radius2 = sum((axis / h) ** 2 for axis, h in zip(grid_axes(shape, vox), half))
    image *= (1.0 + np.float32(2.0 * bias) * radius2) * (1.0 + bias * smooth_noise(shape, vox, 40.0, rng))
    return rician(blurred(image, vox, 0.35 * min(vox)), noise * T1W_VALUE[WM], rng)


def homodyne_phase(signal: np.ndarray, voxel_size: tuple[float, float, float], sigma_mm: float) -> np.ndarray:
    """The vendor-like high-pass filtered phase of a complex image, as SWI reconstructions make it.

    ``angle(S conj(L))``, where ``L`` is ``S`` low-passed slice by slice (in-plane: array axes 0
    and 1) by a Hann window in k-space whose half-power frequency is that of a Gaussian
    high-pass of ``sigma_mm`` (5 mm: a window about 30 points wide on a 320-point, 192 mm matrix). Wraps of
    the raw phase go where the field varies slowly and stay where it varies fast (near air
    cavities); where there is no signal (air) the phase is noise. Odd in the phase: flipping the
    raw phase's sign flips the result exactly.
    """
    kx = fft.fftfreq(signal.shape[0], d=voxel_size[0]).astype(np.float32)[:, None]
    ky = fft.fftfreq(signal.shape[1], d=voxel_size[1]).astype(np.float32)[None, :]
    k, k_max = np.hypot(kx, ky), np.float32(0.375 / sigma_mm)
    window = np.where(k < k_max, 0.5 * (1.0 + np.cos(np.pi * k / k_max)), 0.0).astype(np.float32)
    low = fft.ifft2(fft.fft2(signal, axes=(0, 1), workers=_WORKERS) * window[:, :, None], axes=(0, 1),
                    workers=_WORKERS)
    return np.angle(signal * np.conj(low)).astype(np.float32)


def dipole_inversion(field: np.ndarray, voxel_size: tuple[float, float, float],
                     b0_direction: tuple[float, float, float], regularisation: float) -> np.ndarray:
    """Susceptibility (ppm) from a local field (ppm) by closed-form Tikhonov-regularised dipole
    inversion, ``F^-1[D F[field] / (D^2 + regularisation)]``: a simple QSM reconstruction. Like
    real ones, it underestimates (most near the magic-angle cone, where ``D`` is small), loses the
    mean and turns noise and field errors into streaks along the cone.
    """
    kernel = dipole_kernel(field.shape, voxel_size, b0_direction)
    transfer = kernel / (kernel ** 2 + np.float32(regularisation))
    return filtered(field.astype(np.float32, copy=False), transfer).astype(np.float32)
