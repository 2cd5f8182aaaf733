"""Model checkpoints: weights plus the metadata needed to use them correctly.

A checkpoint file is ``torch.save`` of a plain dict: ``format`` and ``format_version`` (what
the file is), ``state_dict`` (tensors) and ``metadata`` (a JSON string: architecture, patch
settings, decision threshold and the calibration it applies to, training summary, validation
metrics, package version, parent checkpoint). Only tensors, strings and ints, so it loads with
``torch.load(weights_only=True)`` — a checkpoint from elsewhere can never run code — and the
metadata reads without torch (``json.loads``). Scoring cuts patches with the stored :class:`PatchConfig`, so a model is never
fed patches normalised differently from those it learnt on.

A checkpoint's :attr:`Checkpoint.id` is a hash of its weights (and calibration): the same
training gives the same id, and a fine-tuned model records its parent's id.

One file can also hold an *ensemble* (format version 2): ``members``, a list of such
``metadata`` + ``state_dict`` pairs, e.g. the cross-fitted networks of ``deep-prl train
--models K`` (:mod:`napari_deep_prl.crossfit`). :func:`load_models` reads either kind as a list;
scoring averages the members. :func:`load_checkpoint` is for the places that need one network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_deep_prl import __version__
from napari_deep_prl.errors import CheckpointError, DeepPRLError
from napari_deep_prl.evaluate import PlattFit
from napari_deep_prl.model import DeepPRL, ModelConfig, inference_copy
from napari_deep_prl.patches import CHANNELS, PatchConfig
from napari_deep_prl.tables import write_atomic

FORMAT = "napari-deep-prl checkpoint"
FORMAT_VERSION = 1
#: The version of files holding several networks (older readers refuse them with a clear message).
ENSEMBLE_FORMAT_VERSION = 2


@dataclass
class Checkpoint:
    """A trained network, its decision threshold and the patch settings it expects.

    With a :attr:`calibration` (models trained with the ``"calibrated"`` threshold rule) the
    model's output is the network's probability calibrated on its validation patients, and
    :attr:`threshold` cuts that output; without one (older models, the ``"best_f1"`` rule) the
    output is the raw probability.
    """

    model: DeepPRL
    threshold: float
    patch_config: PatchConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    calibration: PlattFit | None = None
    #: Inference copies of ``model`` by device, built on first use (the weights never change).
    _inference: dict[str, DeepPRL] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def tta(self) -> bool:
        """Whether the threshold was chosen on TTA-averaged validation probabilities (scoring
        then averages the same views by default); False for checkpoints of older versions."""
        return bool(self.metadata.get("tta", False))

    @property
    def validation(self) -> dict[str, Any]:
        """Validation metrics of the kept model as it scores by default (the 8-flip average
        when :attr:`tta`, which its threshold maximises); empty when not recorded."""
        return self.metadata.get("validation_tta") or self.metadata.get("validation", {})

    @property
    def id(self) -> str:
        """Content hash (16 hex digits) of the weights and the calibration: of what the model
        outputs, so scores stored under an id are never reused for another output scale."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        if self.calibration is not None:  # absent: the ids of uncalibrated models stay as they were
            digest.update(json.dumps(asdict(self.calibration), sort_keys=True).encode())
        return digest.hexdigest()[:16]

    def calibrate(self, probability: np.ndarray) -> np.ndarray:
        """The model's output for the network's raw probabilities (any shape)."""
        return probability if self.calibration is None else self.calibration.calibrate(probability)

    def inference_model(self, device: torch.device) -> DeepPRL:
        """The model prepared for fast inference on ``device`` (:func:`inference_copy`), cached."""
        key = str(device)
        if key not in self._inference:
            self._inference[key] = inference_copy(self.model, device)
        return self._inference[key]

    def describe(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-serialisable data (what the file's metadata holds)."""
        return {
            **self.metadata,
            "id": self.id,
            "model": self.model_config.to_dict(),
            "patch_size": self.model.patch_size,
            "patch": self.patch_config.to_dict(),
            "channels": list(CHANNELS),
            "threshold": float(self.threshold),
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "package_version": __version__,
        }

    def save(self, path: str | Path) -> Path:
        return _write(path, {"format_version": FORMAT_VERSION, **self._payload()})

    def _payload(self) -> dict[str, Any]:
        metadata = {**self.describe(), "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {"metadata": json.dumps(metadata), "state_dict": state}


def save_ensemble(members: Sequence[Checkpoint], path: str | Path) -> Path:
    """Save several networks in one file; scoring it averages them (see the module doc)."""
    if not members:
        raise CheckpointError(f"{path}: an ensemble needs at least one model")
    return _write(path, {"format_version": ENSEMBLE_FORMAT_VERSION,
                         "members": [member._payload() for member in members]})


def _write(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save atomically: a crash never leaves half a model where a whole one was."""
    return write_atomic(path, lambda fh: torch.save({"format": FORMAT, **payload}, fh), binary=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a one-network checkpoint safely; an ensemble file is refused with a clear message."""
    members = load_models(path, device=device)
    if len(members) > 1:
        raise CheckpointError(f"{path}: an ensemble of {len(members)} models; this needs a single network "
                              "(train one with `deep-prl train --models 1`); score ensembles with "
                              "`deep-prl score` or the model panel")
    return members[0]


def load_models(*paths: str | Path, device: str | torch.device = "cpu") -> list[Checkpoint]:
    """Every network of the checkpoint files, in order, loaded safely (``weights_only=True``).

    Any problem is a :class:`CheckpointError`.
    """
    return [member for path in paths for member in _load_file(Path(path), device)]


def _load_file(path: Path, device: str | torch.device) -> list[Checkpoint]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file. Train one with `deep-prl train` "
                              "or give the path of an existing .pt checkpoint")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for foreign or damaged files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}); "
                              "the file is damaged, truncated or of another kind") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-deep-prl checkpoint (no '{FORMAT}' marker); "
                              "only models saved by `deep-prl train` or the plugin can be used")
    version = payload.get("format_version")
    if version not in (FORMAT_VERSION, ENSEMBLE_FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this napari-deep-prl "
                              f"({__version__}) reads versions {FORMAT_VERSION} and {ENSEMBLE_FORMAT_VERSION}; "
                              "use a matching napari-deep-prl version")
    parts = payload.get("members") if version == ENSEMBLE_FORMAT_VERSION else [payload]
    if not isinstance(parts, list) or not parts:
        raise CheckpointError(f"{path}: an ensemble checkpoint without models; the file is damaged")
    return [_member(part, path, device) for part in parts]


def _member(payload: dict[str, Any], path: Path, device: str | torch.device) -> Checkpoint:
    try:
        metadata = json.loads(payload["metadata"])
        config = ModelConfig.from_dict(metadata["model"])
        patch_config = PatchConfig.from_dict(metadata["patch"])
        model = DeepPRL(config, int(metadata["patch_size"]))
        model.load_state_dict(payload["state_dict"])
        threshold = float(metadata["threshold"])
        calibration = metadata.get("calibration")
        calibration = None if calibration is None else PlattFit(**{k: float(v) for k, v in calibration.items()})
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, DeepPRLError) as err:
        raise CheckpointError(f"{path}: checkpoint metadata and weights do not match this version's "
                              f"Deep-PRL network ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                              "retrain the model or use the napari-deep-prl version that wrote it") from err
    model.to(device).eval()
    derived = {"id", "model", "patch_size", "patch", "channels", "threshold", "calibration"}  # rebuilt by describe()
    return Checkpoint(model, threshold, patch_config, {k: v for k, v in metadata.items() if k not in derived},
                      calibration)
