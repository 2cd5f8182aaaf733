"""Recalibration box of the model panel: the model in use recalibrated for the project's site.

*Recalibrate for this site…* asks where to save the site model (the project's ``models/``
folder by default), then runs :func:`~napari_deep_prl.active.finetune.recalibrate_project` in a
worker (:class:`~.jobs.Job`, with progress and Cancel): the project's chosen labels refit the
model's calibration and threshold, its networks unchanged, as ``deep-prl calibrate`` does. The
saved model becomes the model in use (:class:`~.model_state.ModelState`), and the box says what
changed on the labelled lesions.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QProgressBar, QPushButton

from napari_deep_prl._napari.jobs import Job
from napari_deep_prl._napari.messages import TOOLTIPS
from napari_deep_prl._napari.model.model_state import ModelState
from napari_deep_prl._napari.widget_parts import fill_label_sources
from napari_deep_prl.active.finetune import recalibrate_project
from napari_deep_prl.base.errors import DeepPRLError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.base.tables import check_output, write_or_rescue
from napari_deep_prl.model.checkpoint import save_models
from napari_deep_prl.scoring.recalibrate import Recalibration


class RecalibrateBox(QGroupBox):
    """Recalibrate the model in use on the project's labels; save and use the site model."""

    def __init__(self, state: ModelState) -> None:
        super().__init__("Recalibrate for this site")
        self.state = state
        self.job: Job | None = None
        #: The latest recalibration and where its model was saved.
        self.result: tuple[Recalibration, Path] | None = None
        self.source = QComboBox()
        self.button = QPushButton("Recalibrate for this site…")
        self.bar = QProgressBar()
        self.bar.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.source.setToolTip(TOOLTIPS["recalibrate_source"])
        self.button.setToolTip(TOOLTIPS["recalibrate"])
        layout = QFormLayout(self)
        layout.addRow("Labels", self.source)
        layout.addRow(self.button)
        layout.addRow(self.bar)
        layout.addRow(self.status)
        self.button.clicked.connect(self.start)
        state.project_changed.connect(self.list_sources)
        state.model_changed.connect(self._enable)
        state.busy_changed.connect(self._enable)
        self._enable()

    def list_sources(self) -> None:
        """The project's label sources: consensus, each rater and each reference."""
        fill_label_sources(self.source, self.state.project)
        self._enable()

    def default_path(self) -> Path:
        """Where the dialog proposes to save: the project's models folder, named by the model and site."""
        project = self.state.project
        stem = self.state.path.stem if self.state.path is not None else "model"
        return project.models_dir / f"{stem}-site-{project.root.name}.pt"

    def start(self) -> Job | None:
        """Ask where to save the site model, then recalibrate in a worker."""
        state = self.state
        if state.project is None or not state.loaded:
            show_error("Open a project and load a model first: the project's labels recalibrate the model.")
            return None
        try:
            checkpoints = state.pytorch("recalibration")
        except DeepPRLError as err:
            show_error(str(err))
            return None
        chosen, _ = QFileDialog.getSaveFileName(self, "Save the site model", str(self.default_path()), "*.pt")
        if not chosen:
            return None
        path = Path(chosen)
        try:
            check_output(path)
        except DeepPRLError as err:
            show_error(str(err))
            return None
        project, source = state.project, self.source.currentText()

        def run(stop: threading.Event) -> Generator[Progress, None, tuple[Recalibration, Path] | None]:
            result = yield from recalibrate_project(project, checkpoints, source, stop=stop)
            if result is None:
                return None
            return result, write_or_rescue(lambda folder: save_models(result.checkpoints, folder / path.name),
                                           path.parent, "the recalibrated model")

        self.status.setText("recalibrating…")
        self.job = state.run(Job(run, description="Recalibrating", bar=self.bar, stages=("patches", "network"),
                                 on_result=self._done, on_error=self._failed))
        return self.job

    def _done(self, outcome: tuple[Recalibration, Path] | None) -> None:
        if outcome is None:
            self.status.setText("Recalibration cancelled; nothing was saved.")
            return
        self.result = outcome
        result, path = outcome
        self.state.use_model(result.checkpoints, path)
        shifts = (f" Very different from the model's own calibration: {'; '.join(result.shifts)}."
                  if result.shifts else "")
        self.status.setText(f"{result.summary()}. Saved as {path.name}, now the model in use.{shifts}")
        show_info(f"Site model saved: {path}")

    def _failed(self, error: Exception) -> None:
        self.status.setText(f"Recalibration failed: {error}")

    def _enable(self) -> None:
        ready = not self.state.busy and self.state.project is not None and self.state.loaded
        self.button.setEnabled(ready)
        self.source.setEnabled(ready)
