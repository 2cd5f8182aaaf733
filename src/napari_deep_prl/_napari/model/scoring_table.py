"""How scores look in the viewer: a sortable lesion table, a colour bar, and the points layer.

The points sit at the lesion centres (voxel coordinates with the subject's affine, so they land
on the images) and are coloured by PRL probability with :data:`COLORMAP` on a fixed 0–1 scale,
so a colour means the same probability on every subject; :class:`ColourBar` is its legend.
In blind mode the layer carries positions only and the table no score or rim evidence column:
a rater cannot read a score from the layer's features either. A lesion's saliency map
(:func:`show_saliency`) is an image layer over its patch, removed in blind mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import napari
import numpy as np
import pandas as pd
from matplotlib import colormaps
from napari.layers import Points
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QLinearGradient, QPainter, QPaintEvent
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem, QWidget

if TYPE_CHECKING:
    from napari_deep_prl.data.images import Subject
    from napari_deep_prl.model.saliency import Saliency

COLORMAP = "viridis"
#: Table columns: (data column, header, hidden in blind mode: a model score, or the rim
#: evidence, a reading a rater must not see before labelling).
COLUMNS = (("subject", "subject", False), ("lesion", "lesion", False),
           ("volume_mm3", "volume mm³", False), ("diameter_mm", "Ø mm", False),
           ("prl_probability", "P(PRL)", True), ("prl", "PRL", True), ("uncertainty_sd", "SD", True),
           ("bald", "BALD", True), ("rim_coverage", "rim", True), ("rim_slices", "rim slices", True))
POINTS_NAME = "PRL scores"


class ColourBar(QWidget):
    """A horizontal 0–1 legend of the probability colour map."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(30)
        self.setToolTip("Point colour = PRL probability (0 left, 1 right)")

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        bar = self.rect().adjusted(18, 2, -18, -14)
        gradient = QLinearGradient(bar.left(), 0, bar.right(), 0)
        cmap = colormaps[COLORMAP]
        for stop in np.linspace(0, 1, 11):
            r, g, b, _ = cmap(stop)
            gradient.setColorAt(float(stop), QColor.fromRgbF(r, g, b))
        painter.fillRect(bar, gradient)
        for value in (0.0, 0.5, 1.0):
            x = int(bar.left() + value * bar.width())
            painter.drawText(x - 10, self.height() - 1, f"{value:g}")
        painter.end()


def _item(value: object) -> QTableWidgetItem:
    """A cell that sorts numerically when the value is a number."""
    item = QTableWidgetItem()
    if isinstance(value, (bool, np.bool_)):
        item.setData(Qt.ItemDataRole.DisplayRole, "yes" if value else "no")
    elif isinstance(value, (int, np.integer)):
        item.setData(Qt.ItemDataRole.DisplayRole, int(value))
    elif isinstance(value, (float, np.floating)):
        item.setData(Qt.ItemDataRole.DisplayRole, round(float(value), 3))
    else:
        item.setData(Qt.ItemDataRole.DisplayRole, str(value))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


