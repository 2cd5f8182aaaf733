"""Confluent lesions: finding binary components that are several lesions grown together, and
splitting them into lesion candidates.

A binary component is *necked* (confluent) when its deep interior falls apart into two or more
cores: the voxels at least ``max(CONFLUENT_CORE_DEPTH, half the largest depth)`` voxels from its
edge, i.e. blobs joined by a narrow neck.

A necked component is split by a watershed of its distance map (millimetres from the
component's edge, so anisotropic voxels count at their true size): one marker per regional
maximum of the distance that stands at least :data:`SPLIT_H_MM` above the saddle joining it to
a deeper one (h-maxima), each voxel going to the marker it flows to. A part smaller than
:data:`MIN_PART_MM3` is merged into the neighbouring part it shares most faces, edges and
corners with, smallest first, until every part is large enough. A split that leaves a single
part (every other piece too small to judge) keeps the component whole; it stays flagged
confluent. The parts cover the component exactly and are numbered in raster (C) order of their
first voxel, so a mask always splits the same way.

Plain numpy, scipy and scikit-image; no images needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

#: 26-connectivity structuring element (voxels touching by a face, an edge or a corner).
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)

#: Least depth (voxels from the edge) of the cores that make a binary component confluent.
CONFLUENT_CORE_DEPTH = 2.0

#: How far (mm) a distance maximum must rise above its saddle to seed a part of its own.
SPLIT_H_MM = 0.5

#: Smallest part (mm³) a split keeps on its own: about a sphere of 3 mm across, the smallest
#: lesion raters judge; smaller pieces join a neighbouring part.
MIN_PART_MM3 = 14.0


def is_necked(component: np.ndarray) -> bool:
    """True when the component (a boolean array of one lesion) has two or more deep cores."""
    if min(component.shape) < 2 * CONFLUENT_CORE_DEPTH:  # too thin to hold a core, let alone two
        return False
    depth = ndimage.distance_transform_edt(np.pad(component, 1))
    cores = depth >= max(CONFLUENT_CORE_DEPTH, 0.5 * depth.max())
    return ndimage.label(cores, structure=FULL_CONNECTIVITY)[1] >= 2


def split_component(component: np.ndarray, spacing: Sequence[float], *, h_mm: float = SPLIT_H_MM,
                    min_part_mm3: float = MIN_PART_MM3) -> np.ndarray:
    """The parts of one component (labels 1..n over its voxels, 0 outside), or all zeros when
    it does not split into two or more parts of at least ``min_part_mm3``."""
    padded = np.pad(component.astype(bool), 1)
    distance = ndimage.distance_transform_edt(padded, sampling=tuple(float(s) for s in spacing))
    markers, n = ndimage.label(h_maxima(distance, h_mm).astype(bool) & padded, structure=FULL_CONNECTIVITY)
    none = np.zeros(component.shape, np.int32)
    if n < 2:
        return none
    parts = watershed(-distance, markers, mask=padded, connectivity=3).astype(np.int32)
    parts = _merge_small(parts, min_part_mm3 / float(np.prod(spacing)))
    if parts.max() < 2:
        return none
    return _raster_numbered(parts)[1:-1, 1:-1, 1:-1]


def split_confluent(components: np.ndarray, spacing: Sequence[float], **options: float) -> np.ndarray:
    """Component labels (1..n in raster order) with each necked component that splits replaced
    by its parts, numbered n+1, n+2, ...: component by component in id order, parts in raster
    order within each. Components that are not split keep their id. ``options`` go to
    :func:`split_component`."""
    out = components
    next_id = int(components.max(initial=0)) + 1
    for lesion, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        component = components[box] == lesion
        if not is_necked(component):
            continue
        parts = split_component(component, spacing, **options)
        if not parts.any():
            continue
        if out is components:
            out = components.copy()
        out[box][component] = parts[component] + (next_id - 1)
        next_id += int(parts.max())
    return out


def _merge_small(parts: np.ndarray, min_voxels: float) -> np.ndarray:
    """Parts with each one smaller than ``min_voxels`` merged into its most-touching neighbour."""
    while True:
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        alive = np.flatnonzero(sizes)
        small = alive[sizes[alive] < min_voxels]
        if alive.size < 2 or small.size == 0:
            return parts
        part = int(small[np.argmin(sizes[small])])  # the smallest first (ties: lowest label)
        here = parts == part
        shell = ndimage.binary_dilation(here, structure=FULL_CONNECTIVITY) & ~here
        neighbours = np.bincount(parts[shell], minlength=sizes.size)
        neighbours[0] = 0
        parts[here] = int(np.argmax(neighbours))


def _raster_numbered(parts: np.ndarray) -> np.ndarray:
    """The same parts labelled 1..n in raster order of their first voxel."""
    flat = parts.ravel()
    labels, first = np.unique(flat, return_index=True)
    keep = labels > 0
    order = labels[keep][np.argsort(first[keep])]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lookup[parts]
