"""Agreement summary for the adjudicator: kappa per rater pair, Fleiss' kappa, each rater
against consensus, and a small confusion matrix of the chosen pair.

The figures are computed in a worker (the bootstrap CI takes a moment on a large cohort) and
redrawn when it returns; a request while one runs is queued, so the panel settles on the latest
state without piling up threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np
import pandas as pd
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from napari_deep_prl._napari import messages
from napari_deep_prl.ratings import agreement
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.schema import LABELS

#: Bootstrap resamples for the kappa CI shown live (the CLI report uses the full default).
N_BOOT = 200


@dataclass(frozen=True)
class Summary:
    pairs: pd.DataFrame
    vs_consensus: pd.DataFrame
    wide: pd.DataFrame
    raters: list[str]


def compute_summary(project: Project) -> Summary:
    """Every figure of the panel (runs in a worker thread)."""
    current = project.store.current()
    raters = sorted(current["rater"].unique())
    if len(raters) < 2:
        empty = pd.DataFrame()
        return Summary(empty, empty, empty, raters)
    return Summary(agreement.agreement_table(current, n_boot=N_BOOT),
                   agreement.rater_vs_consensus(current, project.consensus()),
                   agreement.wide_labels(current), raters)


def _fmt(value: float) -> str:
    return escape(agreement.describe_estimate(value))


def summary_html(summary: Summary) -> str:
    """The kappa and sensitivity tables as compact HTML; a figure that cannot be computed
    reads n/a with the reason, as in the CLI."""
    if summary.pairs.empty:
        return "Agreement needs ratings from at least two raters."
    rows = []
    for row in summary.pairs.itertuples():
        if row.rater_a == "all":
            fleiss = agreement.describe_estimate(row.fleiss_kappa, note=row.note)
            rows.append(f"<tr><td>all raters</td><td>{row.n}</td><td>{_fmt(row.percent_agreement)}"
                        f"</td><td>Fleiss {escape(fleiss)}</td></tr>")
        else:
            kappa = agreement.describe_estimate(row.cohen_kappa, row.cohen_kappa_ci_low,
                                                row.cohen_kappa_ci_high, row.note)
            rows.append(f"<tr><td>{escape(row.rater_a)} – {escape(row.rater_b)}</td>"
                        f"<td>{row.n}</td><td>{_fmt(row.percent_agreement)}</td>"
                        f"<td>{escape(kappa)}</td></tr>")
    text = ("<table><tr><th align=left>raters</th><th>n</th><th>agree</th><th>kappa [95% CI]</th>"
            "</tr>" + "".join(rows) + "</table>")
    if not summary.vs_consensus.empty:
        text += ("<br><table><tr><th align=left>vs consensus</th><th>n</th><th>sens</th>"
                 "<th>spec</th></tr>" + "".join(
                     f"<tr><td>{escape(r.rater)}</td><td>{r.n}</td><td>{_fmt(r.sensitivity)}</td>"
                     f"<td>{_fmt(r.specificity)}</td></tr>"
                     for r in summary.vs_consensus.itertuples()) + "</table>")
    return text


class AgreementPanel(QWidget):
    """Tables and a confusion matrix plot; :meth:`refresh` recomputes them in the background."""

    #: The figures on screen were updated.
    updated = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.summary: Summary | None = None
        self.worker = None
        self._again = False
        self.table = QLabel("")
        self.pair = QComboBox(toolTip=messages.TOOLTIPS["pair"])
        self.pair.currentIndexChanged.connect(lambda _: self.draw_confusion())
        self.figure = Figure(figsize=(2.6, 2.3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.table, self.pair, self.canvas):
            layout.addWidget(widget)

    def refresh(self) -> None:
        """Recompute in a worker; if one is running, once more after it."""
        if self.project is None:
            return
        if self.worker is not None:
            self._again = True
            return
        self.worker = create_worker(compute_summary, self.project, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.returned.connect(self._show)
        self.worker.errored.connect(lambda err: show_error(messages.STATS_FAILED.format(cause=err)))
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _finished(self) -> None:
        self.worker = None
        if self._again:
            self._again = False
            self.refresh()

    def _show(self, summary: Summary) -> None:
        self.summary = summary
        self.table.setText(summary_html(summary))
        pairs = [f"{a} vs {b}" for i, a in enumerate(summary.raters) for b in summary.raters[i + 1:]]
        chosen = self.pair.currentText()
        self.pair.blockSignals(True)
        self.pair.clear()
        self.pair.addItems(pairs)
        if chosen in pairs:
            self.pair.setCurrentText(chosen)
        self.pair.blockSignals(False)
        self.draw_confusion()
        self.updated.emit()

    def confusion(self) -> tuple[str, str, np.ndarray] | None:
        """The chosen pair's confusion matrix on the lesions both rated."""
        if self.summary is None or not self.pair.currentText():
            return None
        a, b = self.pair.currentText().split(" vs ")
        both = self.summary.wide.dropna(subset=[a, b])
        return a, b, agreement.confusion(both[a], both[b], LABELS)

    def draw_confusion(self) -> None:
        self.figure.clear()
        found = self.confusion()
        if found is not None:
            a, b, matrix = found
            ax = self.figure.add_subplot()
            ax.imshow(matrix, cmap="Blues")
            names = ["PRL", "not", "unsure"]
            ax.set_xticks(range(3), names, fontsize=7)
            ax.set_yticks(range(3), names, fontsize=7)
            ax.set_xlabel(b, fontsize=8)
            ax.set_ylabel(a, fontsize=8)
            for (i, j), count in np.ndenumerate(matrix):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if count > matrix.max() / 2 else "black")
        self.canvas.draw_idle()
