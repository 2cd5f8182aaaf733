"""Model checkpoints: weights plus the metadata needed to use them correctly.

A checkpoint file is ``torch.save`` of a plain dict: ``format`` and ``format_version`` (what
the file is), ``state_dict`` (tensors) and ``metadata`` (a JSON string: architecture, patch
settings, decision threshold and the calibration it applies to, training summary, validation
metrics, package version, parent checkpoint). Only tensors, strings and ints, so it loads with
``torch.load(weights_only=True)`` — a checkpoint from elsewhere can never run code — and the
metadata reads without torch (``json.loads``). Scoring cuts patches with the stored
:class:`PatchConfig`, so a model is never fed patches normalised differently from those it learnt on.

**Contrasts.** The patch settings name the model's image contrasts in channel order
(``patch.contrasts``; a checkpoint without them, written before models took other contrasts, is
the research protocol's ``mp2rage, phase``); ``contrasts`` records each one's kind and, for the
susceptibility image, its sign convention (a QSM enters its patches negated,
:data:`~napari_deep_prl.data.contrasts.SIGNS`); ``channels`` the patch channels; ``grids``
(from training) the reference grids its subjects' images were put on and how
(:func:`~napari_deep_prl.data.resample.grids_record`). Scoring reads only those contrasts of a
subject, and the networks of one ensemble must share them.

A checkpoint's :attr:`Checkpoint.id` is a hash of its weights (and calibration): the same
training gives the same id, and a fine-tuned model records its parent's id.

One file can also hold an *ensemble* (format version 2): ``members``, a list of such
``metadata`` + ``state_dict`` pairs, e.g. the cross-fitted networks of ``deep-prl train
--models K`` (:mod:`napari_deep_prl.model.crossfit`). :func:`load_models` reads either kind as a list;
scoring averages the members. :func:`load_checkpoint` is for the places that need one network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import CheckpointError, InputError
from napari_deep_prl.base.tables import write_atomic
from napari_deep_prl.data.contrasts import describe_contrasts
from napari_deep_prl.data.patches import MAX_PATCH_SIZE, PatchConfig
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import FUSIONS, DeepPRL, ModelConfig, inference_copy
from napari_deep_prl.model.views import checked_views

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
    def contrasts(self) -> tuple[str, ...]:
        """The image contrasts the network takes, in channel order."""
        return self.patch_config.contrasts

    @property
    def reference_grid(self) -> tuple[str, tuple[float, ...]] | None:
        """The reference grid most of its training subjects' patches were cut on: the image
        (a contrast or ``mask``) and its median voxel size (mm); ``None`` when not recorded
        (subjects made in memory, checkpoints of older versions)."""
        record = self.metadata.get("grids") or {}
        references = record.get("reference") or {}
        if not references:
            return None
        role = max(references, key=references.__getitem__)
        voxel = (record.get("images") or {}).get(role, {}).get("voxel_mm")
        return (role, tuple(float(v) for v in voxel)) if voxel else None

    def describe_contrasts(self) -> str:
        """``model <id> (t1w, flair, phase)``: how messages name a model and what it needs."""
        return f"model {self.id} ({', '.join(self.contrasts)})"

    @property
    def tta(self) -> bool:
        """Whether the threshold was chosen on flipped views of the validation patches (the
        views scoring then averages, :func:`~napari_deep_prl.model.inference.checkpoint_views`);
        False for the patch as cut alone and for checkpoints of older versions."""
        return bool(self.metadata.get("tta", False))

    @property
    def validation(self) -> dict[str, Any]:
        """Validation metrics of the kept model as it scores by default (on its views when
        :attr:`tta`, which its threshold maximises); empty when not recorded."""
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
            "channels": list(self.patch_config.channels),
            "contrasts": describe_contrasts(self.contrasts),
            "threshold": float(self.threshold),
            "calibration": None if self.calibration is None else asdict(self.calibration),
            "package_version": __version__,
        }

    def save(self, path: str | Path) -> Path:
        return _write(path, {"format_version": FORMAT_VERSION, **self._payload()})

    def _payload(self) -> dict[str, Any]:
        metadata = {**self.describe(), "saved": datetime.now(UTC).isoformat(timespec="seconds")}
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return {"metadata": json.dumps(metadata), "state_dict": state}


def save_ensemble(members: Sequence[Checkpoint], path: str | Path) -> Path:
    """Save several networks in one file; scoring it averages them (see the module doc)."""
    if not members:
        raise CheckpointError(f"{path}: an ensemble needs at least one model")
    return _write(path, {"format_version": ENSEMBLE_FORMAT_VERSION,
                         "members": [member._payload() for member in members]})


def save_models(members: Sequence[Checkpoint], path: str | Path) -> Path:
    """Save one model as it was loaded: one network as a checkpoint, several as an ensemble file."""
    return save_ensemble(members, path) if len(members) > 1 else members[0].save(path)


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

    Any problem is a :class:`CheckpointError`, and so are networks that take different contrasts
    (they cannot score one subject together, :func:`common_contrasts`).
    """
    members = [member for path in paths for member in _load_file(Path(path), device)]
    common_contrasts(members, ", ".join(map(str, paths)))
    return members


