"""Lesion candidates: labelling a mask and describing each lesion.

A binary mask is split into connected components with **26-connectivity** (voxels touching by a
face, an edge or a corner belong to the same lesion). Components are numbered 1, 2, ... in the
order their first voxel appears in C (raster) order of the array, so ids depend only on the mask
and never change between runs. A mask with integer labels other than 0/1 is an *instance* mask:
its labels are kept as given.

A binary component that is several lesions grown together (necked: see
:mod:`napari_deep_prl.data.confluent`) is split into parts, each one lesion with an id after the
last component's. ``component`` names the 26-connected component of the mask holding the lesion
(its id in raster numbering: the lesion's own id unless it is a part) and ``split_from`` the
component a part was split from (0 for a lesion that was not split).

``confluent`` flags a lesion that is, or was, joined to others, which the paper excluded and
raters often set aside: in an instance mask, a lesion touching another one; in a binary mask, a
part of a split component, or a necked component kept whole because its parts would be too
small to judge.

Evaluation reports lesions apart by *kind* (:func:`lesion_kinds`): ``non_confluent``;
``confluent_part``, a confluent lesion that shares its mask component with other lesions (a part
split from a confluent component, or an instance touching another); ``confluent_whole``, a
confluent component kept whole (its parts would be too small to judge).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.confluent import is_necked
from napari_deep_prl.data.images import Subject, SubjectPaths
from napari_deep_prl.data.masks import (
    FULL_CONNECTIVITY,
    bounding_box,
    is_instance_mask,
    label_lesions,
)
from napari_deep_prl.data.resample import Grid

TABLE_COLUMNS = (
    "subject", "lesion", "x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_voxels", "volume_mm3",
    "confluent", "component", "split_from", "bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1",
)

#: The kinds of lesion evaluation reports apart (:func:`lesion_kinds`).
LESION_KINDS = ("non_confluent", "confluent_part", "confluent_whole")


@dataclass
class Lesions:
    """A subject's lesion label volume and its one-row-per-lesion table."""

    labels: np.ndarray
    table: pd.DataFrame

    @property
    def ids(self) -> np.ndarray:
        return self.table["lesion"].to_numpy()

    def __len__(self) -> int:
        return len(self.table)


def find_lesions(subject: Subject) -> Lesions:
    """Label the subject's mask and tabulate its lesions, with its ground truth if it has one."""
    return with_truth(lesions_in_mask(subject.mask, subject.affine, subject.subject, labels=subject.labels),
                      subject)


def with_truth(lesions: Lesions, subject: Subject) -> Lesions:
    """The lesions with the ``prl`` truth of the subject's PRL mask or lesion label table."""
    if subject.prl_mask is not None:
        return Lesions(lesions.labels, with_prl_truth(lesions.table, lesions.labels, subject.prl_mask))
    if subject.prl_labels is not None:
        return Lesions(lesions.labels, with_prl_labels(lesions.table, subject.prl_labels))
    return lesions


def lesions_in_mask(mask: np.ndarray, affine: np.ndarray, subject: str, *,
                    labels: np.ndarray | None = None) -> Lesions:
    """Label a mask (unless its ``labels`` are given) and tabulate its lesions; needs no images."""
    labels = label_lesions(mask, Grid.of(mask.shape, affine).zooms) if labels is None else labels
    return Lesions(labels, lesion_table_from_labels(labels, affine, subject, instance=is_instance_mask(mask)))


def lesion_table(subject: Subject) -> pd.DataFrame:
    """One row per lesion of the subject (see :data:`TABLE_COLUMNS`)."""
    return find_lesions(subject).table


