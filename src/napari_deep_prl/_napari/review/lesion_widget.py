"""What the review and adjudication widgets share: the lesion canvas above the controls, the
session form (project folder, the user's id, Open) that folds into a one-line bar, the label
buttons, the moves, the view controls, and keys that belong to the open session and act only on
a lesion painted on screen.

A subclass sets ``KEYS``, builds its controls from these parts and lays them out with
:meth:`assemble`; its project is ``self.project``. The canvas is the widget's own (napari's
layers and grid are never touched), so docking or closing a review changes nothing in the viewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import napari
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
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
from napari_deep_prl._napari.widget_parts import (
    LABEL_NAMES,
    buttons_without_focus,
    key_list,
    open_project_dialog,
    scrolling_column,
)
from napari_deep_prl.base.errors import DeepPRLError
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
        #: Where the session is: the lesion on screen, or that none is left.
        self.where = QLabel("—")
        #: What the last action did (saved, undone, ignored ...).
        self.saved = QLabel("")
        self.saved.setWordWrap(True)
        #: Which part of a split confluent component the lesion on screen is (hidden otherwise).
        self.part = QLabel("", toolTip=tips["part"], visible=False)
        self.display.shown.connect(self.show_part)
        #: The rim evidence of the lesion on screen, unless a blind session hides it.
        self.evidence = QLabel("", toolTip=tips["evidence"], wordWrap=True, visible=False)
        self.display.shown.connect(self.show_evidence)
        self.board.blinding_changed.connect(self.show_evidence)

    def _load(self, subject: str) -> SubjectImages:  # runs in a worker thread
        assert self.project is not None
        return prepare_subject(self.project, subject)

    # -- the parts of the form ------------------------------------------------------------

    def session_form(self, rows: Iterable[tuple[str, QWidget]], open_form: Callable[[], object]) -> QGroupBox:
        """The opening form: the project folder (typed, or chosen with …), ``rows`` (the user's
        id and the widget's own choices) and **Open**, which calls ``open_form``."""
        self.project_path = QLineEdit(toolTip=messages.TOOLTIPS["project"])
        path_row = QHBoxLayout()
        path_row.addWidget(self.project_path)
        path_row.addWidget(QPushButton("…", clicked=lambda: open_project_dialog(self, self.project_path)))
        form = QFormLayout()
        form.addRow("project", path_row)
        for label, widget in rows:
            form.addRow(label, widget)
        self.open_button = QPushButton("Open", clicked=open_form)
        form.addRow("", self.open_button)
        box = QGroupBox("Session")
        box.setLayout(form)
        return box

    def label_buttons(self, *extra: QPushButton) -> QHBoxLayout:
        """A button for each label key (PRL, not PRL, unsure), calling what the key calls; then ``extra``."""
        row = QHBoxLayout()
        for action in self.KEYS:
            if action.args and action.args[0] in LABEL_NAMES:
                row.addWidget(QPushButton(f"{LABEL_NAMES[action.args[0]]} ({action.key_text})",
                                          clicked=lambda _=False, a=action: getattr(self, a.method)(*a.args)))
        for button in extra:
            row.addWidget(button)
        return row

    def move_buttons(self, *extra: QPushButton) -> QHBoxLayout:
        """← prev and next →, then ``extra``."""
        row = QHBoxLayout()
        row.addWidget(QPushButton("← prev", clicked=self.previous_lesion))
        row.addWidget(QPushButton("next →", clicked=self.next_lesion))
        for button in extra:
            row.addWidget(button)
        return row

    def view_rows(self, form: QFormLayout) -> None:
        """Add the plane and field-of-view controls to ``form``."""
        form.addRow("plane", self.axis)
        form.addRow("field of view", self.fov)

    def lesion_group(self, title: str, parts: Iterable[QWidget | QLayout]) -> QGroupBox:
        """The controls of the lesion on screen (``parts`` top to bottom), usable while a
        session is open."""
        self.lesion_box = QGroupBox(title)
        column = QVBoxLayout(self.lesion_box)
        for part in parts:
            (column.addLayout if isinstance(part, QLayout) else column.addWidget)(part)
        self.lesion_box.setEnabled(False)
        return self.lesion_box

    def assemble(self, parts: Iterable[QWidget]) -> None:
        """The canvas on top, the controls (``parts``, then the key list) scrolling below it; the
        rater can move the divider."""
        keys = QGroupBox("Keys")
        QVBoxLayout(keys).addWidget(key_list(self.KEYS))
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.canvas)
        splitter.addWidget(scrolling_column((*parts, keys)))
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

    # -- opening and closing a session ----------------------------------------------------

    def open_folder(self, path: str | Path, user: str) -> Project | None:
        """Close the open session, then open the project at ``path`` for ``user``; on failure
        say why and return ``None``."""
        if not user.strip():
            show_error(messages.NO_RATER)
            return None
        self.close_project()
        try:
            return Project.open(path)
        except DeepPRLError as err:
            show_error(messages.OPEN_FAILED.format(path=path, cause=err))
            return None

    def start_session(self, project: Project, path: str | Path, summary: str) -> None:
        """``project`` (opened from ``path``) is the session's: the lesion controls and the keys
        work, and the form folds into the bar saying ``summary``."""
        self.project = project
        self.project_path.setText(str(path))
        self.canvas.set_panels(project.config.review.panels)
        self.lesion_box.setEnabled(True)
        self.fold_session(True, summary)
        self.keys.activate()

    def close_project(self) -> None:
        """Forget the session (every label is already saved) and give the keys back."""
        self.display.clear()
        self.keys.deactivate()
        self.board.close_session(self)
        if self.project is not None:
            self.project.close()
        self.project = None
        self.lesion_box.setEnabled(False)
        self.fold_session(False)

    def seen(self, subject: str, lesion: int) -> bool:
        """The lesion is painted on screen; if not, the user is told the key was ignored (keys
        act only on lesions the user has seen)."""
        if self.display.is_drawn(subject, lesion):
            return True
        self.saved.setText(messages.NOT_ON_SCREEN)
        return False

    def show_part(self) -> None:
        """Say which part of its confluent component the lesion on screen is, if it is one."""
        target = self.display.target
        images = None if target is None else self.display.cache.get(target[0])
        part = None if images is None else images.parts.get(target[1])
        self.part.setVisible(part is not None)
        self.part.setText("" if part is None else messages.PART.format(
            index=part.index, component=part.component, count=len(part.parts)))

    def show_evidence(self) -> None:
        """The rim evidence of the lesion on screen (:mod:`napari_deep_prl.data.evidence`; measured
        when shown, in milliseconds), hidden like model scores while a blind session is open in
        this viewer: it reads the images as a rater would, and a rater labels before seeing another
        reading."""
        target = self.display.target
        images = None if target is None else self.display.cache.get(target[0])
        row = None if images is None or self.board.hide_scores else images.evidence(target[1])
        self.evidence.setVisible(row is not None)
        if row is not None:
            coverage = row["rim_coverage"]
            self.evidence.setText(messages.EVIDENCE.format(
                coverage=messages.EVIDENCE_NONE if math.isnan(coverage) else f"{coverage:.0%}",
                slices=int(row["rim_slices"]), diameter=row["diameter_mm"]))

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
