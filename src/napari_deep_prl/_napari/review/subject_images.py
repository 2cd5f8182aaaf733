"""A subject as the review's canvas shows it: every contrast and the lesion labels in RAS order,
grey windows, each lesion's box and the parts of split confluent components, prepared off the
main thread (numpy only, no Qt)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from napari_deep_prl._napari.slices import Orientation, default_window
from napari_deep_prl.data.evidence import EVIDENCE_COLUMNS, evidence_table
from napari_deep_prl.data.lesions import lesions_in_mask
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.training import Practice


@dataclass(frozen=True)
class Target:
    """The lesion to show: subject key, lesion id, centre in RAS voxels, extent in mm."""

    subject: str
    lesion: int
    centre: np.ndarray
    extent_mm: float


@dataclass(frozen=True)
class Part:
    """A lesion that is one part of a confluent component split into lesions
    (:mod:`napari_deep_prl.data.confluent`): the component's id (``split_from`` in the lesion
    table) and every part of it, in id order (raster order within the component)."""

    lesion: int
    component: int
    parts: tuple[int, ...]

    @property
    def index(self) -> int:
        """Which part the lesion is, counting from 1."""
        return self.parts.index(self.lesion) + 1


def split_parts(table: pd.DataFrame) -> dict[int, Part]:
    """The parts of split components in a lesion table (``lesion``, ``split_from``), by lesion."""
    split = table[table["split_from"] > 0].sort_values("lesion")
    return {int(lesion): Part(int(lesion), int(component), tuple(int(p) for p in group))
            for component, group in split.groupby("split_from")["lesion"] for lesion in group}


@dataclass(frozen=True)
class SubjectImages:
    """What the canvas needs of a subject, prepared off the main thread: every contrast and the
    lesion labels viewed in RAS order, grey windows, and each lesion's bounding box."""

    key: str
    volumes: dict[str, np.ndarray]
    labels: np.ndarray
    orientation: Orientation
    windows: dict[str, tuple[float, float]]
    boxes: dict[int, tuple[slice, ...]]
    #: The lesions that are parts of a split confluent component, by lesion id.
    parts: dict[int, Part] = field(default_factory=dict)

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size (mm) along the RAS-ordered axes."""
        return self.orientation.zooms

    def evidence(self, lesion: int) -> dict[str, float] | None:
        """The lesion's rim evidence (:data:`~napari_deep_prl.data.evidence.EVIDENCE_COLUMNS`),
        measured now (milliseconds: a box around the lesion) on the susceptibility image, whose
        RAS order makes the third axis the axial slices' normal; ``None`` for an unknown lesion."""
        box = self.boxes.get(int(lesion))
        if box is None:
            return None
        contrast, image = next(iter(self.volumes.items()))  # the susceptibility image comes first
        row = evidence_table(image, contrast, self.labels, self.zooms, 2, {int(lesion): box}).iloc[0]
        return {column: row[column] for column in EVIDENCE_COLUMNS}

    def target(self, lesion: int, voxel: tuple[float, float, float]) -> Target:
        """A lesion given by its centre in the file's voxel order."""
        box = self.boxes.get(int(lesion))
        extent = 0.0 if box is None else float(max(
            (s.stop - s.start) * z for s, z in zip(box, self.zooms)))
        return Target(self.key, int(lesion), self.orientation.voxel(voxel), extent)


def prepare_subject(project: Project | Practice, subject: str) -> SubjectImages:
    """Load a subject with every contrast it has and prepare it for the canvas (worker thread):
    a study subject from the project, or from the practice store (which also knows the practice
    subjects)."""
    loaded = project.load_subject(subject, extra=True)
    table = lesions_in_mask(loaded.mask, loaded.affine, subject, labels=loaded.labels).table
    orientation = Orientation.of(loaded.shape, loaded.affine)
    volumes = {name: orientation.volume(data) for name, data in loaded.images.items()}
    labels = orientation.volume(loaded.labels)
    boxes = {index + 1: box for index, box in enumerate(ndimage.find_objects(labels))
             if box is not None}
    windows = {name: default_window(name, data) for name, data in volumes.items()}
    return SubjectImages(subject, volumes, labels, orientation, windows, boxes, split_parts(table))