def common_contrasts(checkpoints: Sequence[Checkpoint], where: str = "the models") -> tuple[str, ...]:
    """The image contrasts every network of ``checkpoints`` (one model, or an ensemble scored
    together) takes; a :class:`CheckpointError` naming ``where`` and each network's contrasts
    when they differ."""
    kinds = dict.fromkeys(c.patch_config.contrasts for c in checkpoints)
    if len(kinds) > 1:
        shown = "; ".join(f"{n + 1}: model {c.id} ({', '.join(c.patch_config.contrasts)})"
                          for n, c in enumerate(checkpoints))
        raise CheckpointError(f"{where}: the networks take different contrasts ({shown}), so they cannot score a "
                              "subject together. Score them apart, or use networks trained on the same contrasts.")
    return next(iter(kinds), ())


#: What only a model's PyTorch checkpoint does: its ONNX export scores, and nothing else.
NEEDS_CHECKPOINT = "training, fine-tuning, recalibration, saliency maps and export"


def onnx_scores_only(path: str | Path, what: str = NEEDS_CHECKPOINT) -> CheckpointError:
    """The error for an exported ONNX model given where the PyTorch checkpoint is needed."""
    return CheckpointError(f"{path}: an exported ONNX model, which only scores lesions (deep-prl score, deep-prl "
                           "bids, deep-prl active score and rank, the model panel's scoring). For "
                           f"{what}, use the PyTorch checkpoint (.pt) it was exported from")


def _load_file(path: Path, device: str | torch.device) -> list[Checkpoint]:
    if path.suffix.lower() == ".onnx":
        raise onnx_scores_only(path)
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
    if version == FORMAT_VERSION:
        return [_member(payload, path, device)]
    parts = payload.get("members")
    if not isinstance(parts, list) or not parts:
        raise CheckpointError(f"{path}: an ensemble checkpoint without models; the file is damaged")
    return [_member(part, path, device, f"member {i + 1} of {len(parts)}: ") for i, part in enumerate(parts)]


def _member(payload: Any, path: Path, device: str | torch.device, where: str = "") -> Checkpoint:
    """One network, every field checked before anything is built from it: a damaged or edited
    file can neither set the allocation (a patch size, widths) nor decide lesions silently (a
    NaN threshold, NaN weights). ``where`` names the member of an ensemble."""
    metadata = _metadata(payload, path, where)
    for name, check in METADATA_FIELDS.items():  # in order: patch_size is checked against model and patch
        if name in metadata:
            expected = check(metadata[name], metadata)
            if expected:
                raise _field_error(path, where, name, _shown(metadata[name]), expected)
        elif name in REQUIRED_FIELDS:
            raise _field_error(path, where, name, "missing", "optional")
    config = ModelConfig.from_dict(metadata["model"])
    patch = PatchConfig.from_dict(metadata["patch"])
    with torch.device("meta"):  # shapes only: nothing is allocated before the weights are known to fit
        skeleton = DeepPRL(config, metadata["patch_size"], patch.contrasts)
    _check_weights(payload.get("state_dict"), skeleton.state_dict(), path, where)
    model = DeepPRL(config, metadata["patch_size"], patch.contrasts)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    calibration = metadata.get("calibration")
    derived = {"id", "model", "patch_size", "patch", "channels", "contrasts", "threshold",
               "calibration"}  # rebuilt by describe()
    return Checkpoint(model, float(metadata["threshold"]), patch,
                      {k: v for k, v in metadata.items() if k not in derived},
                      None if calibration is None else PlattFit(**calibration))