def lesion_table_from_labels(
    labels: np.ndarray,
    affine: np.ndarray,
    subject: str,
    prl_mask: np.ndarray | None = None,
    *,
    instance: bool = False,
) -> pd.DataFrame:
    """Tabulate lesions of a label volume; vectorised over voxels (one pass per statistic).

    Works inside the lesions' bounding box only: on a brain-sized grid that is a fraction of the
    voxels to scan."""
    columns = list(TABLE_COLUMNS) + (["prl_fraction", "prl"] if prl_mask is not None else [])
    box = bounding_box(labels > 0)
    if box is None:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    inside = labels[box]
    flat = inside.ravel()
    voxels = np.flatnonzero(flat)
    lesion_of_voxel = flat[voxels]
    ids = np.unique(lesion_of_voxel)
    # Dense index 0..n-1 for each lesion id, so bincount stays small for sparse instance labels.
    dense = np.searchsorted(ids, lesion_of_voxel)
    counts = np.bincount(dense, minlength=ids.size)
    coords = np.unravel_index(voxels, inside.shape)
    centre = np.stack([np.bincount(dense, weights=c, minlength=ids.size) for c in coords], axis=1) / counts[:, None]
    lo = np.stack([_group_extreme(dense, c, ids.size, np.minimum) for c in coords], axis=1)
    hi = np.stack([_group_extreme(dense, c, ids.size, np.maximum) for c in coords], axis=1) + 1
    component = np.zeros(ids.size, np.int64)
    component[dense] = ndimage.label(flat.reshape(inside.shape) > 0, structure=FULL_CONNECTIVITY)[0].ravel()[voxels]
    shared = np.bincount(component)[component] > 1
    split_from = np.where(shared & (not instance), component, 0)
    if instance:
        confluent = np.isin(ids, _touching_ids(inside))
    else:
        confluent = (split_from > 0) | np.isin(ids, _necked_ids(inside, ids[split_from == 0], lo[split_from == 0],
                                                                hi[split_from == 0]))
    origin = np.array([s.start for s in box])
    centre, lo, hi = centre + origin, lo + origin, hi + origin
    world = centre @ affine[:3, :3].T + affine[:3, 3]
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    table = pd.DataFrame({
        "subject": subject,
        "lesion": ids.astype(np.int64),
        "x": centre[:, 0], "y": centre[:, 1], "z": centre[:, 2],
        "x_mm": world[:, 0], "y_mm": world[:, 1], "z_mm": world[:, 2],
        "volume_voxels": counts.astype(np.int64),
        "volume_mm3": counts * voxel_mm3,
        "confluent": confluent,
        "component": component,
        "split_from": split_from,
        "bbox_x0": lo[:, 0], "bbox_y0": lo[:, 1], "bbox_z0": lo[:, 2],
        "bbox_x1": hi[:, 0], "bbox_y1": hi[:, 1], "bbox_z1": hi[:, 2],
    })
    return table if prl_mask is None else with_prl_truth(table, labels, prl_mask)


def lesion_kinds(table: pd.DataFrame) -> np.ndarray:
    """Each lesion's kind (:data:`LESION_KINDS`) from a lesion or score table's ``subject``,
    ``confluent`` and ``component`` columns: confluent results are read apart from the others,
    which the paper's protocol alone tests."""
    confluent = table["confluent"].to_numpy(bool)
    shared = table.groupby(["subject", "component"], sort=False)["component"].transform("size").to_numpy() > 1
    return np.where(~confluent, LESION_KINDS[0], np.where(shared, LESION_KINDS[1], LESION_KINDS[2]))


def with_prl_labels(table: pd.DataFrame, prl_labels: pd.Series) -> pd.DataFrame:
    """The lesion table plus ``prl`` from a label table (:func:`napari_deep_prl.data.labels.read_prl_labels`):
    a nullable boolean, NA for the lesions it does not label (they are neither trained on nor
    tested)."""
    subject = table["subject"].iloc[0] if len(table) else "?"
    unknown = np.setdiff1d(prl_labels.index.to_numpy(), table["lesion"].to_numpy())
    if unknown.size:
        raise InputError(f"subject {subject}: the lesion label table names lesion(s) {unknown[:10].tolist()} that "
                         f"its mask does not have (it has {len(table)}). The ids must come from this mask, e.g. "
                         "from deep-prl lesions or a project made on the same masks.")
    table = table.copy()
    table["prl"] = table["lesion"].map(prl_labels).astype("boolean")
    return table


