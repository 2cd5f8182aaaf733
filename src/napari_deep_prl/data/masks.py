"""Lesion masks as label volumes: instance labels kept, binary masks split into components and
confluent components into their parts (:mod:`napari_deep_prl.data.confluent`).

Plain numpy and scipy, below images and lesions: a subject labels its own mask with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from napari_deep_prl.data.confluent import FULL_CONNECTIVITY, split_confluent


def is_instance_mask(mask: np.ndarray) -> bool:
    """True when the mask holds two or more distinct non-zero labels.

    A mask with a single non-zero value is binary whatever that value is: masks saved as 0/255
    (or 0/2, …) are common, and keeping such a value as one "instance" would make every lesion
    of the subject one lesion.
    """
    if not mask.size:
        return False
    top = int(mask.max())
    return top > 1 and bool(((mask > 0) & (mask != top)).any())


def label_lesions(mask: np.ndarray, spacing: Sequence[float], *, split: bool = True) -> np.ndarray:
    """Lesion labels (int32): instance labels kept; binary masks split into 26-connected
    components, and confluent components into parts (``spacing``: voxel size in mm per axis;
    ``split=False`` keeps confluent components whole, as projects registered before the split
    have them)."""
    mask = np.asarray(mask)
    if is_instance_mask(mask):
        return mask.astype(np.int32, copy=False)
    foreground = mask > 0
    labels = np.zeros(mask.shape, np.int32)
    box = bounding_box(foreground)
    if box is not None:  # labelling only the lesions' box: a third of the time on a brain
        labels[box], _ = ndimage.label(foreground[box], structure=FULL_CONNECTIVITY)
        if split:
            labels[box] = split_confluent(labels[box], spacing)
    return labels


def bounding_box(foreground: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every true voxel (``None`` when there is none)."""
    box = []
    for axis in range(foreground.ndim):
        others = tuple(a for a in range(foreground.ndim) if a != axis)
        hits = np.flatnonzero(foreground.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
