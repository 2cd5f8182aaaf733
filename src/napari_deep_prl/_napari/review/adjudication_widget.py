"""The adjudicator's dock widget: each disagreement with every rater's label side by side, the
consensus recorded with one key, decisions revisited and revised, and the agreement figures
kept up to date.

Adjudication is not blind: the adjudicator sees who said what (label, confidence, reason,
comment), except while a rater's blind session is open in the same viewer. The lesion is shown
exactly as raters see it (the same canvas). Decided lesions stay in the list for the session, so
``←`` goes back to them; a new key revises a decision and ``Backspace`` takes it back (every
decision stays in the history).
"""

from __future__ import annotations

from pathlib import Path

import napari
import pandas as pd
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.keybindings import ADJUDICATION_KEYS
from napari_deep_prl._napari.review.agreement_panel import AgreementPanel
from napari_deep_prl._napari.review.lesion_widget import LesionWidget
from napari_deep_prl._napari.widget_parts import (
    LABEL_NAMES,
)
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.ratings.reliability_report import report_project

RATING_COLUMNS = ("rater", "label", "confidence", "reason", "comment")
#: Columns of the second-read list (see ``deep-prl ratings second-reads``).
SECOND_READ_COLUMNS = ("subject", "lesion", "why", "read_by", "expected_change")
#: Where the report is offered first, in the project's exports folder.
REPORT_NAME = "reliability_report.html"


