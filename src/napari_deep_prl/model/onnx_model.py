"""A model exported as one ONNX graph (:mod:`napari_deep_prl.model.export`), run in onnxruntime.

:class:`OnnxModel` is the second model backend of scoring (:mod:`napari_deep_prl.model.backend`):
it reads the networks' settings from the graph's metadata (patch settings, thresholds,
calibrations, views) and gives the same rows as
:func:`~napari_deep_prl.model.inference.view_probabilities` gives for the checkpoints it was
exported from. The graph scores every view of every patch; the screen of scoring is applied to its
rows afterwards (a view's probability does not depend on the others scored), so the probabilities
and calls are those of the PyTorch path, while the cost is that of scoring every view (as
``--tta``). onnxruntime comes with the ``onnx`` extra (``pip install napari-deep-prl[onnx]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_deep_prl.base.errors import CheckpointError, InputError
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.dataset import Patches
from napari_deep_prl.model.inference import INFERENCE_BATCH
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.views import TTA_VIEWS, View, checked_views

#: What an exported file is (``metadata_props["format"]``) and the version of its layout.
FORMAT = "napari-deep-prl scoring head"
FORMAT_VERSION = 1
#: The graph's input and outputs.
INPUT = "patches"
OUTPUTS = ("probability", "view_probabilities")
#: The metadata key of the whole spec (JSON).
SPEC_KEY = "napari_deep_prl"
#: Largest difference from the test vectors' outputs that a runtime may show.
TEST_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Network:
    """One network of an exported model as its metadata records it: what scoring reads of a
    :class:`~napari_deep_prl.model.checkpoint.Checkpoint` (id, threshold, patch settings,
    calibration, views)."""

    id: str
    threshold: float
    patch_config: PatchConfig
    calibration: PlattFit | None
    views: tuple[View, ...]


@dataclass
class OnnxModel:
    """An exported scoring head: its file, spec (the metadata) and networks."""

    path: Path
    spec: dict[str, Any]
    networks: list[Network]
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Read an exported graph's metadata; any problem is a :class:`CheckpointError`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX model; export one with `deep-prl export MODEL.pt -o {path}`")
        cpu = session(path, "cpu")
        spec = _spec(cpu.get_modelmeta().custom_metadata_map, path)
        try:
            networks = [Network(str(n["id"]), float(n["threshold"]), PatchConfig.from_dict(spec["patch"]),
                                None if n["calibration"] is None else PlattFit(**n["calibration"]),
                                checked_views(n["views"])) for n in spec["networks"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: the metadata of its networks is unreadable ({err}); the file is "
                                  "damaged or was edited: export the model again") from err
        if not networks:
            raise CheckpointError(f"{path}: the metadata lists no network; export the model again")
        model = cls(path, spec, networks)
        model._sessions["cpu"] = cpu
        return model

    @property
    def threshold(self) -> float:
        """The decision threshold: the mean of the networks' validation thresholds."""
        return float(np.mean([n.threshold for n in self.networks]))

    def outputs(self, x: np.ndarray | Patches, *, batch_size: int = INFERENCE_BATCH,
                device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """The graph's outputs for patches ``x``: ``probability`` (n,) and ``view_probabilities``
        (networks × views, n), float64, ``batch_size`` patches per run."""
        run = self.session(device)
        rows = [np.zeros((0,)), np.zeros((sum(len(n.views) for n in self.networks), 0))]
        for start in range(0, len(x), batch_size):
            got = run.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(x[start:start + batch_size], np.float32)})
            rows = [np.concatenate([done, new.astype(np.float64)], axis=-1) for done, new in zip(rows, got)]
        return rows[0], rows[1]

    def view_probabilities(self, x: np.ndarray | Patches, *, tta: bool | None = None,
                           batch_size: int = INFERENCE_BATCH, device: str = "auto", precision: str = "auto",
                           screen: float | None = None) -> np.ndarray:
        """Rows as :func:`~napari_deep_prl.model.inference.view_probabilities` gives them for the
        exported checkpoints (``tta`` picks the views alike, ``screen`` leaves NaN where that
        path does not score a view). The graph computes in float32: ``precision`` bfloat16 is refused."""
        if precision == "bfloat16":
            raise InputError("an ONNX model computes in float32; use --precision float32 or auto with it")
        rows = self.outputs(x, batch_size=batch_size, device=device)[1]
        picked, first, start = [], [], 0
        for network in self.networks:
            wanted = network.views if tta is None else TTA_VIEWS if tta else ((),)
            missing = [list(v) for v in wanted if v not in network.views]
            if missing:
                raise InputError(f"{self.path}: network {network.id} was exported with the views "
                                 f"{[list(v) for v in network.views]}, not {missing}; score it without "
                                 "--tta/--no-tta, or export the model from a checkpoint that records them")
            first.append(len(picked))
            picked += [start + network.views.index(v) for v in wanted]
            start += len(network.views)
        rows = rows[picked]
        if screen is not None:
            below = rows[first].mean(0) < screen
            rows[np.setdiff1d(np.arange(len(rows)), first)[:, None], below] = np.nan
        return rows

    def session(self, device: str = "auto") -> Any:
        """The onnxruntime session on ``device`` (auto: CUDA when onnxruntime has it), cached."""
        if device not in self._sessions:
            self._sessions[device] = session(self.path, device)
        return self._sessions[device]

    def check_test_vectors(self, vectors: str | Path | None = None) -> float:
        """The largest difference between the graph's outputs here and the test vectors' (by
        default the file beside the graph, :func:`vectors_file`)."""
        vectors = vectors_file(self.path) if vectors is None else Path(vectors)
        if not vectors.is_file():
            raise InputError(f"{vectors}: no test vectors; they are written beside the graph by `deep-prl export`")
        with np.load(vectors, allow_pickle=False) as data:
            return reproduces(self.session("cpu"), dict(data))