class ScoringTable(QTableWidget):
    """One row per lesion; selecting a row emits the lesion's world position (mm)."""

    lesion_selected = Signal(str, int, object)  # subject, lesion, world (x_mm, y_mm, z_mm)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels([header for _, header, _ in COLUMNS])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.scores = pd.DataFrame()
        self.currentCellChanged.connect(self._on_current)

    def set_scores(self, scores: pd.DataFrame) -> None:
        """Show ``scores`` (one row per lesion, :data:`~napari_deep_prl.scoring.score.SCORE_COLUMNS`)."""
        self.setSortingEnabled(False)
        self.scores = scores.reset_index(drop=True)
        self.setRowCount(len(self.scores))
        for row, record in enumerate(self.scores.to_dict("records")):
            for col, (name, _, _) in enumerate(COLUMNS):
                item = _item(record.get(name, ""))
                item.setData(Qt.ItemDataRole.UserRole, row)
                self.setItem(row, col, item)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()

    def set_blind(self, blind: bool) -> None:
        """Hide (or show) every column that carries a model score."""
        for col, (_, _, is_score) in enumerate(COLUMNS):
            self.setColumnHidden(col, blind and is_score)

    def select_lesion(self, subject: str, lesion: int) -> None:
        """Select the row of a lesion (as a click would), whatever the sort order."""
        for row in range(self.rowCount()):
            record = self.scores.iloc[self.item(row, 0).data(Qt.ItemDataRole.UserRole)]
            if record["subject"] == subject and int(record["lesion"]) == int(lesion):
                self.setCurrentCell(row, 0)
                return

    def _on_current(self, row: int, *_: int) -> None:
        if row < 0 or self.item(row, 0) is None:
            return
        record = self.scores.iloc[self.item(row, 0).data(Qt.ItemDataRole.UserRole)]
        world = np.array([record["x_mm"], record["y_mm"], record["z_mm"]], dtype=float)
        self.lesion_selected.emit(str(record["subject"]), int(record["lesion"]), world)


def points_layer_kwargs(scores: pd.DataFrame, affine: np.ndarray, *, blind: bool) -> dict:
    """Arguments of the scores' points layer: coloured features, or bare positions when blind."""
    kwargs: dict = {"name": POINTS_NAME, "affine": affine, "size": 7, "symbol": "ring",
                    "border_width": 0,
                    "metadata": {"subject": str(scores["subject"].iloc[0]) if len(scores) else ""}}
    if blind:
        return {**kwargs, "face_color": "white"}
    features = scores[["lesion", "prl_probability", "prl", "uncertainty_sd", "bald"]]
    return {**kwargs, "features": features.reset_index(drop=True),
            "face_color": "prl_probability", "face_colormap": COLORMAP,
            "face_contrast_limits": (0.0, 1.0)}


def show_points(viewer: napari.Viewer, scores: pd.DataFrame, affine: np.ndarray, *, blind: bool) -> Points:
    """Replace the scores' points layer (main thread only), leaving the user's active layer
    active: a new layer would otherwise take the keys of whatever the user was working on."""
    with kept_selection(viewer):
        if POINTS_NAME in viewer.layers:
            viewer.layers.remove(POINTS_NAME)
        data = scores[["x", "y", "z"]].to_numpy(dtype=float)
        return viewer.add_points(data, **points_layer_kwargs(scores, affine, blind=blind))


@contextmanager
def kept_selection(viewer: napari.Viewer) -> Iterator[None]:
    """Add or remove layers without changing which layers are selected and active."""
    selection = viewer.layers.selection
    chosen, active = set(selection), selection.active
    try:
        yield
    finally:
        selection.clear()
        selection.update(layer for layer in chosen if layer in viewer.layers)
        selection.active = active if active in viewer.layers else None


def go_to(viewer: napari.Viewer, world: np.ndarray) -> None:
    """Move the slices and the camera to a world position (mm)."""
    viewer.dims.set_point(range(3), tuple(float(v) for v in world))
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.center = tuple(float(world[d]) for d in viewer.dims.displayed)


def show_saliency(viewer: napari.Viewer, subject: Subject, lesion: int, saliency: Saliency) -> None:
    """Overlay a lesion's saliency map on its patch's place (replacing an earlier one of it)."""
    name = f"{subject.subject} lesion {lesion} saliency"
    if name in viewer.layers:
        viewer.layers.remove(name)
    shift = np.eye(4)
    shift[:3, 3] = saliency.origin
    viewer.add_image(saliency.map, name=name, affine=subject.affine @ shift, colormap="inferno",
                     blending="additive", opacity=0.6, contrast_limits=(0.0, 1.0),
                     metadata={"saliency": subject.subject})


def remove_saliency(viewer: napari.Viewer) -> None:
    """Remove every saliency layer (blind mode shows no model output)."""
    for layer in [layer for layer in viewer.layers if "saliency" in layer.metadata]:
        viewer.layers.remove(layer)
