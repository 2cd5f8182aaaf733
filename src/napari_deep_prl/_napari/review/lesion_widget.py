"""What the review and adjudication widgets share: the lesion canvas above the controls, the
view controls, and keys that belong to the open session.

A subclass sets ``KEYS`` and builds its controls with :meth:`assemble`; its project is
``self.project``. The canvas is the widget's own (napari's layers and grid are never touched),
so docking or closing a review changes nothing in the viewer.
"""

from __future__ import annotations

from collections.abc import Iterable

import napari
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.board import board
from napari_deep_prl._napari.keybindings import KeyAction
from napari_deep_prl._napari.review.key_router import KeyRouter
from napari_deep_prl._napari.review.lesion_display import LesionDisplay
from napari_deep_prl._napari.review.subject_images import SubjectImages, prepare_subject
from napari_deep_prl._napari.slices import PLANES
from napari_deep_prl._napari.widget_parts import buttons_without_focus, scrolling_column
from napari_deep_prl.ratings.project import Project


class LesionWidget(QWidget):
    """A dock widget that shows one lesion at a time and owns its session's keys."""

    KEYS: tuple[KeyAction, ...] = ()
    #: A lesion was painted on screen: subject, lesion.
    lesion_shown = Signal(str, int)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.board = board(napari_viewer)
        self.project: Project | None = None
        self.display = LesionDisplay(self._load, self)
        self.canvas = self.display.canvas
        self.keys = KeyRouter(self, self.KEYS)
        tips = messages.TOOLTIPS
        self.axis = QComboBox(toolTip=tips["axis"])
        self.axis.addItems(list(PLANES))
        self.axis.currentTextChanged.connect(self.set_axis)
        self.fov = QDoubleSpinBox(minimum=1.5, maximum=10.0, singleStep=0.5, value=3.0,
                                  suffix=" × lesion", toolTip=tips["fov"])
        self.fov.valueChanged.connect(self.canvas.set_fov_factor)
        self.canvas.fov_changed.connect(self.fov.setValue)

    def _load(self, subject: str) -> SubjectImages:  # runs in a worker thread
        assert self.project is not None
        return prepare_subject(self.project, subject)

    def view_rows(self, form: QFormLayout) -> None:
        """Add the plane and field-of-view controls to ``form``."""
        form.addRow("plane", self.axis)
        form.addRow("field of view", self.fov)

    def assemble(self, parts: Iterable[QWidget]) -> None:
        """The canvas on top, the controls (``parts``) scrolling below it; the rater can move
        the divider."""
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.canvas)
        splitter.addWidget(scrolling_column(parts))
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        buttons_without_focus(self)

    def session_bar(self, form: QGroupBox) -> QWidget:
        """A one-line summary that replaces the opening ``form`` while a session is open (the
        lesion's controls then start at the top), with a button to show the form again."""
        self._session_form = form
        self._session_bar = QWidget()
        row = QHBoxLayout(self._session_bar)
        row.setContentsMargins(0, 0, 0, 0)
        self.session_text = QLabel("")
        row.addWidget(self.session_text, 1)
        row.addWidget(QPushButton("change…", clicked=lambda: self.fold_session(False)))
        self._session_bar.setVisible(False)
        return self._session_bar

    def fold_session(self, folded: bool, text: str = "") -> None:
        self._session_form.setVisible(not folded)
        self._session_bar.setVisible(folded)
        self.session_text.setText(text)

    def focus_canvas(self) -> None:
        self.canvas.setFocus()

    # -- view actions (keys and controls) -------------------------------------------------

    def set_axis(self, axis: str) -> None:
        if self.axis.currentText() != axis:
            self.axis.setCurrentText(axis)  # calls back here through the signal
            return
        self.canvas.set_plane(axis)

    def cycle_axis(self) -> None:
        names = list(PLANES)
        self.set_axis(names[(names.index(self.axis.currentText()) + 1) % len(names)])

    def step_slice(self, slices: int) -> None:
        self.canvas.step(slices)

    def toggle_outline(self) -> None:
        self.canvas.set_outlines(not self.canvas.outlines)

    def recentre(self) -> None:
        self.canvas.recentre()

    def reset_windows(self) -> None:
        self.canvas.reset_windows()

    # -- closing --------------------------------------------------------------------------

    def release(self) -> None:
        """Give the keys back, forget the session's blinding and stop listening to workers;
        saved labels need nothing."""
        self.keys.deactivate()
        self.board.close_session(self)
        self.display.close()

    def closeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        self.release()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """Removing the dock widget only unparents this widget: release the keys then too."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.release()
        return super().event(event)