def vectors_file(path: str | Path) -> Path:
    """Where the test vectors of the graph at ``path`` are: ``MODEL.onnx`` → ``MODEL.test.npz``."""
    path = Path(path)
    return path.with_name(path.stem + ".test.npz")


def reproduces(run: Any, vectors: dict[str, np.ndarray]) -> float:
    """The largest absolute difference between a session's outputs for ``vectors["patches"]``
    and the outputs the vectors hold."""
    got = run.run(list(OUTPUTS), {INPUT: vectors["patches"]})
    return float(max(np.abs(g.astype(np.float64) - vectors[name]).max() for g, name in zip(got, OUTPUTS)))


def session(model: str | Path | bytes, device: str = "auto") -> Any:
    """An onnxruntime session of ``model`` (a path or the graph's bytes) on ``device``, with as
    many threads as torch uses (``--threads``)."""
    ort = _import_onnxruntime()
    import torch

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise InputError("device 'cuda' asked for, but this onnxruntime has no CUDA provider; use --device cpu "
                         "(or install onnxruntime-gpu)")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    providers = (["CUDAExecutionProvider"] if device != "cpu" and "CUDAExecutionProvider" in available else [])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=[*providers, "CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for foreign or damaged files
        raise CheckpointError(f"{model if not isinstance(model, bytes) else 'the exported graph'}: not a readable "
                              f"ONNX model ({type(err).__name__}); the file is damaged, truncated or of another "
                              "kind") from err


def _spec(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-deep-prl ONNX model (no '{FORMAT}' format in its metadata); "
                              "only graphs written by `deep-prl export` can be scored")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: exported model format version {metadata.get('format_version')!r}; this "
                              f"napari-deep-prl reads version {FORMAT_VERSION}: use a matching napari-deep-prl")
    try:
        spec = json.loads(metadata[SPEC_KEY])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: its '{SPEC_KEY}' metadata is missing or not JSON; the file was edited: "
                              "export the model again") from err
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: its '{SPEC_KEY}' metadata is not a JSON object; export the model again")
    return spec


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise InputError("scoring an ONNX model needs onnxruntime, which is not installed: "
                         "pip install 'napari-deep-prl[onnx]' (or score the .pt checkpoint)") from err
    return onnxruntime