def _metadata(payload: Any, path: Path, where: str) -> dict[str, Any]:
    text = payload.get("metadata") if isinstance(payload, dict) else None
    try:
        metadata = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        metadata = None
    if not isinstance(metadata, dict):
        raise _field_error(path, where, "metadata", "missing or unreadable", "a JSON object")
    return metadata


def _field_error(path: Path, where: str, name: str, value: str, expected: str) -> CheckpointError:
    return CheckpointError(f"{path}: {where}checkpoint field '{name}' is {value}, not {expected}; the file is "
                           "damaged or was edited: retrain the model, or use the file as napari-deep-prl saved it")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any, low: int, high: float = float("inf")) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_model(value: Any, metadata: dict[str, Any]) -> str:
    expected = ("a network: widths (two or more) and fc of whole numbers >= 1, convs_per_block and reduction "
                f"whole numbers >= 1, fusion one of {', '.join(FUSIONS)}, dropout in [0, 1)")
    if not isinstance(value, dict) or not set(value) <= set(ModelConfig.__dataclass_fields__):
        return expected
    lists = [value.get(k, []) for k in ("widths", "fc")]
    counts = [value.get(k, 1) for k in ("convs_per_block", "reduction")]
    if not (all(isinstance(v, list) and all(_whole(n, 1) for n in v) for v in lists)
            and all(_whole(n, 1) for n in counts) and _number(value.get("dropout", 0.0))):
        return expected
    try:
        ModelConfig.from_dict(value)  # the fusion, the number of widths, the dropout's range
    except InputError:
        return expected
    return ""


def _check_patch(value: Any, metadata: dict[str, Any]) -> str:
    fields = PatchConfig.__dataclass_fields__
    if not isinstance(value, dict) or not set(value) <= set(fields):
        return f"an object of the patch settings {', '.join(fields)}"
    try:
        PatchConfig.from_dict(value)
    except InputError as err:
        return f"valid patch settings ({str(err).rstrip('.')})"
    return ""


def _check_patch_size(value: Any, metadata: dict[str, Any]) -> str:
    low = max(4, 2 ** len(ModelConfig.from_dict(metadata["model"]).widths))  # checked before: see the order
    if not _whole(value, low, MAX_PATCH_SIZE):
        return f"a whole number of voxels from {low} to {MAX_PATCH_SIZE}"
    if metadata["patch"].get("size") != value:
        return f"the size of the patches the network is given, patch.size {_shown(metadata['patch'].get('size'))}"
    return ""


def _check_threshold(value: Any, metadata: dict[str, Any]) -> str:
    return "" if _number(value) and 0 <= value <= 1 else "a probability from 0 to 1"


def _check_calibration(value: Any, metadata: dict[str, Any]) -> str:
    fields = set(PlattFit.__dataclass_fields__)
    if value is None:
        return ""
    if isinstance(value, dict) and set(value) == fields and all(_number(v) for v in value.values()):
        try:
            PlattFit(**value)
            return ""
        except ValueError:
            pass
    return f"null or an increasing calibration ({', '.join(sorted(fields))}: finite numbers, scale and slope > 0)"


def _check_views(value: Any, metadata: dict[str, Any]) -> str:
    expected = "a list of distinct views, each a list of distinct spatial dims out of 2, 3 and 4"
    if not isinstance(value, list) or not all(isinstance(v, list) and all(_whole(d, 2, 4) for d in v)
                                              for v in value):
        return expected
    try:
        checked_views(value)
    except InputError:
        return expected
    return ""


