"""The model backends of scoring: PyTorch checkpoints, or one exported ONNX graph.

Scoring (:mod:`napari_deep_prl.scoring.score`) takes a *model*: the checkpoints of an ensemble
(:func:`~napari_deep_prl.model.checkpoint.load_models`) or an
:class:`~napari_deep_prl.model.onnx_model.OnnxModel`. Both give, per patch setting, the same rows
of per-view probabilities (:func:`view_scorers`), so one scoring loop serves both, and the
networks' thresholds, calibrations and patch settings read alike (:func:`networks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint, load_models
from napari_deep_prl.model.inference import view_probabilities
from napari_deep_prl.model.onnx_model import Network, OnnxModel

#: A model to score with.
Model = Sequence[Checkpoint] | OnnxModel
#: Rows of per-view probabilities of patches, called with the screen as keyword ``screen``.
ViewScorer = Callable[..., np.ndarray]


def load_model(*paths: str | Path, device: str = "cpu") -> Model:
    """The model in ``paths``: one ``.onnx`` file, or checkpoint files (an ensemble's networks)."""
    onnx = [p for p in paths if Path(p).suffix.lower() == ".onnx"]
    if onnx and len(paths) > 1:
        raise InputError(f"{onnx[0]}: an ONNX file holds a whole model and is scored alone; export the "
                         "checkpoints together (`deep-prl export A.pt B.pt -o MODEL.onnx`) to score them as one")
    return OnnxModel.load(onnx[0]) if onnx else load_models(*paths, device=device)


def networks(model: Model) -> Sequence[Checkpoint | Network]:
    """The model's networks: their ``id``, ``threshold``, ``calibration`` and ``patch_config``."""
    return model.networks if isinstance(model, OnnxModel) else model


def view_scorers(model: Model, *, tta: bool | None = None, batch_size: int, device: str = "auto",
                 precision: str = "auto") -> dict[PatchConfig, ViewScorer]:
    """For each patch setting of the model's networks, what scores patches cut with it: the rows
    of :func:`~napari_deep_prl.model.inference.view_probabilities` (or the ONNX model's same rows)
    of the networks taking them; called as ``scorer(x, screen=...)``."""
    options = {"tta": tta, "batch_size": batch_size, "device": device, "precision": precision}
    if isinstance(model, OnnxModel):
        return {model.networks[0].patch_config: partial(model.view_probabilities, **options)}
    configs = dict.fromkeys(c.patch_config for c in model)
    return {config: partial(view_probabilities, [c for c in model if c.patch_config == config], **options)
            for config in configs}