def with_prl_truth(table: pd.DataFrame, labels: np.ndarray, prl_mask: np.ndarray) -> pd.DataFrame:
    """The lesion table plus ``prl_fraction`` (of its voxels in the PRL mask) and ``prl`` (most)."""
    table = table.copy()
    if table.empty:
        return table.assign(prl_fraction=pd.Series(dtype="float64"), prl=pd.Series(dtype="bool"))
    box = tuple(slice(int(table[f"bbox_{a}0"].min()), int(table[f"bbox_{a}1"].max())) for a in "xyz")
    ids = table["lesion"].to_numpy()
    hits = labels[box][prl_mask[box] > 0]
    hits = hits[hits > 0]
    in_prl = np.bincount(np.searchsorted(ids, hits), minlength=ids.size)
    table["prl_fraction"] = in_prl / table["volume_voxels"].to_numpy()
    table["prl"] = table["prl_fraction"] > 0.5
    return table


def _dtype(column: str) -> str:
    if column in ("subject",):
        return "object"
    if column in ("confluent", "prl"):
        return "bool"
    if column in ("x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_mm3", "prl_fraction"):
        return "float64"
    return "int64"


def _group_extreme(group: np.ndarray, values: np.ndarray, n: int, ufunc: np.ufunc) -> np.ndarray:
    start = np.iinfo(np.int64).max if ufunc is np.minimum else np.iinfo(np.int64).min
    out = np.full(n, start, dtype=np.int64)
    ufunc.at(out, group, values)
    return out


def _touching_ids(labels: np.ndarray) -> np.ndarray:
    """Ids of instance labels that touch a different label (26-neighbourhood)."""
    touching: list[np.ndarray] = []
    # Half of the 26 neighbour offsets suffice: each pair of neighbours is compared once.
    offsets = [o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]
    for ox, oy, oz in offsets:
        dx, dy, dz = ox - 1, oy - 1, oz - 1
        a = labels[_span(dx, True), _span(dy, True), _span(dz, True)]
        b = labels[_span(dx, False), _span(dy, False), _span(dz, False)]
        differ = (a != b) & (a > 0) & (b > 0)
        if differ.any():
            touching += [a[differ], b[differ]]
    return np.unique(np.concatenate(touching)) if touching else np.empty(0, dtype=np.int32)


def _span(d: int, first: bool) -> slice:
    if d == 0:
        return slice(None)
    if d > 0:
        return slice(None, -d) if first else slice(d, None)
    return slice(-d, None) if first else slice(None, d)


def _necked_ids(labels: np.ndarray, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Ids of binary components whose interior splits into several cores (see module docstring)."""
    necked = [lesion for lesion, start, stop in zip(ids, lo, hi)
              if is_necked(labels[tuple(slice(a, b) for a, b in zip(start, stop))] == lesion)]
    return np.asarray(necked, dtype=ids.dtype)


def cohort_lesion_table(cohort: Sequence[SubjectPaths], *, flip_phase: bool = False
                        ) -> Generator[Progress, None, pd.DataFrame]:
    """Lesion tables of every subject, loading one subject at a time (a progress generator);
    ``flip_phase`` as :meth:`SubjectPaths.load`."""
    tables = []
    for i, paths in enumerate(cohort):
        tables.append(lesion_table(paths.load(flip_phase=flip_phase)))
        yield Progress(i + 1, len(cohort), "subjects", paths.subject)
    non_empty = [t for t in tables if len(t)]
    return pd.concat(non_empty, ignore_index=True) if non_empty else tables[0]