def _check_record(value: Any, metadata: dict[str, Any]) -> str:
    ok = isinstance(value, dict) and all(_number(v) or isinstance(v, bool) or v is None for v in value.values())
    return "" if ok else "an object of numbers (the validation figures)"


def _check_training(value: Any, metadata: dict[str, Any]) -> str:
    subjects = value.get("val_subjects", []) if isinstance(value, dict) else None
    ok = isinstance(subjects, list) and all(isinstance(s, str) for s in subjects)
    return "" if ok else "an object whose val_subjects is a list of subject ids"


def _check_labels(value: Any, metadata: dict[str, Any]) -> str:
    ok = isinstance(value, dict) and _whole(value.get("n", 0), 0) and _whole(value.get("n_prl", 0), 0)
    return "" if ok else "an object whose n and n_prl are label counts"


def _check_ensemble(value: Any, metadata: dict[str, Any]) -> str:
    ok = (isinstance(value, dict) and not _check_threshold(value.get("threshold", 0.5), metadata)
          and not _check_record(value.get("out_of_fold", {}), metadata))
    return "" if ok else "an object with the ensemble's threshold (0 to 1) and out-of-fold figures"


def _matching_patch(value: Any, metadata: dict[str, Any], derive: Callable[[PatchConfig], Any], what: str) -> str:
    """Nothing when ``value`` is what the (already checked) patch settings give, else what was expected."""
    expected = derive(PatchConfig.from_dict(metadata["patch"]))
    return "" if value == expected else f"{what}, {_shown(expected)}"


def _of_type(kind: type | tuple[type, ...], expected: str) -> Callable[[Any, dict[str, Any]], str]:
    return lambda value, metadata: "" if isinstance(value, kind) else expected


#: How each metadata field that anything reads is checked: ``check(value, metadata)`` returns
#: what was expected, or "" when the value is fine. Other fields are kept and never used.
METADATA_FIELDS: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "model": _check_model,
    "patch": _check_patch,
    "patch_size": _check_patch_size,
    "channels": lambda value, metadata: _matching_patch(value, metadata, lambda p: list(p.channels),
                                                       "the channels of the patch contrasts"),
    "contrasts": lambda value, metadata: _matching_patch(value, metadata, lambda p: describe_contrasts(p.contrasts),
                                                        "the record of the patch contrasts"),
    "grids": _of_type(dict, "an object (the training subjects' grids)"),
    "threshold": _check_threshold,
    "calibration": _check_calibration,
    "tta": _of_type(bool, "true or false"),
    "views": _check_views,
    "validation": _check_record,
    "validation_tta": _check_record,
    "training": _check_training,
    "labels": _check_labels,
    "ensemble": _check_ensemble,
    "parent": _of_type((str, type(None)), "a checkpoint id or null"),
    "recalibration": _of_type(dict, "an object recording a site recalibration"),
    "package_version": _of_type(str, "a version string"),
}
REQUIRED_FIELDS = ("model", "patch", "patch_size", "threshold")


def _check_weights(state: Any, expected: dict[str, torch.Tensor], path: Path, where: str) -> None:
    """The file's weights have exactly the network's names and shapes, real storage behind every
    element (no tensor claims more than the file holds) and finite values."""
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise _weights_error(path, where, "they are not a table of tensors")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise _weights_error(path, where, f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype.is_floating_point != want.dtype.is_floating_point:
            raise _weights_error(path, where, f"{name} is {tuple(tensor.shape)} {tensor.dtype}, the network's "
                                 f"{tuple(want.shape)} {want.dtype}")
        if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
            raise _weights_error(path, where, f"{name} claims more values than the file holds")
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {where}checkpoint weights {name} hold NaN or infinite values, so the model "
                                  "would score nothing; the training diverged or the file is damaged: retrain it")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise _weights_error(path, where, f"{name} has negative variances")


def _weights_error(path: Path, where: str, detail: str) -> CheckpointError:
    return CheckpointError(f"{path}: {where}checkpoint weights do not match the network of its metadata ({detail}); "
                           "the file is damaged or was edited: retrain the model, or use the napari-deep-prl "
                           "version that wrote it")
