"""The model panel's "Score a clicked lesion" mode: click on a lesion, see its outline, get its score.

While the mode is on, a left click in the viewer outlines the lesion under it
(:func:`~napari_deep_prl.data.click.outline_click`, from the subject's structural layers; a click
on a lesion of the subject's lesion layer takes that lesion) into the :data:`OUTLINE_LAYER`
labels layer, one label per clicked lesion, and scores the outlined lesions at once through the
panel (as ``deep-prl score --at`` does). The user may correct an outline with napari's brush and
eraser on that layer, then **Score outlines** scores the layer as it now is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import napari
import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from napari_deep_prl._napari.messages import TOOLTIPS
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.data.click import outline_click
from napari_deep_prl.data.images import Subject

#: The labels layer holding the clicked lesions' outlines.
OUTLINE_LAYER = "clicked outlines"


class ClickBox(QWidget):
    """Toggle of the click mode, and **Score outlines**; ``load`` gives the subject in the
    viewer (its lesion layer optional), ``score`` scores a subject in memory (a job, or ``None``
    when it cannot start)."""

    def __init__(self, viewer: napari.Viewer, load: Callable[[], Subject],
                 score: Callable[[Subject], Any]) -> None:
        super().__init__()
        self.viewer = viewer
        self._load = load
        self._score = score
        self.mode_button = QPushButton("Score a clicked lesion")
        self.mode_button.setCheckable(True)
        self.score_button = QPushButton("Score outlines")
        for name, widget in (("click_mode", self.mode_button), ("score_outlines", self.score_button)):
            widget.setToolTip(TOOLTIPS[name])
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.mode_button)
        row.addWidget(self.score_button)
        self.mode_button.toggled.connect(self.set_mode)
        self.score_button.clicked.connect(self.score_outlines)

    def set_mode(self, on: bool) -> None:
        """Clicks in the viewer outline lesions (on) or do what napari does (off)."""
        if self.mode_button.isChecked() != on:
            self.mode_button.setChecked(on)  # re-enters through the toggled signal
            return
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_press not in callbacks:
            callbacks.append(self._on_press)
        elif not on and self._on_press in callbacks:
            callbacks.remove(self._on_press)

    def _on_press(self, viewer: napari.Viewer, event: Any) -> Generator[None, None, None] | None:
        if event.button == 1 and not event.modifiers:
            self.click_at(np.asarray(event.position, dtype=float)[-3:])
        return None

    def click_at(self, world: np.ndarray) -> Any:
        """Outline the lesion at ``world`` (mm), add it to :data:`OUTLINE_LAYER` and score the
        outlines; a bad click (outside the brain, on no lesion) is said and changes nothing."""
        try:
            subject = self._load()
            outline = outline_click(subject, world)
        except DeepPRLError as err:
            show_error(str(err))
            return None
        layer = self._layer(subject)
        labels = np.asarray(layer.data)
        if not np.any(labels[outline]):  # a lesion already outlined is not added twice
            labels[outline] = labels.max() + 1
            layer.data = labels
        return self.score_outlines()

    def score_outlines(self) -> Any:
        """Score the lesions of :data:`OUTLINE_LAYER` as they are (outlined, painted, erased)."""
        if OUTLINE_LAYER not in self.viewer.layers:
            show_error("No outline yet: turn on 'Score a clicked lesion' and click on a lesion.")
            return None
        try:
            subject = self._load()
        except DeepPRLError as err:
            show_error(str(err))
            return None
        mask = np.asarray(self.viewer.layers[OUTLINE_LAYER].data, dtype=np.int32)
        return self._score(Subject(subject.subject, subject.images, mask, subject.affine))

    def _layer(self, subject: Subject) -> napari.layers.Labels:
        layer = self.viewer.layers[OUTLINE_LAYER] if OUTLINE_LAYER in self.viewer.layers else None
        if layer is None or layer.data.shape != subject.shape or layer.metadata.get("subject") != subject.subject:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_labels(np.zeros(subject.shape, np.int32), name=OUTLINE_LAYER,
                                           affine=subject.affine, opacity=0.6,
                                           metadata={"subject": subject.subject})
        return layer

    def set_enabled(self, ready: bool) -> None:
        """Scoring needs a model and no other job running (outlining needs neither)."""
        self.score_button.setEnabled(ready)
