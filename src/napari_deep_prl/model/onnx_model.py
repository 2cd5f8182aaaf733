"""A model exported as one ONNX graph (:mod:`napari_deep_prl.model.export`), run in onnxruntime.

:class:`OnnxModel` is the second model backend of scoring (:mod:`napari_deep_prl.model.backend`):
it reads the networks' settings from the graph's metadata (patch settings, thresholds,
calibrations, views) and gives the same rows as
:func:`~napari_deep_prl.model.inference.view_probabilities` gives for the checkpoints it was
exported from. The screen of scoring runs as in PyTorch: the first-view graph beside the file
(:func:`first_views_file`) scores each network's first view of every patch, and the graph the
other views of the patches whose first looks reach the screen; without that file the graph
scores every view and the screen is applied to its rows (a view's probability does not depend
on the others scored): the same probabilities at the cost of ``--tta``. onnxruntime comes with
the ``onnx`` extra (``pip install napari-deep-prl[onnx]``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_deep_prl.base.errors import CheckpointError, InputError, InputWarning
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
#: The graphs of an export (``metadata_props["part"]`` of the first-view graph): the whole head,
#: and each network's first view alone (the screen of scoring).
WHOLE, FIRST_VIEWS = "whole", "first_views"
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
    #: The first-view graph the file names, and its SHA-256 (``None``: every network has one view).
    first_views: Path | None = None
    first_views_sha256: str | None = None
    _sessions: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Read an exported graph's metadata; any problem is a :class:`CheckpointError`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX model; export one with `deep-prl export MODEL.pt -o {path}`")
        cpu = session(path, "cpu")
        metadata = cpu.get_modelmeta().custom_metadata_map
        spec = _spec(metadata, path)
        try:
            networks = [Network(str(n["id"]), float(n["threshold"]), PatchConfig.from_dict(spec["patch"]),
                                None if n["calibration"] is None else PlattFit(**n["calibration"]),
                                checked_views(n["views"])) for n in spec["networks"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: the metadata of its networks is unreadable ({err}); the file is "
                                  "damaged or was edited: export the model again") from err
        if not networks:
            raise CheckpointError(f"{path}: the metadata lists no network; export the model again")
        first = metadata.get("first_views")
        model = cls(path, spec, networks, None if first is None else path.with_name(first),
                    metadata.get("first_views_sha256"))
        model._sessions[WHOLE, "cpu"] = cpu
        return model

    @property
    def threshold(self) -> float:
        """The decision threshold: the mean of the networks' validation thresholds."""
        return float(np.mean([n.threshold for n in self.networks]))

    def outputs(self, x: np.ndarray | Patches, *, batch_size: int = INFERENCE_BATCH, device: str = "auto",
                part: str = WHOLE) -> tuple[np.ndarray, np.ndarray]:
        """The outputs of the graph (``part``: :data:`WHOLE`, or the first-view graph) for patches
        ``x``: ``probability`` (n,) and ``view_probabilities`` (networks × views, or networks,
        n), float64, ``batch_size`` patches per run."""
        run = self.session(device, part)
        samples = len(self.networks) if part == FIRST_VIEWS else sum(len(n.views) for n in self.networks)
        rows = [np.zeros((0,)), np.zeros((samples, 0))]
        for start in range(0, len(x), batch_size):
            got = run.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(x[start:start + batch_size], np.float32)})
            rows = [np.concatenate([done, new.astype(np.float64)], axis=-1) for done, new in zip(rows, got)]
        return rows[0], rows[1]

    def view_probabilities(self, x: np.ndarray | Patches, *, tta: bool | None = None,
                           batch_size: int = INFERENCE_BATCH, device: str = "auto", precision: str = "auto",
                           screen: float | None = None) -> np.ndarray:
        """Rows as :func:`~napari_deep_prl.model.inference.view_probabilities` gives them for the
        exported checkpoints (``tta`` picks the views alike; ``screen`` scores the other views only
        of the patches whose first looks reach it, and leaves NaN in the others). The graph
        computes in float32: ``precision`` bfloat16 is refused."""
        if precision == "bfloat16":
            raise InputError("an ONNX model computes in float32; use --precision float32 or auto with it")
        wanted = [network.views if tta is None else TTA_VIEWS if tta else ((),) for network in self.networks]
        picked, first, start = [], [], 0
        for network, views in zip(self.networks, wanted):
            missing = [list(v) for v in views if v not in network.views]
            if missing:
                raise InputError(f"{self.path}: network {network.id} was exported with the views "
                                 f"{[list(v) for v in network.views]}, not {missing}; score it without "
                                 "--tta/--no-tta, or export the model from a checkpoint that records them")
            first.append(len(picked))
            picked += [start + network.views.index(v) for v in views]
            start += len(network.views)
        options = {"batch_size": batch_size, "device": device}
        one_each = len(picked) == len(first)  # --no-tta, or networks of one view
        if screen is None and not one_each:
            return self.outputs(x, **options)[1][picked]
        whole = None
        if [v[0] for v in wanted] == [n.views[0] for n in self.networks] and self._first_views_ready(device):
            looks = self.outputs(x, **options, part=FIRST_VIEWS)[1]
        else:
            whole = self.outputs(x, **options)[1][picked]
            looks = whole[first]
        if one_each:
            return looks
        rows = np.full((len(picked), len(x)), np.nan)
        rows[first] = looks
        rest = np.flatnonzero(looks.mean(0) >= screen)
        if rest.size:
            others = np.setdiff1d(np.arange(len(picked)), first)
            scored = whole[:, rest] if whole is not None else self.outputs(x[rest], **options)[1][picked]
            rows[np.ix_(others, rest)] = scored[others]
        return rows

    def session(self, device: str = "auto", part: str = WHOLE) -> Any:
        """The onnxruntime session of the graph or its first-view graph (``part``) on ``device``
        (auto: CUDA when onnxruntime has it), cached. The first-view graph is refused unless it is
        the one the graph names (its SHA-256)."""
        if (part, device) not in self._sessions:
            if part == WHOLE:
                self._sessions[part, device] = session(self.path, device)
            else:
                if self.first_views is None:
                    raise InputError(f"{self.path}: exported without a first-view graph (every network has one view)")
                graph = self.first_views.read_bytes()
                if hashlib.sha256(graph).hexdigest() != self.first_views_sha256:
                    raise CheckpointError(
                        f"{self.first_views}: not the first-view graph of {self.path} (its SHA-256 differs from "
                        f"the one {self.path.name} records): the two files come from different exports. Copy both "
                        "files of one `deep-prl export`, or export the model again")
                self._sessions[part, device] = session(graph, device)
        return self._sessions[part, device]

    def _first_views_ready(self, device: str) -> bool:
        """Whether the first-view graph can run the screen; its absence is warned about (the
        graph then scores every view: the same probabilities, slower)."""
        if self.first_views is None:
            return False
        if (FIRST_VIEWS, device) not in self._sessions and not self.first_views.is_file():
            warnings.warn(InputWarning(
                f"{self.first_views} is missing: {self.path.name} scores every view of every lesion (the same "
                "probabilities, the work of --tta). Keep the first-view file beside the model, as `deep-prl "
                "export` writes it, to screen lesions on their first views"), stacklevel=3)
            return False
        return True

    def check_test_vectors(self, vectors: str | Path | None = None) -> float:
        """The largest difference between the graphs' outputs here (the graph's, and the
        first-view graph's when the file is present) and the test vectors' (by default the file
        beside the graph, :func:`vectors_file`)."""
        vectors = vectors_file(self.path) if vectors is None else Path(vectors)
        if not vectors.is_file():
            raise InputError(f"{vectors}: no test vectors; they are written beside the graph by `deep-prl export`")
        with np.load(vectors, allow_pickle=False) as data:
            data = dict(data)
        worst = reproduces(self.session("cpu"), data)
        if "first_view_probabilities" in data and self.first_views is not None and self.first_views.is_file():
            worst = max(worst, reproduces(self.session("cpu", FIRST_VIEWS), data, FIRST_VIEWS))
        return worst


