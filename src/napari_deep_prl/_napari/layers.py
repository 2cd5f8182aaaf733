"""A subject as napari layer data: phase, MP2RAGE, extra images and lesion labels on the world grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_deep_prl.io import Subject
from napari_deep_prl.lesions import label_lesions

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Percentile of |phase| used as the symmetric grey window (outliers such as veins saturate).
PHASE_WINDOW_PERCENTILE = 99.5
#: Percentiles of the MP2RAGE intensities used as contrast limits.
MP2RAGE_WINDOW_PERCENTILES = (1.0, 99.5)


def phase_window(phase: np.ndarray) -> tuple[float, float]:
    """A grey window symmetric around 0, so that 0 phase is mid-grey and paramagnetic is dark."""
    nonzero = phase[phase != 0]
    half = float(np.percentile(np.abs(nonzero), PHASE_WINDOW_PERCENTILE)) if nonzero.size else 1.0
    return (-half, half) if half > 0 else (-1.0, 1.0)


def robust_window(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits from percentiles of the non-zero voxels."""
    nonzero = image[image != 0]
    if not nonzero.size:
        return (0.0, 1.0)
    low, high = np.percentile(nonzero, MP2RAGE_WINDOW_PERCENTILES)
    return (float(low), float(high)) if high > low else (float(low), float(low) + 1.0)


def subject_layers(subject: Subject, *, name_prefix: str | None = None) -> list[LayerData]:
    """Phase, MP2RAGE, the extra images and lesion labels, placed in world (scanner mm) space by
    the affine.

    The extra images (FLAIR, magnitude, ...) lie below MP2RAGE and phase, so the phase stays the
    image seen first; napari's layer list then reads phase, MP2RAGE, then the extras in manifest
    order.
    """
    prefix = f"{name_prefix or subject.subject} "
    common = {"affine": subject.affine, "metadata": {"subject": subject.subject}}
    layers: list[LayerData] = [
        (image, {**common, "name": prefix + name, "colormap": "gray", "contrast_limits": robust_window(image)},
         "image")
        for name, image in reversed(subject.extra.items())
    ]
    layers += [
        (subject.mp2rage, {**common, "name": prefix + "mp2rage", "colormap": "gray",
                           "contrast_limits": robust_window(subject.mp2rage)}, "image"),
        (subject.phase, {**common, "name": prefix + "phase", "colormap": "gray",
                         "contrast_limits": phase_window(subject.phase)}, "image"),
        (label_lesions(subject.mask), {**common, "name": prefix + "lesions", "opacity": 0.4}, "labels"),
    ]
    if subject.prl_mask is not None:
        layers.append((subject.prl_mask.astype(np.uint8),
                       {**common, "name": prefix + "prl mask", "opacity": 0.5, "visible": False}, "labels"))
    return layers
