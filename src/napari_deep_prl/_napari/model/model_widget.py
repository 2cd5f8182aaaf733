"""The model panel: load a model, score a subject or a whole project, see the scores.

The model is a checkpoint (an ensemble file) or an ONNX file written by ``deep-prl export``,
which scores alike (:mod:`napari_deep_prl.model.backend`); saliency, fine-tuning and
recalibration need the checkpoint, and say so when an ONNX model is loaded.

Scoring runs in a worker thread (:class:`~.jobs.Job`) with a progress bar and Cancel. A project's
scores are stored as predictions under the model version (so nothing is scored twice); a
subject opened without a project (files or the sample data) is scored from its layers and only
shown. Results: a points layer at the lesion centres coloured by PRL probability (legend under
the buttons), a sortable table whose rows move the viewer to the lesion, the subject's PRL count
and the project's counts; **Score a clicked lesion** outlines and scores lesions clicked in the
viewer (:mod:`.click_box`). **Decide** calls a project's lesions PRL each at the model's
threshold, or all scored lesions together (:func:`~napari_deep_prl.scoring.project.project_scores`).
Both buttons score as ``deep-prl score`` does (:func:`~napari_deep_prl.scoring.score.score_subject`).
In blind mode none of the scores is shown. The fine-tuning box below trains new versions; the
recalibration box under it recalibrates the model for the project's site.

The project, the model in use and the running job are a
:class:`~.model_state.ModelState` that this panel and the fine-tuning box share and listen to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import napari
import numpy as np
import pandas as pd
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_deep_prl._napari.board import board
from napari_deep_prl._napari.jobs import Job
from napari_deep_prl._napari.layers import subject_layers
from napari_deep_prl._napari.messages import NO_LESIONS, SALIENCY_NEEDS, SCORES_HIDDEN, TOOLTIPS
from napari_deep_prl._napari.model.click_box import ClickBox
from napari_deep_prl._napari.model.finetune_widget import FinetuneBox
from napari_deep_prl._napari.model.model_state import ModelState
from napari_deep_prl._napari.model.model_text import describe_model
from napari_deep_prl._napari.model.recalibrate_box import RecalibrateBox
from napari_deep_prl._napari.model.scoring_table import (
    ColourBar,
    ScoringTable,
    go_to,
    kept_selection,
    remove_saliency,
    show_points,
    show_saliency,
)
from napari_deep_prl._napari.widget_parts import scrolling_column
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.contrasts import STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.data.evidence import rim_evidence
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.model.backend import Model
from napari_deep_prl.model.backend import load_model as load_model_file
from napari_deep_prl.model.saliency import Saliency, lesion_saliency
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.scoring.project import model_version, project_scores, score_project
from napari_deep_prl.scoring.score import score_subject

#: Subject-combo entry that scores the subject shown in the viewer (no project needed).
FROM_VIEWER = "(subject in the viewer)"
DECISION_NAMES = {"each lesion at the model's threshold": "validation",
                  "the project's scored lesions together": "expected_f1"}


def subject_from_layers(viewer: napari.Viewer, subject: str | None = None, *, lesions: bool = True) -> Subject:
    """The subject whose images (a susceptibility image and the structural ones, layers named by
    contrast) and lesion layer are in the viewer (reader/sample): the first one, or the one
    named ``subject``; scoring then takes the contrasts its model needs. Without ``lesions`` a
    missing lesion layer is an empty mask (lesions are then clicked)."""
    by_role: dict[str, napari.layers.Layer] = {}
    for layer in viewer.layers:
        for role in (*SUSCEPTIBILITY, *STRUCTURAL, "lesions"):
            if layer.name.endswith(f" {role}") and layer.metadata.get("subject", None) is not None \
                    and subject in (None, layer.metadata["subject"]):
                by_role.setdefault(role, layer)
    susceptibility = [r for r in SUSCEPTIBILITY if r in by_role]
    missing = ([] if susceptibility else [" or ".join(SUSCEPTIBILITY)]) + [
        r for r in ("lesions",) if lesions and r not in by_role]
    if not missing and not any(r in by_role for r in STRUCTURAL):
        missing = [" or ".join(STRUCTURAL)]
    if missing:
        raise DeepPRLError(f"the viewer has no {', '.join(missing)} layer of a subject. Open a "
                           "subject (File > Open, or File > Open Sample > Deep-PRL) first.")
    first = by_role[susceptibility[0]]
    images = {role: np.asarray(layer.data, np.float32) for role, layer in by_role.items()
              if role in (susceptibility[0], *STRUCTURAL)}
    mask = (np.asarray(by_role["lesions"].data, np.int32) if "lesions" in by_role
            else np.zeros(first.data.shape, np.int32))
    return Subject(str(first.metadata["subject"]), images, mask, first.affine.affine_matrix)


def score_loaded(subject: Subject, checkpoints: Model) -> Generator[Progress, None, pd.DataFrame]:
    """Score a subject already in memory, as a (one-step) progress generator for a worker."""
    yield Progress(0, 1, "subject", subject.subject)
    table = score_subject(subject, checkpoints)
    yield Progress(1, 1, "subject", subject.subject)
    return table


class ModelPanel(QWidget):
    """Dock widget: model, scoring, results, fine-tuning."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = ModelState()
        #: The subject's scores on show.
        self.scores = pd.DataFrame()
        self._affines: dict[str, np.ndarray] = {}
        #: Model version of the project's scores on show (None: no project scores shown).
        self._version: str | None = None
        #: The lesion selected in the table: subject, lesion.
        self._selected: tuple[str, int] | None = None

        self.open_button = QPushButton("Open project…")
        self.project_label = QLabel("no project: scoring the subject in the viewer")
        self.load_button = QPushButton("Load model…")
        self.model_info = QLabel("no model loaded")
        self.model_info.setWordWrap(True)
        self.subject = QComboBox()
        self.subject.addItem(FROM_VIEWER)
        self.decision = QComboBox()
        self.decision.addItems(DECISION_NAMES)
        self.score_button = QPushButton("Score subject")
        self.score_all_button = QPushButton("Score project")
        self.cancel_button = QPushButton("Cancel")
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.blind = QCheckBox("Blind rater mode (hide scores)")
        self.hidden = QLabel(SCORES_HIDDEN)
        self.hidden.setWordWrap(True)
        self.board = board(napari_viewer)
        self.board.blinding_changed.connect(self._follow_board)
        self.count = QLabel("")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.colour_bar = ColourBar()
        self.table = ScoringTable()
        self.saliency_button = QPushButton("Saliency of the selected lesion")
        self.finetune = FinetuneBox(self.state)
        self.recalibrate = RecalibrateBox(self.state)
        self.clicks = ClickBox(napari_viewer, lambda: subject_from_layers(self.viewer, lesions=False),
                               self.score_in_memory)
        for name, widget in (("open", self.open_button), ("load", self.load_button),
                             ("score", self.score_button),
                             ("score_all", self.score_all_button), ("blind", self.blind),
                             ("decision", self.decision), ("saliency", self.saliency_button)):
            widget.setToolTip(TOOLTIPS[name])

        form = QFormLayout()
        form.addRow(self.open_button, self.project_label)
        form.addRow(self.load_button, self.model_info)
        form.addRow("Subject", self.subject)
        form.addRow("Decide", self.decision)
        buttons = QHBoxLayout()
        for button in (self.score_button, self.score_all_button, self.cancel_button):
            buttons.addWidget(button)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.clicks)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scrolling_column((controls, self.bar, self.blind, self.hidden, self.count,
                                           self.summary, self.colour_bar, self.table,
                                           self.saliency_button, self.finetune, self.recalibrate)))

        self.open_button.clicked.connect(self._choose_project)
        self.load_button.clicked.connect(self._choose_model)
        self.score_button.clicked.connect(self.score_subject)
        self.score_all_button.clicked.connect(self.score_project)
        self.saliency_button.clicked.connect(self.show_saliency)
        self.cancel_button.clicked.connect(self.state.cancel)
        self.blind.toggled.connect(self.set_blind)
        self.decision.currentTextChanged.connect(self.decide)
        self.table.lesion_selected.connect(self._go_to_lesion)
        self.state.project_changed.connect(self._show_project)
        self.state.model_changed.connect(self._show_model)
        self.state.busy_changed.connect(self._enable)
        self.state.scores_stored.connect(self._announce_scores)
        self._enable()
        self._follow_board()

    # -- inputs ---------------------------------------------------------------------------

    def _choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Deep-PRL project")
        if folder:
            self.open_project(folder)

    def _choose_model(self) -> None:
        start = str(self.state.project.models_dir) if self.state.project else ""
        path, _ = QFileDialog.getOpenFileName(self, "Load a Deep-PRL model", start,
                                              "Deep-PRL models (*.pt *.onnx)")
        if path:
            self.load_model(path)

    def open_project(self, folder: str | Path) -> None:
        """Open a project: its subjects become choosable and scores are stored in it."""
        try:
            self.state.open_project(Project.open(folder))
        except DeepPRLError as err:
            show_error(str(err))

    def _show_project(self) -> None:
        project = self.state.project
        self.project_label.setText(str(project.root))
        self.subject.clear()
        self.subject.addItems([FROM_VIEWER, *project.cohort.ids])
        self.subject.setCurrentIndex(1 if project.cohort.ids else 0)
        self._forget_project_scores()
        self._enable()

    def load_model(self, path: str | Path) -> None:
        """Load a checkpoint or ensemble (safely, weights only) or an exported ONNX model, and show
        what it was trained on."""
        try:
            self.state.use_model(load_model_file(path), Path(path))
        except DeepPRLError as err:
            show_error(str(err))

    def _show_model(self) -> None:
        self.model_info.setText(describe_model(self.state.model, self.state.path))
        self._forget_project_scores()
        self._enable()


    @property
    def decision_name(self) -> str:
        return DECISION_NAMES[self.decision.currentText()]

    # -- scoring --------------------------------------------------------------------------

    def score_subject(self) -> Job | None:
        """Score the chosen subject in a worker (a project's subject is also stored)."""
        name = self.subject.currentText()
        if name == FROM_VIEWER or self.state.project is None:
            try:
                subject = subject_from_layers(self.viewer)
            except DeepPRLError as err:
                show_error(str(err))
                return None
            if not subject.mask.any():
                show_error(NO_LESIONS.format(subject=subject.subject))
                return None
            return self.score_in_memory(subject)
        return self._score_stored([name], f"Scoring {name}")

    def score_in_memory(self, subject: Subject) -> Job | None:
        """Score a subject in memory (the viewer's, or its clicked lesions) and show the scores."""
        if self.state.busy:
            show_error("Wait for the running job to finish (or cancel it), then score again.")
            return None
        self._affines[subject.subject] = subject.affine
        checkpoints = self.state.model
        return self._start(lambda stop: score_loaded(subject, checkpoints),
                           f"Scoring {subject.subject}", self._show_loaded_scores)

    def score_project(self) -> Job | None:
        """Score every subject of the project (scores already stored are reused)."""
        if self.state.project is None:
            show_error("Open a project first to score all its subjects.")
            return None
        return self._score_stored(None, "Scoring the project")

    def _score_stored(self, subjects: list[str] | None, description: str) -> Job | None:
        project, checkpoints = self.state.project, self.state.model

        def run(stop: threading.Event) -> Generator[Progress, None, tuple[Subject, pd.DataFrame, str]]:
            stored = yield from score_project(project, checkpoints, subjects=subjects, stop=stop)
            shown = subjects[0] if subjects else project.cohort.ids[0]
            loaded = project.load_subject(shown)
            mine = stored.loc[stored["subject"] == shown, ["lesion", "prl_probability", "uncertainty_sd", "bald"]]
            table = find_lesions(loaded).table.merge(mine, on="lesion", how="left").merge(
                rim_evidence(loaded), on="lesion", how="left")  # evidence: measured, not stored
            return loaded, table, model_version(checkpoints)

        return self._start(run, description, self._show_project_scores)

    def _start(self, make: Callable[[threading.Event], Generator[Progress, None, Any]],
               description: str, on_result: Callable[[Any], None]) -> Job | None:
        if not self.state.loaded:
            show_error("Load a model first (Load model…).")
            return None
        return self.state.run(Job(make, description=description, bar=self.bar,
                                  stages=("subjects", "subject"), on_result=on_result))

    def _show_loaded_scores(self, table: pd.DataFrame) -> None:
        self._forget_project_scores()
        self._show_subject_scores(table)
        show_info(f"Scored {len(table)} lesions of {table['subject'].iloc[0] if len(table) else '?'}.")

    def _show_project_scores(self, result: tuple[Subject, pd.DataFrame, str]) -> None:
        subject, table, version = result
        if not any(layer.metadata.get("subject") == subject.subject for layer in self.viewer.layers
                   if layer.name.endswith(" phase")):
            with kept_selection(self.viewer):
                for data, kwargs, kind in subject_layers(subject):
                    getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self._affines[subject.subject] = subject.affine
        self._version, self.scores = version, table
        self.decide()
        self.state.announce_scores(version)
        show_info(f"Scored {len(table)} lesions of {subject.subject}.")

    def decide(self) -> None:
        """Call the project's scored lesions PRL as **Decide** says; show the counts (no scoring)."""
        project = self.state.project
        if project is None or self._version is None:
            return
        try:
            decided = project_scores(project, self.state.model, self._version, self.decision_name)
        except DeepPRLError as err:
            show_error(str(err))
            self.decision.setCurrentIndex(0)  # re-enters with the model's threshold
            return
        counts = decided.subjects
        self.summary.setText(
            f"project, {len(counts)} of {len(project.cohort.ids)} subjects scored: "
            f"{int(counts['prl_count'].sum())} PRL(s) of {int(counts['lesions'].sum())} lesions; "
            f"{int(counts['prl_ge1'].sum())} subject(s) with ≥ 1 PRL, {int(counts['prl_ge4'].sum())} "
            f"with ≥ 4 · cut {decided.threshold:.2f}")
        self._show_subject_scores(self.scores.assign(prl=self.scores["prl_probability"] >= decided.threshold))

    def _forget_project_scores(self) -> None:
        self._version = None
        self.summary.setText("")

    def _show_subject_scores(self, table: pd.DataFrame) -> None:
        table = table.assign(prl=table["prl"].astype(bool))  # the table says yes / no, however decided
        self.scores = table
        subject = str(table["subject"].iloc[0]) if len(table) else ""
        self.table.set_scores(table)
        self.count.setText(f"{subject}: {int(table['prl'].sum())} PRL(s) of {len(table)} lesions")
        self.set_blind(self.blind.isChecked())  # draws the points layer, blind or not

    def show_saliency(self) -> Job | None:
        """Overlay where the network looks on the selected lesion's patch
        (:func:`~napari_deep_prl.model.saliency.lesion_saliency`): model output, so not in blind mode."""
        if self._selected is None or self.blind.isChecked() or self.board.hide_scores:
            show_error(SALIENCY_NEEDS)
            return None
        name, lesion = self._selected
        try:
            checkpoints = self.state.pytorch("saliency maps")
            subject = subject_from_layers(self.viewer, name)
        except DeepPRLError as err:
            show_error(str(err))
            return None

        def run(stop: threading.Event) -> Generator[Progress, None, tuple[Subject, int, Saliency]]:
            yield Progress(0, 1, "subject", name)
            return subject, lesion, lesion_saliency(checkpoints, subject, find_lesions(subject), lesion)

        return self._start(run, f"Saliency of {name} lesion {lesion}", self._add_saliency)

    def _add_saliency(self, result: tuple[Subject, int, Saliency]) -> None:
        if not (self.blind.isChecked() or self.board.hide_scores):  # not blinded while it ran
            show_saliency(self.viewer, *result)

    # -- display --------------------------------------------------------------------------

    def set_blind(self, blind: bool) -> None:
        """Blind rater mode: no probability in the table, the layer or the PRL count. A blind
        review session open in the same viewer keeps it on (see :mod:`.board`)."""
        if self.blind.isChecked() != blind:
            self.blind.setChecked(blind)  # re-enters through the toggled signal
            return
        blind = blind or self.board.hide_scores
        if blind:  # a saliency map is model output too
            remove_saliency(self.viewer)
        self.table.set_blind(blind)
        self.count.setVisible(not blind)
        self.summary.setVisible(not blind)
        self.colour_bar.setVisible(not blind)
        if len(self.scores):
            subject = str(self.scores["subject"].iloc[0])
            show_points(self.viewer, self.scores, self._affines.get(subject, np.eye(4)),
                        blind=blind)

    def _announce_scores(self) -> None:
        """New scores are stored for the project (scored here, or by the fine-tuning box after
        a new model): a model-ordered review in this viewer ranks again."""
        if self.state.project is not None:
            self.board.announce_scores(self.state.project.root)

    def _follow_board(self) -> None:
        """A blind rater session opened or closed in this viewer: hide or show the scores."""
        forced = self.board.hide_scores
        self.blind.setEnabled(not forced)
        self.hidden.setVisible(forced)
        self.set_blind(self.blind.isChecked())

    def _go_to_lesion(self, subject: str, lesion: int, world: np.ndarray) -> None:
        self._selected = (subject, lesion)
        go_to(self.viewer, world)

    def _enable(self) -> None:
        """Buttons follow the state: one job at a time, Cancel only while one runs."""
        busy, project = self.state.busy, self.state.project
        ready = self.state.loaded and not busy
        self.score_button.setEnabled(ready)
        self.score_all_button.setEnabled(ready and project is not None)
        self.saliency_button.setEnabled(ready)
        self.load_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.decision.setEnabled(project is not None and not busy)
        self.cancel_button.setEnabled(busy)
        self.clicks.set_enabled(ready)
