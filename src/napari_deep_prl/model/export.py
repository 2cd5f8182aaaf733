"""Exporting a trained model's whole scoring head as one ONNX graph, for use elsewhere.

The graph (:class:`ScoringHead`) takes a batch of normalised patches ``(n, C, s, s, s)`` (cut as
:mod:`napari_deep_prl.data.patches` cuts them, channels in the order the metadata names) and
computes what :func:`~napari_deep_prl.model.inference.view_probabilities` computes in PyTorch:
every network of the ensemble on each of its views (axis flips), each view's probability through
its own network's calibration (:meth:`~napari_deep_prl.model.checkpoint.Checkpoint.calibrate`),
and their average. Outputs: ``probability`` ``(n,)``, the model's PRL probability of each patch
with every view scored, and ``view_probabilities`` ``(samples, n)``, one row per network × view
(networks in order, each one's views in order), from which the uncertainty columns are computed
and the scoring screen is applied (:class:`~napari_deep_prl.model.onnx_model.OnnxModel`).

Scoring screens lesions (:data:`~napari_deep_prl.model.inference.SCREEN_SHARE`): each network's
first view (the patch as cut) of every lesion, its other views only for lesions whose first looks
reach the screen. One ONNX graph computes all of its outputs whatever is asked of it, so the
screen needs a graph of its own: when a network has more than one view, ``MODEL.first.onnx``
(:func:`~napari_deep_prl.model.onnx_model.first_views_file`) beside ``MODEL.onnx`` is the same
head on each network's first view alone (same input and output names; ``view_probabilities``
then has one row per network). ``MODEL.onnx`` names it and its SHA-256 in its metadata
(``first_views``, ``first_views_sha256``) and stays the whole model: every tool can score with it
alone, and this package's scoring runs the screen on it when the first-view file is absent.

What a user elsewhere needs to feed it travels inside the file as ONNX ``metadata_props``
(:func:`export_spec`): the patch settings (size, normalisation, mask dilation, other lesions,
phase centre), the channels and their sign conventions, the decision threshold, each network's id,
threshold, calibration and views, and the package version. Beside the file, ``<name>.test.npz``
(:func:`vectors_file`) holds test vectors: a few synthetic patches and the outputs the
PyTorch scoring path gives them, so a runtime can be checked; the export runs them through
onnxruntime and refuses to leave a graph that does not reproduce them.

The graph is exported by PyTorch's ``torch.export``-based exporter (``torch.onnx.export(...,
dynamo=True)``, which needs ``onnxscript``); each network runs once on its views stacked along
the batch axis, which keeps the graph small (two default networks with 8 views: about 35 s on a
busy 2-core machine, against minutes with one network call per view). Needs the ``onnx`` extra
(``pip install napari-deep-prl[onnx]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.special import logit
from torch import nn

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import CheckpointError, InputError
from napari_deep_prl.base.tables import write_atomic
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.inference import SCREEN_SHARE, checkpoint_views, uncalibrated, view_probabilities
from napari_deep_prl.model.metrics import _EPS as PROBABILITY_FLOOR
from napari_deep_prl.model.network import inference_copy
from napari_deep_prl.model.onnx_model import (
    FIRST_VIEWS,
    FORMAT,
    FORMAT_VERSION,
    INPUT,
    OUTPUTS,
    SPEC_KEY,
    TEST_TOLERANCE,
    WHOLE,
    first_views_file,
    reproduces,
    session,
    vectors_file,
)
from napari_deep_prl.model.views import View

#: Synthetic patches in the test vectors beside an exported graph.
TEST_PATCHES = 4
#: The ONNX operator set the graph is written in (onnxruntime 1.14 and later run it).
OPSET = 18
#: What each channel a model may take means, and its sign convention, for the metadata.
CHANNEL_MEANINGS = {
    "mp2rage": "MP2RAGE (or another T1-weighted image): tissue contrast, lesions dark",
    "t1w": "T1-weighted image: tissue contrast, lesions dark",
    "flair": "FLAIR: lesions bright",
    "phase": "unwrapped, high-pass filtered phase: paramagnetic dark (negate a phase where it is bright)",
    "qsm": "susceptibility (ppm): paramagnetic bright",
    "mask": "this lesion's mask dilated by patch.mask_dilation voxels: 1 inside, other lesions as patch.other_lesions",
}


class ScoringHead(nn.Module):
    """The ensemble's scoring head as one module: the graph that is exported (see the module doc).

    Each network runs once per batch on its views stacked along the batch axis; a calibrated
    network's logit is clamped where :meth:`PlattFit.calibrate` clips the raw probability, so
    the graph computes that function in float32.
    """

    def __init__(self, checkpoints: Sequence[Checkpoint], *, first_views: bool = False) -> None:
        super().__init__()
        cpu = torch.device("cpu")
        # the inference copy (batch norms folded) in the default layout: no channels-last copies in the graph
        self.networks = nn.ModuleList(inference_copy(c.model, cpu).to(memory_format=torch.contiguous_format)
                                      for c in checkpoints)
        # first_views: each network's first view alone, the screen of scoring
        self.views: list[tuple[View, ...]] = [checkpoint_views(c)[:1] if first_views else checkpoint_views(c)
                                              for c in checkpoints]
        bound = float(logit(1 - PROBABILITY_FLOOR))
        self.calibrations = [None if c.calibration is None else (asdict(c.calibration), bound) for c in checkpoints]

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for network, views, calibration in zip(self.networks, self.views, self.calibrations):
            seen = torch.cat([patches.flip(dims) if dims else patches for dims in views])
            logits = network(seen).reshape(len(views), -1)
            if calibration is not None:
                fit, bound = calibration
                score = (logits.clamp(-bound, bound) - fit["centre"]) / fit["scale"]
                logits = fit["slope"] * score + fit["intercept"]
            rows.append(torch.sigmoid(logits))
        samples = torch.cat(rows)
        return samples.mean(0), samples


def checked_ensemble(checkpoints: Sequence[Checkpoint]) -> None:
    """Refuse networks that one graph cannot hold together: one input means one patch setting
    and one channel list, and one average means one output scale (all calibrated, or none)."""
    if not checkpoints:
        raise InputError("no model given; pass at least one checkpoint to export")
    first = checkpoints[0].describe()
    for i, checkpoint in enumerate(checkpoints[1:], start=2):
        other = checkpoint.describe()
        for key, what in (("patch", "patch settings"), ("channels", "channels"), ("contrasts", "contrasts")):
            if other.get(key) != first.get(key):
                raise CheckpointError(
                    f"network {i} ({checkpoint.id}) has other {what} than network 1 ({checkpoints[0].id}): "
                    f"{other.get(key)} against {first.get(key)}; one graph takes one kind of patch: export "
                    "the networks apart (one `deep-prl export` each)")
    raw = uncalibrated(checkpoints)
    if 0 < len(raw) < len(checkpoints):
        raise CheckpointError(f"network(s) {', '.join(raw)} output raw probabilities and the others calibrated "
                              "ones, so their average would mix two scales; export them apart, or retrain them "
                              "with the default threshold rule")


def export_spec(checkpoints: Sequence[Checkpoint]) -> dict[str, Any]:
    """The preprocessing and decision spec an exported graph carries (JSON-serialisable)."""
    described = [c.describe() for c in checkpoints]
    first = described[0]
    channels = list(first["channels"])
    threshold = float(np.mean([c.threshold for c in checkpoints]))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "input": {"name": INPUT, "shape": ["batch", len(channels), *[first["patch_size"]] * 3],
                  "dtype": "float32"},
        "outputs": {"probability": "(batch,): the model's PRL probability, every view of every network averaged",
                    "view_probabilities": "(samples, batch): each network x view, calibrated, networks in "
                                          "order and each one's views in order"},
        "channels": channels,
        **({"contrasts": first["contrasts"]} if "contrasts" in first else {}),
        "channel_meanings": {name: CHANNEL_MEANINGS.get(name, "") for name in channels},
        "patch": first["patch"],
        "patch_size": first["patch_size"],
        "threshold": threshold,
        "screen": SCREEN_SHARE * threshold,
        "networks": [{key: d.get(key) for key in ("id", "threshold", "calibration", "model", "validation",
                                                  "package_version")}
                     | {"views": [list(v) for v in checkpoint_views(c)]}
                     for c, d in zip(checkpoints, described)],
    }


def metadata_props(spec: dict[str, Any]) -> dict[str, str]:
    """The ONNX ``metadata_props`` of ``spec``: the whole spec as JSON under ``napari_deep_prl``
    and its most used fields as keys of their own, for tools that list them."""
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "patch_size": str(spec["patch_size"]),
        "channels": ",".join(spec["channels"]),
        "threshold": repr(spec["threshold"]),
        "model_ids": ",".join(n["id"] for n in spec["networks"]),
        SPEC_KEY: json.dumps(spec, sort_keys=True),
    }


def synthetic_patches(channels: int, size: int, n: int = TEST_PATCHES, seed: int = 0) -> np.ndarray:
    """Synthetic patches in [0, 1]: smooth noise in the image channels, a ball in the last (mask)
    channel, of growing size. For checking a runtime's arithmetic, not the model's accuracy."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((n, channels, size, size, size)), sigma=(0, 0, 1.5, 1.5, 1.5))
    lo, hi = x.min(axis=(2, 3, 4), keepdims=True), x.max(axis=(2, 3, 4), keepdims=True)
    x = (x - lo) / np.maximum(hi - lo, 1e-12)
    grid = np.indices((size,) * 3) - (size - 1) / 2
    radius = np.sqrt((grid**2).sum(0))
    for i in range(n):
        x[i, -1] = radius <= size * (0.15 + 0.25 * i / max(n - 1, 1))
    return x.astype(np.float32)


