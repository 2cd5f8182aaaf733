"""What the model panel and its fine-tuning box share, as one model object both listen to
(napari-animation's way: a child widget gets the model, not its parent).

:class:`ModelState` holds the open project, the model in use (its networks and file), the
and the one job that runs at a time. The panel changes it from its controls (open a project,
load a model, score); the fine-tuning box reads the project and the model from it, adopts a new model through
:meth:`ModelState.use_model`, runs its jobs through :meth:`ModelState.run` and says through
:meth:`ModelState.announce_scores` when a new model's scores are stored. Each widget redraws
from the signals, so neither calls the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from psygnal import Signal

from napari_deep_prl._napari.jobs import Job
from napari_deep_prl.model.backend import Model, networks
from napari_deep_prl.model.checkpoint import Checkpoint, onnx_scores_only
from napari_deep_prl.model.onnx_model import OnnxModel
from napari_deep_prl.ratings.project import Project


class ModelState:
    """The model panel's project, model and running job."""

    #: Another project was opened: read :attr:`project`.
    project_changed = Signal()
    #: Another model is in use: read :attr:`model` and :attr:`path`.
    model_changed = Signal()
    #: A job started (``True``) or finished (``False``): one job runs at a time.
    busy_changed = Signal(bool)
    #: Scores of the project were stored: the model version that made them.
    scores_stored = Signal(str)

    def __init__(self) -> None:
        self.project: Project | None = None
        #: The model in use: one network or the members of an ensemble file (scored together), or
        #: an exported ONNX model (which only scores).
        self.model: Model = []
        #: The file the model came from (``None``: made in this session and not saved, or unknown).
        self.path: Path | None = None
        self.job: Job | None = None

    @property
    def loaded(self) -> bool:
        """Whether a model is in use."""
        return bool(networks(self.model))

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The model's PyTorch networks (none for an ONNX model)."""
        return [] if isinstance(self.model, OnnxModel) else list(self.model)

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The model's network, or an ensemble's first member (whose label record all share)."""
        return self.checkpoints[0] if self.checkpoints else None

    def pytorch(self, what: str) -> list[Checkpoint]:
        """The model's PyTorch networks, for ``what`` (fine-tuning, recalibration, saliency); an
        ONNX model, which only scores, is a :class:`~napari_deep_prl.base.errors.CheckpointError`
        naming ``what``."""
        if isinstance(self.model, OnnxModel):
            raise onnx_scores_only(self.model.path, what)
        return self.checkpoints

    @property
    def busy(self) -> bool:
        return self.job is not None

    def open_project(self, project: Project) -> None:
        """Use ``project`` (the previous one is closed)."""
        if self.project is not None:
            self.project.close()
        self.project = project
        self.project_changed.emit()

    def use_model(self, model: Checkpoint | Sequence[Checkpoint] | OnnxModel, path: Path | None = None) -> None:
        """Score with ``model`` (a network, an ensemble's members, or an ONNX model) from now on."""
        if isinstance(model, Checkpoint):
            model = [model]
        self.model = model if isinstance(model, OnnxModel) else list(model)
        self.path = path
        self.model_changed.emit()

    def run(self, job: Job) -> Job:
        """Start ``job`` as the one that runs now; :attr:`busy` until it finishes. The widgets
        start nothing while busy (their buttons are disabled, automatic retraining waits)."""
        if self.job is not None:
            raise RuntimeError(f"'{job.description}' cannot start while '{self.job.description}' runs")
        self.job = job
        job.worker.finished.connect(self._finished)
        self.busy_changed.emit(True)
        return job.start()

    def cancel(self) -> None:
        """Stop the running job after its current step; what it has done is kept."""
        if self.job is not None:
            self.job.cancel()

    def _finished(self) -> None:
        self.job = None
        self.busy_changed.emit(False)

    def announce_scores(self, version: str) -> None:
        """The project's scores by model ``version`` are stored (a model-ordered review re-ranks)."""
        self.scores_stored.emit(version)
