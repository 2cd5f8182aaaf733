"""A subject as the review's canvas shows it: every contrast and the lesion labels in RAS order,
grey windows, each lesion's box and rim evidence, prepared off the main thread (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_deep_prl._napari.slices import Orientation, default_window
from napari_deep_prl.data.evidence import rim_evidence
from napari_deep_prl.ratings.project import Project


@dataclass(frozen=True)
class Target:
    """The lesion to show: subject key, lesion id, centre in RAS voxels, extent in mm."""

    subject: str
    lesion: int
    centre: np.ndarray
    extent_mm: float


@dataclass(frozen=True)
class SubjectImages:
    """What the canvas needs of a subject, prepared off the main thread: every contrast and the
    lesion labels viewed in RAS order, grey windows, each lesion's bounding box, and each
    lesion's rim evidence by id (:func:`~napari_deep_prl.data.evidence.rim_evidence`'s columns)."""

    key: str
    volumes: dict[str, np.ndarray]
    labels: np.ndarray
    orientation: Orientation
    windows: dict[str, tuple[float, float]]
    boxes: dict[int, tuple[slice, ...]]
    evidence: dict[int, dict[str, float]]

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size (mm) along the RAS-ordered axes."""
        return self.orientation.zooms

    def target(self, lesion: int, voxel: tuple[float, float, float]) -> Target:
        """A lesion given by its centre in the file's voxel order."""
        box = self.boxes.get(int(lesion))
        extent = 0.0 if box is None else float(max(
            (s.stop - s.start) * z for s, z in zip(box, self.zooms)))
        return Target(self.key, int(lesion), self.orientation.voxel(voxel), extent)


def prepare_subject(project: Project, subject: str) -> SubjectImages:
    """Load a subject with every contrast it has and prepare it for the canvas (worker thread)."""
    loaded = project.load_subject(subject, extra=True)
    orientation = Orientation.of(loaded.shape, loaded.affine)
    volumes = {name: orientation.volume(data) for name, data in loaded.images.items()}
    labels = orientation.volume(loaded.labels)
    boxes = {index + 1: box for index, box in enumerate(ndimage.find_objects(labels))
             if box is not None}
    windows = {name: default_window(name, data) for name, data in volumes.items()}
    evidence = rim_evidence(loaded).set_index("lesion").to_dict("index")
    return SubjectImages(subject, volumes, labels, orientation, windows, boxes, evidence)