class AdjudicationWidget(LesionWidget):
    """Dock widget of an adjudication session (see ``docs/adjudicator_guide.md``)."""

    KEYS = ADJUDICATION_KEYS

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.adjudicator = ""
        self.queue = pd.DataFrame()
        self.lesions = pd.DataFrame()
        #: Lesions decided during this session: they stay in the list to be revisited.
        self.visited: set[int] = set()
        self.index = 0
        self.agreement = AgreementPanel()
        #: The worker writing the reliability report, while it runs.
        self.report_worker: FunctionWorker | None = None
        self.display.shown.connect(self.lesion_shown)
        self.board.blinding_changed.connect(self._apply_blinding)
        self._build()

    def _build(self) -> None:
        tips = messages.TOOLTIPS
        self.name = QLineEdit(toolTip=tips["rater"], placeholderText="adjudicator id")
        session = self.session_form((("adjudicator", self.name),),
                                    lambda: self.open_project(self.project_path.text(), self.name.text()))
        self.remaining = QLabel("")
        self.decision = QLabel("")
        self.decision.setWordWrap(True)
        self.all_decided = QCheckBox("also list lesions decided before", toolTip=tips["decided"])
        self.all_decided.toggled.connect(lambda _: self.refresh_queue())
        self.ratings = QTableWidget(0, len(RATING_COLUMNS))
        self.ratings.setHorizontalHeaderLabels(list(RATING_COLUMNS))
        self.ratings.setFixedHeight(120)
        self.ratings.verticalHeader().hide()
        self.ratings.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.ratings.horizontalHeader().setStretchLastSection(True)
        self.hidden = QLabel(messages.LABELS_HIDDEN)
        self.hidden.setWordWrap(True)
        self.note = QLineEdit(toolTip=tips["note"], placeholderText="note (optional)")
        view_form = QFormLayout()
        self.view_rows(view_form)
        lesion = self.lesion_group("Disagreement", (
            self.where, self.part, self.remaining, self.all_decided, self.decision, self.ratings, self.hidden,
            self.evidence,
            view_form,
            self.note, self.label_buttons(QPushButton("take back (⌫)", clicked=self.retract)), self.move_buttons(),
            self.saved))
        self.stats = QGroupBox("Agreement")
        self.report_button = QPushButton("Reliability report…", toolTip=tips["report"],
                                         clicked=self.choose_report)
        self.report_status = QLabel("")
        self.report_status.setWordWrap(True)
        self.second_reads = QTableWidget(0, len(SECOND_READ_COLUMNS),
                                         toolTip=tips["second_reads"])
        self.second_reads.setHorizontalHeaderLabels(list(SECOND_READ_COLUMNS))
        self.second_reads.setFixedHeight(140)
        self.second_reads.verticalHeader().hide()
        self.second_reads.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        stats = QVBoxLayout(self.stats)
        for widget in (self.agreement, QLabel("Worth another read (most useful first):"),
                       self.second_reads, self.report_button, self.report_status):
            stats.addWidget(widget)
        self.assemble((self.session_bar(session), session, lesion, self.stats))
        self._apply_blinding()

    # -- session --------------------------------------------------------------------------

    def open_project(self, path: str | Path, adjudicator: str) -> bool:
        """Open a project's disagreement queue for ``adjudicator``."""
        project = self.open_folder(path, adjudicator)
        if project is None:
            return False
        try:
            project.store.add_rater(adjudicator.strip())
        except DeepPRLError as err:
            project.close()
            show_error(messages.OPEN_FAILED.format(path=path, cause=err))
            return False
        self.adjudicator = adjudicator.strip()
        self.name.setText(self.adjudicator)
        self.lesions = project.lesions().set_index("lesion_key")
        self.start_session(project, path, f"adjudicator {self.adjudicator} · {project.root.name}")
        self.agreement.project = project
        self.refresh_stats()
        self.visited.clear()
        self.index = 0
        self.refresh_queue()
        return True

    def close_project(self) -> None:
        super().close_project()
        self.agreement.project = None

    # -- the reliability report -----------------------------------------------------------

    def choose_report(self) -> None:
        """Ask where to write the reliability report, then write it in the background."""
        if self.project is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Write the reliability report",
                                              str(self.project.exports_dir / REPORT_NAME),
                                              "HTML (*.html)")
        if path:
            self.write_report(path)

    def write_report(self, path: str | Path) -> None:
        """Write the project's reliability report to ``path`` in a worker, with the function
        ``deep-prl ratings report`` calls (it reads a snapshot of the store)."""
        if self.project is None or self.report_worker is not None:
            return
        self.report_button.setEnabled(False)
        self.report_status.setText(messages.REPORT_WRITING.format(path=path))
        worker = create_worker(report_project, self.project.root, path, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(self._report_written)
        worker.errored.connect(self._report_failed)
        worker.finished.connect(self._report_finished)
        self.report_worker = worker
        worker.start()

    def _report_written(self, path: Path) -> None:
        self.report_status.setText(messages.REPORT_WRITTEN.format(path=path))
        show_info(messages.REPORT_WRITTEN.format(path=path))

    def _report_failed(self, err: Exception) -> None:
        self.report_status.setText("")
        show_error(messages.REPORT_FAILED.format(cause=err))

    def _report_finished(self) -> None:
        self.report_worker = None
        self.report_button.setEnabled(True)

    def refresh_stats(self) -> None:
        """Re-compute the agreement figures (in the background) and the second-read list."""
        self.agreement.refresh()
        table = self.project.second_reads()
        self.second_reads.setRowCount(len(table))
        for i, row in enumerate(table[list(SECOND_READ_COLUMNS)].itertuples(index=False)):
            for j, value in enumerate(row):
                text = f"{value:.3f}" if isinstance(value, float) else str(value)
                self.second_reads.setItem(i, j, QTableWidgetItem(text))

    def refresh_queue(self, keep: int | None = None) -> None:
        """Re-read the disagreements (raters may still be rating) and show lesion ``keep`` (a
        lesion key), else the one at the same place in the list."""
        if self.project is None:
            return
        if keep is None and self.current is not None:
            keep = int(self.current["lesion_key"])
        table = self.project.adjudication_queue(decided=True)
        listed = table["pending"] | table["lesion_key"].isin(list(self.visited))
        if self.all_decided.isChecked():
            listed |= table["consensus"].notna()
        self.queue = table[listed].reset_index(drop=True)
        hits = self.queue.index[self.queue["lesion_key"] == keep]
        self.index = int(hits[0]) if len(hits) else min(self.index, max(len(self.queue) - 1, 0))
        self._show()

    @property
    def current(self) -> pd.Series | None:
        if self.queue.empty or self.index >= len(self.queue):
            return None
        return self.queue.iloc[self.index]

    def _show(self) -> None:
        self.note.clear()
        row = self.current
        waiting = int(self.queue["pending"].sum()) if len(self.queue) else 0
        self.remaining.setText(messages.WAITING.format(count=waiting))
        if row is None:
            self.where.setText(messages.NO_DISAGREEMENTS)
            self.decision.setText("")
            self.ratings.setRowCount(0)
            self.display.clear()
            return
        subject, lesion = str(row["subject"]), int(row["lesion"])
        self.where.setText(f"{subject} · lesion {lesion} ({self.index + 1} of {len(self.queue)})")
        self.decision.setText("" if pd.isna(row["consensus"]) else messages.DECIDED.format(
            label=LABEL_NAMES[row["consensus"]], by=row["decided_by"],
            note=f" ({row['note']})" if isinstance(row["note"], str) and row["note"] else ""))
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

    def _apply_blinding(self) -> None:
        """While a rater's blind session is open in this viewer, no rater's label is shown."""
        hide = self.board.hide_labels
        self.ratings.setVisible(not hide)
        self.stats.setVisible(not hide)
        self.hidden.setVisible(hide)

    def _on_screen(self) -> pd.Series | None:
        """The current lesion if it is painted on screen (keys act only on what was seen)."""
        row = self.current
        if row is None or self.project is None:
            return None
        return row if self.seen(str(row["subject"]), int(row["lesion"])) else None

    # -- the actions the keys call --------------------------------------------------------

    def decide(self, label: str) -> bool:
        """Record ``label`` as the consensus of the lesion on screen (a new decision revises an
        earlier one) and go to the next lesion waiting."""
        row = self._on_screen()
        if row is None:
            return False
        try:
            self.project.record_consensus(str(row["subject"]), int(row["lesion"]), label,
                                          by=self.adjudicator, note=self.note.text().strip() or None)
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return False
        self.saved.setText("✓ " + messages.CONSENSUS_SAVED.format(
            label=LABEL_NAMES[label], subject=row["subject"], lesion=row["lesion"]))
        self.visited.add(int(row["lesion_key"]))
        self.refresh_queue(keep=self._next_waiting(int(row["lesion_key"])))
        self.refresh_stats()
        return True

    def retract(self) -> bool:
        """Take back the decision of the lesion on screen: it waits for adjudication again."""
        row = self._on_screen()
        if row is None:
            return False
        try:
            retracted = self.project.retract_consensus(str(row["subject"]), int(row["lesion"]),
                                                       by=self.adjudicator)
        except DeepPRLError as err:
            show_error(messages.SAVE_FAILED.format(cause=err))
            return False
        self.saved.setText(messages.NOTHING_TO_RETRACT if retracted is None else
                           messages.RETRACTED.format(subject=row["subject"], lesion=row["lesion"]))
        self.refresh_queue(keep=int(row["lesion_key"]))
        self.refresh_stats()
        return retracted is not None

    def _next_waiting(self, key: int) -> int:
        """The lesion key to show after deciding ``key``: the next one still waiting in the
        list (wrapping round), else ``key`` itself."""
        keys = self.queue["lesion_key"].tolist()
        waiting = self.queue["pending"].tolist()
        start = keys.index(key)
        for step in range(1, len(keys)):
            i = (start + step) % len(keys)
            if waiting[i] and keys[i] != key:
                return int(keys[i])
        return key

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