def first_views_file(path: str | Path) -> Path:
    """Where the first-view graph of the graph at ``path`` is: ``MODEL.onnx`` → ``MODEL.first.onnx``."""
    path = Path(path)
    return path.with_name(path.stem + ".first.onnx")


def vectors_file(path: str | Path) -> Path:
    """Where the test vectors of the graph at ``path`` are: ``MODEL.onnx`` → ``MODEL.test.npz``."""
    path = Path(path)
    return path.with_name(path.stem + ".test.npz")


def reproduces(run: Any, vectors: dict[str, np.ndarray], part: str = WHOLE) -> float:
    """The largest absolute difference between a session's outputs for ``vectors["patches"]``
    and the outputs the vectors hold for its graph (``part``: the whole head, or the first-view
    graph, whose rows are ``first_view_probabilities``)."""
    if part == FIRST_VIEWS:
        first = vectors["first_view_probabilities"]
        vectors = {"probability": first.mean(0), "view_probabilities": first, "patches": vectors["patches"]}
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
    if metadata.get("part") == FIRST_VIEWS:
        whole = path.with_name(metadata.get("whole", "MODEL.onnx"))
        raise CheckpointError(f"{path}: the first-view graph of {whole.name} (the screen of its scoring), not a "
                              f"whole model; score {whole}")
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

