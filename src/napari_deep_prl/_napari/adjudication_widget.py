"""The adjudicator's dock widget: each disagreement with every rater's label side by side, the
consensus recorded with one key, and the agreement figures kept up to date.

Adjudication is not blind: the adjudicator sees who said what (label, confidence, reason,
comment). The lesion is shown exactly as raters saw it (same view, same patch panel).
"""

from __future__ import annotations

from pathlib import Path

import napari
import pandas as pd
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from napari_deep_prl.errors import DeepPRLError
from napari_deep_prl.project import Project

from . import messages
from .agreement_panel import AgreementPanel
from .keybindings import ADJUDICATION_KEYS, KeyBinder
from .lesion_display import LesionDisplay
from .lesion_widget import LesionWidget
from .patch_panel import PatchPanel
from .review_view import AXES
from .widget_parts import (
    LABEL_NAMES,
    keep_keys_on_canvas,
    key_list,
    open_project_dialog,
    scrolling_column,
)

RATING_COLUMNS = ("rater", "label", "confidence", "reason", "comment")


class AdjudicationWidget(LesionWidget):
    """Dock widget of an adjudication session (see ``docs/adjudicator_guide.md``)."""

    lesion_shown = Signal(str, int)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.project: Project | None = None
        self.adjudicator = ""
        self.queue = pd.DataFrame()
        self.lesions = pd.DataFrame()
        self.index = 0
        self.panel = PatchPanel()
        self.display = LesionDisplay(napari_viewer, self._load, self.panel, self)
        self.display.shown.connect(self._on_shown)
        self.agreement = AgreementPanel()
        self.keys = KeyBinder(self, ADJUDICATION_KEYS)
        self._build()
        self.keys.bind([napari_viewer])

    def _build(self) -> None:
        tips = messages.TOOLTIPS
        self.project_path = QLineEdit(toolTip=tips["project"])
        browse = QPushButton("…", clicked=lambda: open_project_dialog(self, self.project_path))
        self.name = QLineEdit(toolTip=tips["rater"], placeholderText="adjudicator id")
        open_button = QPushButton("Open", clicked=lambda: self.open_project(
            self.project_path.text(), self.name.text()))
        row = QHBoxLayout()
        row.addWidget(self.project_path)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("project", row)
        form.addRow("adjudicator", self.name)
        form.addRow("", open_button)
        session = QGroupBox("Session")
        session.setLayout(form)

        self.where = QLabel("—")
        self.remaining = QLabel("")
        self.ratings = QTableWidget(0, len(RATING_COLUMNS))
        self.ratings.setHorizontalHeaderLabels(list(RATING_COLUMNS))
        self.ratings.setFixedHeight(120)
        self.ratings.verticalHeader().hide()
        self.ratings.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.ratings.horizontalHeader().setStretchLastSection(True)
        self.note = QLineEdit(toolTip=tips["note"], placeholderText="note (optional)")
        self.axis = QComboBox(toolTip=tips["axis"])
        self.axis.addItems(list(AXES))
        self.axis.currentTextChanged.connect(self.set_axis)
        self.saved = QLabel("")
        buttons = QHBoxLayout()
        for text, label in (("PRL (P)", "prl"), ("not PRL (N)", "not_prl"), ("unsure (U)", "unsure")):
            buttons.addWidget(QPushButton(text, clicked=lambda _=False, lab=label: self.decide(lab)))
        moves = QHBoxLayout()
        moves.addWidget(QPushButton("← prev", clicked=self.previous_lesion))
        moves.addWidget(QPushButton("next →", clicked=self.next_lesion))
        self.lesion_box = QGroupBox("Disagreement")
        box = QVBoxLayout(self.lesion_box)
        for item in (self.where, self.remaining, self.ratings, self.panel, self.axis, self.note,
                     buttons, moves, self.saved):
            (box.addLayout if isinstance(item, QHBoxLayout) else box.addWidget)(item)
        self.lesion_box.setEnabled(False)
        stats = QGroupBox("Agreement")
        QVBoxLayout(stats).addWidget(self.agreement)
        keys = QGroupBox("Keys")
        QVBoxLayout(keys).addWidget(key_list(ADJUDICATION_KEYS))
        self.setMaximumWidth(440)
        scrolling_column(self, (session, self.lesion_box, stats, keys))
        keep_keys_on_canvas(self)

    # -- session --------------------------------------------------------------------------

    def open_project(self, path: str | Path, adjudicator: str) -> bool:
        """Open a project's disagreement queue for ``adjudicator``."""
        if not adjudicator.strip():
            show_error(messages.NO_RATER)
            return False
        self.close_project()
        try:
            self.project = Project.open(path)
            self.project.store.add_rater(adjudicator.strip())
        except DeepPRLError as err:
            show_error(messages.OPEN_FAILED.format(path=path, cause=err))
            self.project = None
            return False
        self.adjudicator = adjudicator.strip()
        self.project_path.setText(str(path))
        self.name.setText(self.adjudicator)
        self.lesions = self.project.lesions().set_index("lesion_key")
        self.lesion_box.setEnabled(True)
        self.agreement.project = self.project
        self.agreement.refresh()
        self.index = 0
        self.refresh_queue()
        return True

    def close_project(self) -> None:
        self.display.clear()
        if self.project is not None:
            self.project.close()
        self.project = self.agreement.project = None
        self.lesion_box.setEnabled(False)

    def refresh_queue(self) -> None:
        """Re-read the disagreements (raters may still be rating) and show the current one."""
        self.queue = self.project.adjudication_queue()
        self.index = min(self.index, max(len(self.queue) - 1, 0))
        self._show()

    @property
    def current(self) -> pd.Series | None:
        return None if self.queue.empty else self.queue.iloc[self.index]

    def _show(self) -> None:
        self.note.clear()
        row = self.current
        self.remaining.setText(f"{len(self.queue)} disagreement(s) waiting")
        if row is None:
            self.where.setText(messages.NO_DISAGREEMENTS)
            self.ratings.setRowCount(0)
            return
        subject, lesion = str(row["subject"]), int(row["lesion"])
        self.where.setText(f"{subject} · lesion {lesion} ({self.index + 1} of {len(self.queue)})")
        current = self.project.store.current()
        ratings = current[current["lesion_key"] == row["lesion_key"]]
        self.ratings.setRowCount(len(ratings))
        for i, rating in enumerate(ratings.itertuples()):
            for j, column in enumerate(RATING_COLUMNS):
                value = getattr(rating, column)
                text = "" if value is None or pd.isna(value) else str(value)
                text = LABEL_NAMES.get(text, text) if column == "label" else text
                self.ratings.setItem(i, j, QTableWidgetItem(text.removesuffix(".0")))
        lesion_row = self.lesions.loc[int(row["lesion_key"])]
        self.display.request(subject, lesion, (lesion_row["x"], lesion_row["y"], lesion_row["z"]))

    def _on_shown(self, subject: str, lesion: int) -> None:
        self.keys.bind(self.display.view.keymap_layers)
        self.lesion_shown.emit(subject, lesion)

    # -- the actions the keys call --------------------------------------------------------

    def decide(self, label: str) -> bool:
        """Record ``label`` as the consensus of the current lesion and show the next one."""
        row = self.current
        if self.project is None or row is None:
            return False
        try:
            self.project.record_consensus(str(row["subject"]), int(row["lesion"]), label,
                                          by=self.adjudicator, note=self.note.text().strip() or None)
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return False
        self.saved.setText("✓ " + messages.CONSENSUS_SAVED.format(
            label=LABEL_NAMES[label], subject=row["subject"], lesion=row["lesion"]))
        self.refresh_queue()
        self.agreement.refresh()
        return True

    def next_lesion(self) -> None:
        if self.index < len(self.queue) - 1:
            self.index += 1
            self._show()

    def previous_lesion(self) -> None:
        if self.index > 0:
            self.index -= 1
            self._show()




def dock_adjudication(viewer: napari.Viewer, path: str | Path | None = None,
                      adjudicator: str = "") -> AdjudicationWidget:
    """Dock an adjudication widget, opened on ``path`` when given."""
    widget = AdjudicationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deep-PRL adjudication", area="right")
    if path:
        widget.open_project(path, adjudicator)
    return widget
