"""The susceptibility image's conventions, checked on the data: its sign, and a QSM's units.

Phase is **paramagnetic-dark** by this package's convention (a paramagnetic source — a vein, an
iron rim — gives negative phase where it raises the field, as most scanners' filtered phase
shows it); QSM is **paramagnetic-bright** by definition (susceptibility in ppm). Vendors differ
for the phase, and an image given with the other sign silently inverts what a model learned, so
each subject's susceptibility image is checked when it is loaded, where the data can tell:

* **Sign.** Veins are paramagnetic, and they are the most extreme thin structures of the
  brain's susceptibility. A QSM shows them directly: its upper tail inside the brain is longer
  than its lower one. A phase shows their *field*, whose sign depends on each vein's direction to
  B0, so the phase is first turned back into a rough susceptibility map by thresholded k-space
  division (TKD) with the dipole kernel (B0 along the world z axis, as in scanner coordinates);
  its longer tail is then the paramagnetic one. :func:`paramagnetic_sign` measures the
  asymmetry of the two tails (the 1 % and 0.1 % quantiles around the median) inside the brain,
  found without a brain mask: the voxels where the image is smooth (air and bone give noise),
  their largest connected part, holes filled, eroded by :data:`BRAIN_EROSION_MM` (the brain's
  edge carries the filters' residuals). The image is block-averaged to about
  :data:`CHECK_VOXEL_MM` first, which keeps veins' asymmetry and costs a few tens of
  milliseconds on a brain. An image whose tails are not heavier than noise's, or whose brain is
  too small to tell (:data:`MIN_BRAIN_ML`), is not judged.
* **QSM units.** Brain susceptibility lies within about ±0.5 ppm (veins, iron-rich nuclei),
  most of it within ±0.1 ppm; when more than :data:`PPM_OUTLIER_SHARE` of the brain reads
  beyond ±:data:`PLAUSIBLE_PPM` ppm, or its median magnitude is above
  :data:`PLAUSIBLE_MEDIAN_PPM`, the QSM is probably stored in ppb, in Hz or scaled, which
  :func:`qsm_units_problem` says (a map in Hz at 1.5 T reads about 64 times its ppm: its tail
  stays within ±10 but its median does not).

Both warn (:class:`~napari_deep_prl.base.errors.InputWarning`) naming the file; nothing is
changed: ``flip_phase`` (``--flip-phase``) stays the user's decision. Checked on the simulator's
subjects (docs/data.md, 'Sign conventions').
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import fft, ndimage

from napari_deep_prl.base.errors import InputWarning

#: Where the brain's voxels are judged: farther than this (mm) from the edge of the smooth region.
BRAIN_EROSION_MM = 10.0
#: Voxel size (mm) the image is block-averaged to before it is judged.
CHECK_VOXEL_MM = 3.0
#: Least brain volume (mL) judged: less gives tails too noisy to tell a sign.
MIN_BRAIN_ML = 100.0
#: Least tail asymmetry (of 1: all in one tail) taken as a sign.
MIN_ASYMMETRY = 0.05
#: Least tail heaviness judged: the 0.1 % tails' mean reach over what Gaussian noise of the same
#: robust spread reaches; white noise is about 1, veins make it well above.
MIN_TAIL_HEAVINESS = 1.3
#: Thresholded k-space division: the dipole kernel's magnitude is raised to at least this.
TKD_THRESHOLD = 0.2
#: A QSM beyond this many ppm over more than :data:`PPM_OUTLIER_SHARE` of the brain is implausible.
PLAUSIBLE_PPM = 10.0
PPM_OUTLIER_SHARE = 0.05
#: A QSM whose non-zero voxels' median magnitude is above this many ppm is implausible (a
#: brain's is a few hundredths of a ppm; the simulator's about 0.01).
PLAUSIBLE_MEDIAN_PPM = 0.3
#: Where B0 points in world (scanner) coordinates.
B0_WORLD = (0.0, 0.0, 1.0)

_WORKERS = 2


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


def check_susceptibility(image: np.ndarray, affine: np.ndarray, contrast: str, path: str | Path, *,
                         flipped: bool = False) -> None:
    """Warn, naming ``path``, when the susceptibility image (``contrast`` ``"phase"`` or
    ``"qsm"``, on its own grid, after any ``flip_phase``) looks flipped, or a QSM looks stored
    in other units than ppm; see the module doc."""
    if contrast == "qsm":
        problem = qsm_units_problem(image)
        if problem is not None:
            warnings.warn(f"{path}: {problem}", InputWarning, stacklevel=3)
    asymmetry = paramagnetic_sign(image, affine, contrast)
    if asymmetry is None:
        return
    if contrast == "phase" and asymmetry > MIN_ASYMMETRY:
        if flipped:
            advice = ("it was negated by --flip-phase (flip_phase=True): drop that option unless you know the "
                      "scanner's sign")
        else:
            advice = ("if the scanner writes the other sign (as some vendors do), load it with --flip-phase "
                      "(flip_phase=True); if you know the sign is right, ignore this")
        warnings.warn(f"{path}: the phase looks paramagnetic-bright: its longer tail, the veins', is positive "
                      f"(tail asymmetry {asymmetry:+.2f} after dipole inversion), but phase is read "
                      f"paramagnetic-dark. {advice[0].upper()}{advice[1:]} (docs/data.md, 'Sign conventions').",
                      InputWarning, stacklevel=3)
    elif contrast == "qsm" and asymmetry < -MIN_ASYMMETRY:
        warnings.warn(f"{path}: the QSM looks paramagnetic-dark: its longer tail, the veins', is negative "
                      f"(tail asymmetry {asymmetry:+.2f}), but QSM is paramagnetic-bright by definition. Check "
                      "the sign convention of the pipeline that made it and negate the map if it is flipped "
                      "(e.g. fslmaths qsm -mul -1 qsm_ppm) (docs/data.md, 'Sign conventions').",
                      InputWarning, stacklevel=3)


def qsm_units_problem(qsm: np.ndarray) -> str | None:
    """What is implausible about a QSM's values as ppm, or ``None``: more than
    :data:`PPM_OUTLIER_SHARE` of its non-zero voxels beyond ±:data:`PLAUSIBLE_PPM`, or their
    median magnitude above :data:`PLAUSIBLE_MEDIAN_PPM`."""
    values = np.abs(qsm[qsm != 0])
    if values.size == 0:
        return None
    share = float(np.mean(values > PLAUSIBLE_PPM))
    median = float(np.median(values))
    if share <= PPM_OUTLIER_SHARE and median <= PLAUSIBLE_MEDIAN_PPM:
        return None
    reads = (f"reads beyond ±{PLAUSIBLE_PPM:g} ppm over {share:.0%} of its non-zero voxels (median |value| "
             f"{median:.3g})" if share > PPM_OUTLIER_SHARE else
             f"has a median |value| of {median:.3g} over its non-zero voxels")
    return (f"the QSM {reads}, while the brain's susceptibility lies within about ±0.5 ppm, most of it within "
            "±0.1: it is probably stored in ppb or Hz, or scaled. Give it in ppm: a map in ppb divided by 1000 "
            "(e.g. fslmaths qsm -div 1000 qsm_ppm), one in Hz divided by 42.58 times B0 in tesla (a local field "
            "map in Hz is no QSM: it needs a dipole inversion first)")


def paramagnetic_sign(image: np.ndarray, affine: np.ndarray, contrast: str) -> float | None:
    """The asymmetry of the brain's paramagnetic estimate (see the module doc), from -1 to 1:
    positive when the image shows paramagnetic sources (veins) bright, negative when dark;
    ``None`` when the data cannot tell (too little brain, tails no heavier than noise's)."""
    small, voxel_mm = _block_average(np.asarray(image, np.float32), affine)
    brain = _brain(small, voxel_mm)
    if brain.sum() * np.prod(voxel_mm) / 1000.0 < MIN_BRAIN_ML:
        return None
    values = small
    if contrast == "phase":
        axes = np.asarray(affine, float)[:3, :3] / np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
        values = _tkd(small, brain, voxel_mm, tuple(axes.T @ np.asarray(B0_WORLD)))
    return _tail_asymmetry(values[brain])


def _block_average(image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` averaged over blocks of about :data:`CHECK_VOXEL_MM`, and the blocks' size (mm)."""
    zooms = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    factors = [max(1, round(CHECK_VOXEL_MM / z)) for z in zooms]
    shape = tuple(s // f for s, f in zip(image.shape, factors))
    if min(shape) == 0:
        return image, zooms
    total = np.zeros(shape, np.float32)
    for offset in np.ndindex(*factors):  # strided sums: several times faster than a reshaped mean
        total += image[tuple(slice(o, o + n * f, f) for o, n, f in zip(offset, shape, factors))]
    return total / np.float32(np.prod(factors)), zooms * np.array(factors)


def _brain(image: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """The brain's interior, without a mask: where the image is non-zero and smooth (air and bone
    are noise), its largest connected part with holes filled, eroded by :data:`BRAIN_EROSION_MM`."""
    nonzero = image != 0
    if nonzero.sum() < 2:
        return np.zeros(image.shape, bool)
    low, high = np.quantile(image[nonzero], [0.001, 0.999])
    roughness = ndimage.uniform_filter(np.abs(image - ndimage.uniform_filter(image, 3)), 5)
    # Noise spread over the image's range is about a quarter of the range from its local mean.
    smooth = nonzero & (roughness < 0.3 * (high - low) / 4)
    labels, count = ndimage.label(smooth)
    if count == 0:
        return smooth
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    region = ndimage.binary_fill_holes(labels == sizes.argmax())
    steps = int(np.ceil(BRAIN_EROSION_MM / float(np.mean(voxel_mm))))
    return ndimage.binary_erosion(region, iterations=steps)


def _tkd(phase: np.ndarray, brain: np.ndarray, voxel_mm: np.ndarray, b0: tuple[float, float, float]) -> np.ndarray:
    """A rough susceptibility map (same sign as the phase's field) by thresholded k-space division."""
    inside = np.where(brain, phase - np.median(phase[brain]), 0).astype(np.float32)
    kernel = dipole_kernel(phase.shape, tuple(voxel_mm), b0)
    kernel = np.where(np.abs(kernel) < TKD_THRESHOLD, np.where(kernel < 0, -TKD_THRESHOLD, TKD_THRESHOLD),
                      kernel).astype(np.float32)
    spectrum = fft.rfftn(inside, workers=_WORKERS)
    spectrum /= kernel
    return fft.irfftn(spectrum, s=phase.shape, workers=_WORKERS)


def _tail_asymmetry(values: np.ndarray) -> float | None:
    """``(upper - lower) / (upper + lower)`` of the tails' reach from the median, averaged over
    the 1 % and 0.1 % quantiles; ``None`` when the tails are no heavier than noise's."""
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    q = np.quantile(values, [0.001, 0.01, 0.99, 0.999])
    lower, upper = centre - q[:2], q[:1:-1] - centre
    if spread <= 0 or (lower[0] + upper[0]) / 2 < MIN_TAIL_HEAVINESS * 3.09 * spread:
        return None
    return float(np.mean((upper - lower) / (upper + lower)))
