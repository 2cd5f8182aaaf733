"""Rim evidence a rater can check: NAIMS's criteria for a paramagnetic rim lesion as numbers.

The NAIMS consensus reads a lesion as a PRL when a paramagnetic rim runs along most of its edge
(at least two thirds) on consecutive slices. :func:`rim_evidence` measures, for each lesion of
a subject, from its susceptibility image alone (no model):

``rim_coverage``
    the fraction of the lesion's edge with a paramagnetic band. The edge is read slice by slice
    in the *axial* plane: the planes across the reference grid's array axis closest to the
    world's inferior–superior axis (:func:`slice_axis`), as a rater scrolls them. On each slice
    the lesion's outline is cut into :data:`SECTORS` equal angles around its centre; a sector
    has a rim when its *band* — the lesion's pixels within :data:`RIM_INSIDE_MM` of the
    outline — is more paramagnetic than the tissue just outside it (background pixels within
    :data:`RIM_OUTSIDE_MM`, other lesions left out) by more than :data:`RIM_Z` robust spreads
    (a sector without outside pixels is compared with the local tissue's median). The
    coverage is the share of sectors with a rim over every slice judged, a slice counting by
    its number of sectors. Comparing with the outside rather than with the tissue's level is
    what a rater does (a band darker than its surroundings), and on the phase it also reads a
    rim's own field: across B0 the field just outside a paramagnetic band has the opposite sign,
    which a vein grazing the edge, dark outside the lesion, does not.
``rim_slices``
    the longest run of consecutive judged slices on which the rim covers at least
    :data:`SLICE_COVERAGE` of the outline (NAIMS's two thirds).
``diameter_mm``
    the lesion's largest in-plane extent on any axial slice (between voxel centres, plus one
    in-plane voxel: exact to about a voxel).

The image is read with the project's sign convention (:mod:`~napari_deep_prl.data.contrasts`):
paramagnetic is negative (dark) on the phase and positive (bright) on a QSM. Each lesion's
values are z-scores against the local tissue: the median and robust spread (1.4826 × median
absolute deviation) of the background voxels :data:`TISSUE_MM` mm outside the lesion (other
lesions and zero voxels — outside the brain — left out), so the numbers compare across field
strengths, echo times and filters.

A slice is judged when the lesion's cross-section there has at least :data:`MIN_SLICE_PIXELS`
pixels; a lesion without such a slice gets ``nan`` coverage and 0 slices. Limits (see
docs/scoring.md, "Rim evidence"): on the phase, a rim's dipole field changes sign with the edge's
direction to B0, so the parts of a complete rim whose edge faces B0 can read as diamagnetic and
a full rim rarely reaches coverage 1 (a QSM has no such effect); a lesion thinner than about
twice :data:`RIM_INSIDE_MM` is all band, so a small homogeneously paramagnetic lesion reads as a
rim; a vein running inside the lesion's edge reads as a rim over the sectors it crosses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.distance import pdist

from napari_deep_prl.data.images import Subject

#: Angular sectors an outline is cut into on each slice (30° each).
SECTORS = 12
#: Depth (mm) inside the lesion's outline that the band holds: where an iron rim lies.
RIM_INSIDE_MM = 2.0
#: Width (mm) of the tissue just outside the outline that the band is compared with.
RIM_OUTSIDE_MM = 2.0
#: A sector has a rim when its band's mean exceeds the outside's by this many robust spreads
#: of the local tissue (chosen on simulated subjects: docs/scoring.md, "Rim evidence").
RIM_Z = 1.5
#: Shell (mm) outside the lesion whose voxels are the local tissue the z-scores refer to.
TISSUE_MM = (2.0, 6.0)
#: A slice's coverage that counts as "a rim is seen" on it (NAIMS: two thirds of the edge).
SLICE_COVERAGE = 2 / 3
#: Smallest cross-section (pixels) of a lesion judged on a slice.
MIN_SLICE_PIXELS = 5
#: Cross-sections (pixels) above which a diameter is measured on the outline's pixels alone.
EDGE_ONLY_ABOVE = 200
#: A distance (mm) across slices beyond any lesion's box: the distance transforms then measure
#: within each axial slice, all slices at once.
IN_PLANE_ONLY = 1e6
#: The columns :func:`rim_evidence` adds to a lesion's id.
EVIDENCE_COLUMNS = ("rim_coverage", "rim_slices", "diameter_mm")


def paramagnetic_sign(contrast: str) -> float:
    """+1 where paramagnetic is bright (``qsm``), -1 where it is dark (``phase``)."""
    return 1.0 if contrast == "qsm" else -1.0


def slice_axis(affine: np.ndarray) -> int:
    """The array axis closest to the world's inferior–superior axis: the axial slices' normal."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(directions[2])))