@dataclass(frozen=True)
class ExportedFiles:
    """What :func:`export_onnx` wrote: the graph, its first-view graph (``None`` when every
    network has one view: the graph itself is then the screen) and the test vectors."""

    graph: Path
    first_views: Path | None
    vectors: Path


def export_onnx(checkpoints: Sequence[Checkpoint], path: str | Path) -> ExportedFiles:
    """Write the scoring head of ``checkpoints`` (one model: an ensemble's networks) as an ONNX
    graph at ``path``, with its spec as metadata, its first-view graph
    (:func:`~napari_deep_prl.model.onnx_model.first_views_file`, see the module doc) and its test
    vectors beside it; each file is written atomically, the graph last."""
    checked_ensemble(checkpoints)
    onnx = _import_onnx()
    path = Path(path)
    spec = export_spec(checkpoints)
    x = synthetic_patches(len(spec["channels"]), spec["patch_size"])
    # the reference: the PyTorch scoring path itself, in float32 on the CPU
    expected = view_probabilities(checkpoints, x, device="cpu", precision="float32").astype(np.float32)
    vectors = {"patches": x, "probability": expected.mean(0), "view_probabilities": expected}
    head = ScoringHead(checkpoints).eval()
    model = _traced(head, torch.from_numpy(x[:2]))
    _check_runs(model.SerializeToString(), vectors, path)
    first_path, first_bytes, props = None, b"", {}
    if any(len(views) > 1 for views in head.views):
        first_path = first_views_file(path)
        starts = np.cumsum([0] + [len(views) for views in head.views[:-1]])
        vectors["first_view_probabilities"] = expected[starts]
        first = _traced(ScoringHead(checkpoints, first_views=True).eval(), torch.from_numpy(x[:2]))
        part = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "package_version": __version__,
                "part": FIRST_VIEWS, "whole": path.name, "model_ids": ",".join(c.id for c in checkpoints)}
        _describe(onnx, first, part,
                  f"The first view of each network of {path.name}: the screen of its scoring (napari-deep-prl).")
        first_bytes = first.SerializeToString()
        _check_runs(first_bytes, vectors, first_path, part=FIRST_VIEWS)
        props = {"first_views": first_path.name, "first_views_sha256": hashlib.sha256(first_bytes).hexdigest()}
    # every graph checked: now the files, the graph that names the others last
    if first_path is not None:
        write_atomic(first_path, lambda fh: fh.write(first_bytes), binary=True)
    spec["first_views"] = None if first_path is None else first_path.name
    vectors_path = vectors_file(path)
    write_atomic(vectors_path, lambda fh: np.savez_compressed(fh, **vectors), binary=True)
    digest = hashlib.sha256(vectors_path.read_bytes()).hexdigest()
    _describe(onnx, model, {**metadata_props(spec), **props, "test_vectors": vectors_path.name,
                            "test_vectors_sha256": digest},
              "PRL probability of lesion-centred patches (napari-deep-prl); see the metadata.")
    write_atomic(path, lambda fh: fh.write(model.SerializeToString()), binary=True)
    return ExportedFiles(path, first_path, vectors_path)


