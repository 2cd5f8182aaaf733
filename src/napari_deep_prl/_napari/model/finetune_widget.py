"""Fine-tuning box of the model panel: train on the project's labels without freezing the viewer.

Training runs in a worker (:class:`~.jobs.Job`); each epoch adds a point to the live loss and
validation-F1 curve (an ensemble's networks train one after the other, each on a fresh curve).
Cancel stops after the current step and still saves the best model so far (training keeps it).
The new checkpoint is the next version in the project's ``models/`` folder, recording its parent
and the labels used, and becomes the model in use (:class:`~.model_state.ModelState`, which the
box shares with the panel) — unless it validates worse than the model it
started from on the same held-out lesions (:mod:`napari_deep_prl.model.comparison`): the box then
shows both figures and asks, inline, *Use the new model anyway* or *Keep the current model*
(the file stays saved either way). Labels that cannot train and validate are refused before any
work starts, with one message saying how many more labels are needed. Without a model to start
from, *Networks* sets how many are trained (a cross-fitted ensemble when more than one). With
*auto*, training restarts by itself after every K new labels (counted since the last
fine-tuning, used or not) and the project is re-scored by a model in use, after which
:attr:`~.model_state.ModelState.scores_stored` tells listeners (a model-ordered review) to re-rank.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator
from dataclasses import replace

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_deep_prl._napari.jobs import Job
from napari_deep_prl._napari.messages import TOOLTIPS, WORSE_MODEL
from napari_deep_prl._napari.model.model_state import ModelState
from napari_deep_prl._napari.widget_parts import fill_label_sources
from napari_deep_prl.active.finetune import (
    FinetuneResult,
    check_labels,
    finetune,
    rescore,
    retrain_and_rescore,
    should_retrain,
)
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.model.crossfit import DEFAULT_MODELS
from napari_deep_prl.model.train import TrainConfig

#: How often (ms) the auto-retrain option checks the number of new labels.
AUTO_CHECK_MS = 15_000


class LossCurve(FigureCanvasQTAgg):
    """Training loss and validation F1 per epoch, redrawn as epochs finish."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 1.8), tight_layout=True)
        super().__init__(self.figure)
        self.axes = self.figure.add_subplot()
        self.epochs: list[dict[str, float]] = []
        self.redraw()

    def reset(self) -> None:
        self.epochs = []
        self.redraw()

    def add(self, metrics: dict[str, float], epoch: int) -> None:
        self.epochs.append({"epoch": epoch, **metrics})
        self.redraw()

    def show_history(self, history: list[dict[str, float]]) -> None:
        """The finished run's own record: every epoch, whatever progress events were missed."""
        self.epochs = [{k: v for k, v in h.items() if k == "epoch" or math.isfinite(v)}
                       for h in history]
        self.redraw()

    def redraw(self) -> None:
        ax = self.axes
        ax.clear()
        for key, style in (("loss", "-o"), ("val_f1", "-s")):
            points = [(e["epoch"], e[key]) for e in self.epochs if key in e]
            if points:
                ax.plot(*zip(*points), style, markersize=3, label=key.replace("_", " "))
        ax.set_xlabel("epoch", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if self.epochs:
            ax.legend(fontsize=7)
        self.draw_idle()


class FinetuneBox(QGroupBox):
    """Fine-tune the model in use (or train from scratch) on the project's labels."""

    def __init__(self, state: ModelState) -> None:
        super().__init__("Fine-tune on the project's labels")
        self.state = state
        #: The box's latest job (training, or scoring the project with a model chosen after it).
        self.job: Job | None = None
        self.result: FinetuneResult | None = None
        #: A new model that validates worse, waiting for the user's choice, and whether the
        #: project is to be re-scored by it when chosen (the auto option).
        self.pending: tuple[FinetuneResult, bool] | None = None
        #: Settings not shown in the box (batch size, model width, device ...).
        self.base_config = TrainConfig(epochs=10, lr=1e-4)

        self.source = QComboBox()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(self.base_config.epochs)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1e-1)
        self.lr.setSingleStep(1e-5)
        self.lr.setValue(self.base_config.lr)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.05, 0.5)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(self.base_config.val_fraction)
        self.from_model = QCheckBox("start from the loaded model")
        self.from_model.setChecked(True)
        self.networks = QSpinBox()
        self.networks.setRange(1, 10)
        self.networks.setValue(DEFAULT_MODELS)
        self.start_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.auto = QCheckBox("retrain every")
        self.auto_every = QSpinBox()
        self.auto_every.setRange(1, 10_000)
        self.auto_every.setValue(50)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.use_new_button = QPushButton("Use the new model anyway")
        self.keep_button = QPushButton("Keep the current model")
        self.choice = QWidget()
        choice_row = QHBoxLayout(self.choice)
        choice_row.setContentsMargins(0, 0, 0, 0)
        choice_row.addWidget(self.use_new_button)
        choice_row.addWidget(self.keep_button)
        self.choice.setVisible(False)
        self.curve = LossCurve()
        for name, widget in (("source", self.source), ("epochs", self.epochs), ("lr", self.lr),
                             ("val", self.val_fraction), ("networks", self.networks),
                             ("start", self.start_button), ("auto", self.auto),
                             ("use_new", self.use_new_button), ("keep", self.keep_button)):
            widget.setToolTip(TOOLTIPS[name])

        form = QFormLayout()
        form.addRow("Labels", self.source)
        form.addRow("Epochs", self.epochs)
        form.addRow("Learning rate", self.lr)
        form.addRow("Validation subjects", self.val_fraction)
        form.addRow("Networks (from scratch)", self.networks)
        auto_row = QHBoxLayout()
        auto_row.addWidget(self.auto)
        auto_row.addWidget(self.auto_every)
        auto_row.addWidget(QLabel("new labels"))
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.from_model)
        layout.addLayout(auto_row)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.curve)
        layout.addWidget(self.status)
        layout.addWidget(self.choice)

        self.timer = QTimer(self)
        self.timer.setInterval(AUTO_CHECK_MS)
        self.timer.timeout.connect(self.maybe_retrain)
        self.auto.toggled.connect(lambda on: self.timer.start() if on else self.timer.stop())
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(state.cancel)
        self.use_new_button.clicked.connect(self.use_new_model)
        self.keep_button.clicked.connect(self.keep_current_model)
        state.project_changed.connect(self.list_sources)
        state.busy_changed.connect(self._enable)
        self._enable()

    def list_sources(self) -> None:
        """List the label sources of the project: consensus, each rater and each reference."""
        fill_label_sources(self.source, self.state.project)
        self._enable()

    def config(self) -> TrainConfig:
        return replace(self.base_config, epochs=self.epochs.value(), lr=self.lr.value(),
                       val_fraction=self.val_fraction.value())

    def start(self, *, rescore: bool = False) -> Job | None:
        """Train in a worker; with ``rescore`` (the auto option) the project is scored by the new
        model after. Labels that cannot train and validate are refused at once, before any work
        (:func:`~napari_deep_prl.active.finetune.check_labels`): one error message, or with ``rescore``
        the status line only, since the auto option checks again every few seconds."""
        state = self.state
        if state.project is None:
            show_error("Open a project first: fine-tuning learns from its labels.")
            return None
        project, config, source = state.project, self.config(), self.source.currentText()
        models = self.networks.value()
        try:
            init = state.pytorch("fine-tuning from the model") if self.from_model.isChecked() else None
        except DeepPRLError as err:  # an ONNX model: no weights to start from
            self.status.setText(f"Cannot fine-tune: {err}")
            show_error(f"Cannot fine-tune: {err}")
            return None
        try:
            check_labels(project, len(init or []) or models, config, source)
        except DeepPRLError as err:
            lead = "Automatic retraining waits for more labels" if rescore else "Cannot fine-tune"
            self.status.setText(f"{lead}: {err}")
            if not rescore:
                show_error(f"{lead}: {err}")
            return None

        def run(stop: threading.Event) -> Generator[Progress, None, FinetuneResult]:
            if rescore:
                return (yield from retrain_and_rescore(project, init, config, models=models, source=source,
                                                       stop=stop))
            return (yield from finetune(project, init, config, models=models, source=source, stop=stop))

        self.curve.reset()
        self._ask(None)
        self.status.setText("training…")
        self.job = state.run(Job(run, description="Fine-tuning", bar=self.bar, stages=("epoch",),
                                 on_progress=self._progress, on_result=lambda result: self._done(result, rescore),
                                 on_error=self._failed))
        return self.job

    def maybe_retrain(self) -> Job | None:
        """Start training when ``K`` new labels have come in since the last fine-tuning (the auto
        option), unless a job runs."""
        state = self.state
        if state.project is None or state.busy:
            return None
        latest = self.result.checkpoint if self.result is not None else state.checkpoint
        if not should_retrain(state.project, latest, self.auto_every.value(), self.source.currentText()):
            return None
        return self.start(rescore=True)

    def _progress(self, event: Progress) -> None:
        if self.job is None or self.job.delivered:  # a late event must not hide the result
            return
        if event.stage == "model" and event.step < event.total:  # an ensemble's next network (or all, stacked)
            self.curve.reset()
            self.status.setText(f"training {event.message}…")
        elif event.stage == "epoch":
            self.curve.add(event.metrics, event.step)
            self.status.setText(f"epoch {event.step}/{event.total} {event.message}".strip())

    def _done(self, result: FinetuneResult, rescore: bool) -> None:
        """Training finished: use the new model, or ask first when it validates worse (and, when
        the auto option trained it, score the project with it once chosen)."""
        self.result = result
        self.curve.show_history(result.runs[-1].history)
        if result.worse:
            self.status.setText(WORSE_MODEL.format(summary=result.summary(), figures=result.comparison.figures()))
            show_warning(f"The new model validates worse than the one in use; it is saved as {result.path}. "
                         "Choose in the fine-tuning box whether to use it.")
            self._ask((result, rescore))
            return
        self._use(result)

    def _use(self, result: FinetuneResult) -> None:
        self.state.use_model(result.checkpoints, result.path)
        compared = f"; {result.comparison.summary()}" if result.comparison is not None else ""
        self.status.setText(result.summary() + compared)
        show_info(f"New model version saved: {result.path}")
        self._scored(result)

    def _scored(self, result: FinetuneResult) -> None:
        """The project's scores by the new model are stored (the auto option): say so."""
        if result.scored is not None:
            self.state.announce_scores(result.scored)

    def use_new_model(self) -> Job | None:
        """The user's choice: use the new model although it validates worse (re-scoring the
        project with it when the auto option trained it)."""
        if self.pending is None:
            return None
        (result, rescored), project = self.pending, self.state.project
        self._ask(None)
        self._use(result)
        if not rescored:
            return None
        self.job = self.state.run(Job(lambda stop: rescore(project, result, stop=stop),
                                      description="Scoring the project", bar=self.bar, on_result=self._scored))
        return self.job

    def keep_current_model(self) -> None:
        """The user's choice: keep the model in use; the new one stays saved."""
        if self.pending is not None:
            self.status.setText(f"Kept the current model; the new one stays saved as {self.pending[0].path}.")
        self._ask(None)

    def _ask(self, pending: tuple[FinetuneResult, bool] | None) -> None:
        """Offer the choice between the new (worse) model and the current one, or withdraw it."""
        self.pending = pending
        self.choice.setVisible(pending is not None)

    def _failed(self, error: Exception) -> None:
        self.status.setText(f"Fine-tuning failed: {error}")

    def _enable(self) -> None:
        """Inputs usable when idle (with a project); Cancel usable while something runs."""
        busy = self.state.busy
        ready = not busy and self.state.project is not None
        for widget in (self.start_button, self.source, self.epochs, self.lr, self.val_fraction, self.networks,
                       self.use_new_button, self.keep_button):
            widget.setEnabled(ready)
        self.cancel_button.setEnabled(busy)
