"""A subject as napari layer data: its images and lesion labels on the world grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_deep_prl._napari.slices import default_window
from napari_deep_prl.data.images import Subject

LayerData = tuple[np.ndarray, dict[str, Any], str]


def subject_layers(subject: Subject, *, name_prefix: str | None = None) -> list[LayerData]:
    """Phase, MP2RAGE, the extra images and lesion labels, placed in world (scanner mm) space by
    the affine, with the review's grey windows (symmetric for the phase).

    The images are added last first, so napari's layer list reads phase, MP2RAGE, then the
    extras in manifest order, and the phase is the image seen first.
    """
    prefix = f"{name_prefix or subject.subject} "
    common = {"affine": subject.affine, "metadata": {"subject": subject.subject}}
    layers: list[LayerData] = [
        (image, {**common, "name": prefix + name, "colormap": "gray",
                 "contrast_limits": default_window(name, image)}, "image")
        for name, image in reversed(subject.images.items())
    ]
    layers.append((subject.labels, {**common, "name": prefix + "lesions", "opacity": 0.4},
                   "labels"))
    if subject.prl_mask is not None:
        layers.append((subject.prl_mask.astype(np.uint8),
                       {**common, "name": prefix + "prl mask", "opacity": 0.5, "visible": False}, "labels"))
    return layers