def _describe(onnx: Any, model: Any, props: dict[str, str], doc: str) -> None:
    """Name the producer of an exported ``model``, its doc string and metadata."""
    model.producer_name, model.producer_version = "napari-deep-prl", __version__
    model.doc_string = doc
    onnx.helper.set_model_props(model, props)


def _traced(head: ScoringHead, example: torch.Tensor) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``head`` exported on ``example``, with a dynamic
    batch axis."""
    # torch's exporter logs the torchvision operators it skips and warns about its own internals:
    # nothing a user can act on
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            program = torch.onnx.export(head, (example,), input_names=[INPUT], output_names=list(OUTPUTS),
                                        dynamic_shapes={"patches": {0: torch.export.Dim("batch")}},
                                        opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    finally:
        registration.setLevel(level)
    return program.model_proto


def _check_runs(graph: bytes, vectors: dict[str, np.ndarray], path: Path, part: str = WHOLE) -> None:
    """Refuse a graph whose outputs in onnxruntime differ from the PyTorch path's."""
    worst = reproduces(session(graph, "cpu"), vectors, part)
    if not worst <= TEST_TOLERANCE:
        raise CheckpointError(f"{path}: the exported graph gives probabilities {worst:.2g} away from PyTorch's in "
                              f"onnxruntime (more than {TEST_TOLERANCE:g}); nothing was written. Report this "
                              "with the model, the torch and the onnxruntime versions")


def _import_onnx() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the export checks the graph in it)
        import onnxscript  # noqa: F401  (torch's exporter writes the graph with it)
    except ImportError as err:
        raise InputError(f"exporting to ONNX needs the onnx extra ({err.name} is missing): "
                         "pip install 'napari-deep-prl[onnx]'") from err
    return onnx