def rim_evidence(subject: Subject, labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per lesion of ``labels`` (default: the subject's): ``lesion`` and
    :data:`EVIDENCE_COLUMNS` (see the module doc), lesions in id order."""
    contrast = subject.susceptibility
    return evidence_table(subject.images[contrast], contrast, subject.labels if labels is None else labels,
                          subject.zooms, slice_axis(subject.affine))


def evidence_table(image: np.ndarray, contrast: str, labels: np.ndarray, zooms: Sequence[float], axis: int,
                   boxes: dict[int, tuple[slice, ...]] | None = None) -> pd.DataFrame:
    """:func:`rim_evidence` of a susceptibility ``image`` (``contrast`` ``"phase"`` or ``"qsm"``)
    and its lesion ``labels`` on one grid of voxel size ``zooms``, axial slices across ``axis``;
    ``boxes``: the lesions to measure by id, with their bounding boxes (default: every lesion)."""
    if boxes is None:
        boxes = {index + 1: box for index, box in enumerate(ndimage.find_objects(labels)) if box is not None}
    zooms = np.asarray(zooms, dtype=float)
    pad = np.ceil(max(TISSUE_MM[1], RIM_OUTSIDE_MM) / zooms).astype(int) + 1
    sign = paramagnetic_sign(contrast)
    rows = []
    for lesion, box in sorted(boxes.items()):
        box = tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(box, pad, labels.shape))
        rows.append((lesion, *lesion_evidence(sign * image[box], labels[box], lesion, zooms, axis)))
    table = pd.DataFrame(rows, columns=["lesion", *EVIDENCE_COLUMNS])
    return table.astype({"lesion": np.int64, "rim_coverage": float, "rim_slices": np.int64, "diameter_mm": float})


def lesion_evidence(image: np.ndarray, labels: np.ndarray, lesion: int, zooms: np.ndarray,
                    axis: int) -> tuple[float, int, float]:
    """Coverage, rim slices and diameter of one lesion in a box around it; ``image`` with
    paramagnetic positive (see the module doc)."""
    inside = labels == lesion
    background = (labels == 0) & (image != 0)
    gap = ndimage.distance_transform_edt(~inside, sampling=zooms)
    tissue = image[background & (gap > TISSUE_MM[0]) & (gap <= TISSUE_MM[1])]
    if tissue.size < 2:
        tissue = image[background]
    centre = float(np.median(tissue)) if tissue.size else 0.0
    spread = 1.4826 * float(np.median(np.abs(tissue - centre))) if tissue.size else 0.0
    z = (image - centre) / (spread if spread > 0 else 1.0)
    plane = [a for a in range(3) if a != axis]
    pixel = zooms[plane]
    # in-plane distances of every slice at once: a step across slices longer than any box
    # (on the lesion's box widened by the band and the outside's width alone: the rest is neither)
    across = zooms.copy()
    across[axis] = IN_PLANE_ONLY
    margin = np.ceil(max(RIM_INSIDE_MM, RIM_OUTSIDE_MM) / zooms).astype(int) + 1
    (near,) = ndimage.find_objects(inside.astype(np.int8))
    near = tuple(slice(max(0, s.start - m), s.stop + m) for s, m in zip(near, margin))
    band, outer = np.zeros_like(inside), np.zeros_like(inside)
    band[near] = inside[near] & (ndimage.distance_transform_edt(inside[near], sampling=across) <= RIM_INSIDE_MM)
    outer[near] = background[near] & (ndimage.distance_transform_edt(~inside[near], sampling=across)
                                      <= RIM_OUTSIDE_MM)
    rims, sectors, diameter, seen = 0, 0, 0.0, []
    for k in range(inside.shape[axis]):
        cut = inside.take(k, axis=axis)
        size = int(cut.sum())
        if size == 0:
            continue
        diameter = max(diameter, _diameter(cut, pixel))
        if size < MIN_SLICE_PIXELS:
            continue
        found, judged = _slice_rim(cut, z.take(k, axis=axis), band.take(k, axis=axis),
                                   outer.take(k, axis=axis), pixel)
        if judged:
            rims, sectors = rims + found, sectors + judged
            seen.append((k, found / judged))
    coverage = rims / sectors if sectors else float("nan")
    return coverage, _longest_run(seen), diameter


def _slice_rim(cut: np.ndarray, z: np.ndarray, band: np.ndarray, outer: np.ndarray,
               pixel: np.ndarray) -> tuple[int, int]:
    """Sectors of one slice's outline with a rim, and sectors judged (those the band reaches);
    ``band`` and ``outer``: the slice's pixels within the band's depth inside the outline and
    the tissue's width outside it."""
    centre = np.argwhere(cut).mean(axis=0)
    inner_count, inner_mean = _sector_means(band, z, centre, pixel)
    outer_count, outer_mean = _sector_means(outer, z, centre, pixel)
    judged = inner_count > 0
    contrast = inner_mean - np.where(outer_count > 0, outer_mean, 0.0)
    return int((judged & (contrast > RIM_Z)).sum()), int(judged.sum())


def _sector_means(region: np.ndarray, z: np.ndarray, centre: np.ndarray, pixel: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and mean of ``z`` of ``region`` in each angular sector around ``centre``."""
    rows, cols = np.nonzero(region)
    angle = np.arctan2((rows - centre[0]) * pixel[0], (cols - centre[1]) * pixel[1])
    sector = ((angle + np.pi) / (2 * np.pi) * SECTORS).astype(int) % SECTORS
    count = np.bincount(sector, minlength=SECTORS)
    return count, np.bincount(sector, weights=z[rows, cols], minlength=SECTORS) / np.maximum(count, 1)


def _diameter(cut: np.ndarray, pixel: np.ndarray) -> float:
    """Largest extent (mm) of a slice's cross-section: outline pixels' centres plus one pixel."""
    if cut.sum() > EDGE_ONLY_ABOVE:  # the farthest pair lies on the outline: fewer pairs
        cut = cut & ~ndimage.binary_erosion(cut)
    points = np.argwhere(cut) * pixel
    reach = float(pdist(points).max()) if len(points) > 1 else 0.0
    return reach + float(np.mean(pixel))


def _longest_run(seen: list[tuple[int, float]]) -> int:
    """Longest run of consecutive slices whose coverage reaches :data:`SLICE_COVERAGE`."""
    best = run = 0
    last = None
    for k, coverage in seen:
        if coverage >= SLICE_COVERAGE:
            run = run + 1 if last is not None and k == last + 1 else 1
            last = k
            best = max(best, run)
        else:
            last = None
    return best

