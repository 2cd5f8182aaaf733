"""The forward pass: patches in, per-lesion PRL probability and uncertainty out.

Everything that runs a trained network on patches goes through here (nnU-Net keeps its
predictor apart from its trainer the same way): training's validation, the comparison of a
fine-tuned model with its parent, cross-validation, and scoring a cohort or a project. One
place decides

- **where and how** the network runs: the device (:func:`resolve_device`), the arithmetic
  (:func:`resolve_precision`: bfloat16 where the hardware computes it natively), the batching
  (:data:`INFERENCE_BATCH` patches per pass, a run of
  :func:`~napari_deep_prl.data.patches.chunk_length` patches read at a time);
- **which views** of each patch a network sees (:func:`checkpoint_views`): a view is a set of
  spatial axes to flip (flips keep the phase's dipole pattern); a checkpoint records the views
  its threshold and calibration were chosen on (all 8 flips by default, the patch as cut
  first), and is scored on exactly those;
- **which lesions need every view** (``screen``, what scoring does): every patch is seen first
  as cut by every network, and in its other views only when the mean of those first
  probabilities reaches the screen (:data:`SCREEN_SHARE` of the decision threshold). A lesion
  below it is far from being called PRL whatever its flips say, and most lesions are: a
  three-network model then costs about 5 passes per lesion instead of 24 and decides held-out
  lesions as with every view (docs/model.md, "Views");
- **how views and networks combine** (:func:`from_samples`): each view's probability goes
  through its own network's calibration
  (:meth:`~napari_deep_prl.model.checkpoint.Checkpoint.calibrate`), so networks calibrated on
  different validation patients average on one scale; the lesion's probability is the mean of
  the samples scored (networks × views), or the median of its first looks when the screen kept
  it to them, and the same samples give both uncertainty measures: their standard deviation
  (``uncertainty_sd``) and their mutual information (``bald``, in bits: the entropy of the mean
  minus the mean entropy, high when the samples disagree).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import expit

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.data.patches import chunk_length
from napari_deep_prl.model.dataset import Patches
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.model.views import TTA_VIEWS, View, checked_views

if TYPE_CHECKING:
    from napari_deep_prl.model.checkpoint import Checkpoint

PRECISIONS = ("auto", "float32", "bfloat16")

#: Patches per forward pass at inference: on a CPU the full-resolution maps of 8 patches (12
#: channels of 28³ float32, 8.4 MB a layer) stay in the cache; 16 ran 1.28× slower (median
#: 328 vs 419 lesions/s, idle, 2 threads).
INFERENCE_BATCH = 8
#: Patches per forward pass at inference on a GPU, where a pass of 8 leaves it idle (training's
#: validation passes use it; its speed is not measured: no GPU is available to the project's tests).
GPU_INFERENCE_BATCH = 256

#: The screen of scoring, as a share of the decision threshold: a lesion whose networks' first
#: views (the patch as cut) average below it is not scored on its other views, as it would need
#: its flips to double its probability to be called PRL. Held out, half the threshold sent 9-10 %
#: of the lesions on to every view and decided every lesion as every view did (docs/model.md,
#: "Views"; a quarter: 15 %, the same decisions).
SCREEN_SHARE = 0.5

#: Why a checkpoint may output raw rather than calibrated probabilities.
UNCALIBRATED_BECAUSE = ("trained by an older version, with --threshold-rule best_f1, or on validation "
                        "patients that could not calibrate them")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; asking for missing CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU; "
                         "use --device cpu (or auto)")
    if str(device) not in ("cpu",) and not str(device).startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the convolutions in training steps and scoring (torch autocast).

    ``"auto"`` is bfloat16 where the hardware computes it natively (CPUs with AVX512-BF16 or
    AMX, CUDA GPUs that support it) and float32 elsewhere: emulated bfloat16 is slower than
    float32. On such a CPU the default preset trains about 1.5x and scores about 1.2x faster in
    bfloat16; the weights, the loss and the probabilities stay float32 (docs/model.md,
    "bfloat16").
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; use {', '.join(PRECISIONS)}")
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16" or (precision == "auto" and _native_bfloat16(device)):
        return torch.bfloat16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """``"float32"`` or ``"bfloat16"``: the name a resolved precision is recorded and shown by."""
    return str(dtype).removeprefix("torch.")


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``; a no-op for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _native_bfloat16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Private torch probes (torch 2.x); without them, stay in float32.
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe() for probe in probes if probe is not None)


def for_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; channels-last on the CPU, where oneDNN's 3D convolutions want it."""
    x = to_device(x, device)
    return x.contiguous(memory_format=torch.channels_last_3d) if device.type == "cpu" else x


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` copied to ``device``; to a GPU through pinned memory, without waiting for it.

    A copy from ordinary (pageable) host memory makes CUDA finish the work queued before it, so
    a training step that copies its batch that way waits for the previous step; from pinned
    memory the copy is queued like a kernel (PyTorch keeps the pinned block until it is done).
    """
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


@torch.inference_mode()
def predict_views(fast: DeepPRL, x: np.ndarray | Patches, device: torch.device,
                  views: Sequence[View], batch_size: int | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits ``(len(views), n)`` of an inference copy (:func:`model.inference_copy`) on ``device``.

    One row per view; on a CPU small batches keep the full-resolution maps in cache
    (:data:`INFERENCE_BATCH`, the default there), on a GPU :data:`GPU_INFERENCE_BATCH` keep it
    busy, and the logits stay on it until all are computed. ``dtype`` bfloat16 runs the
    convolutions in it (see :func:`resolve_precision`); the head stays float32. ``x`` is read a
    run of about :func:`~napari_deep_prl.data.patches.chunk_length` patches at a time (a
    :class:`~napari_deep_prl.model.dataset.PatchSet`'s patches are cut there when it keeps volumes).
    """
    batch_size = batch_size or (GPU_INFERENCE_BATCH if device.type == "cuda" else INFERENCE_BATCH)
    out = torch.zeros(len(views), len(x), device=device)
    run = max(1, chunk_length(x.shape[-1]) // batch_size) * batch_size
    with autocast(device, dtype):
        for start in range(0, len(x), run):
            patches = x[start:start + run]
            for i in range(0, len(patches), batch_size):
                batch = for_device(torch.from_numpy(patches[i:i + batch_size]), device)
                at = slice(start + i, start + i + len(batch))
                for v, dims in enumerate(views):
                    out[v, at] = fast(batch.flip(dims) if dims else batch).float()
    return out.cpu()


def checkpoint_views(checkpoint: Checkpoint, tta: bool | None = None) -> tuple[View, ...]:
    """The views a checkpoint is scored on: those its threshold and calibration were chosen on.

    A checkpoint records them (``views``); one of an older version records only whether it used
    all of :data:`TTA_VIEWS` (``tta``), and one older still used the patch as cut. ``tta``
    True / False gives every flip / the patch as cut whatever was recorded (``deep-prl score
    --tta`` / ``--no-tta``), for studies.
    """
    if tta is not None:
        return TTA_VIEWS if tta else ((),)
    recorded = checkpoint.metadata.get("views")
    if recorded is not None:
        return checked_views(recorded)
    return TTA_VIEWS if checkpoint.tta else ((),)


def network_probabilities(checkpoint: Checkpoint, x: np.ndarray | Patches, views: Sequence[View], *,
                          batch_size: int = INFERENCE_BATCH, device: str = "auto",
                          precision: str = "auto") -> np.ndarray:
    """The network's raw PRL probabilities of ``x`` (``len(views)`` × patches), uncalibrated."""
    torch_device = resolve_device(device)
    dtype = resolve_precision(precision, torch_device)
    logits = predict_views(checkpoint.inference_model(torch_device), x, torch_device, views, batch_size, dtype)
    return expit(logits.numpy().astype(np.float64))


def view_probabilities(checkpoints: Sequence[Checkpoint], x: np.ndarray | Patches, *, tta: bool | None = None,
                       batch_size: int = INFERENCE_BATCH, device: str = "auto", precision: str = "auto",
                       calibrated: bool = True, screen: float | None = None) -> np.ndarray:
    """PRL probabilities, one row per checkpoint × view (:func:`checkpoint_views`), each
    calibrated as its checkpoint's output (:meth:`Checkpoint.calibrate`).

    ``screen`` (scoring): every patch is scored on each network's first view, and on its other
    views only where the mean of those first outputs reaches ``screen``; the rows hold NaN
    where a view was not scored. ``calibrated=False`` gives the networks' raw probabilities
    instead, for studies of the calibration itself (the cross-validation keeps them,
    :mod:`napari_deep_prl.evaluation.crossval`).
    """
    if not checkpoints:
        raise InputError("no model given; pass at least one checkpoint")
    raw = uncalibrated(checkpoints)
    if calibrated and 0 < len(raw) < len(checkpoints):
        warnings.warn(InputWarning(
            f"model(s) {', '.join(raw)} output raw probabilities ({UNCALIBRATED_BECAUSE}) and "
            "the others calibrated ones, so their average mixes two scales; score them apart, or "
            "retrain them with the default rule"), stacklevel=2)
    views = [checkpoint_views(c, tta) for c in checkpoints]

    def scored(c: Checkpoint, patches: np.ndarray | Patches, seen: Sequence[View]) -> np.ndarray:
        probability = network_probabilities(c, patches, seen, batch_size=batch_size, device=device,
                                            precision=precision)
        return c.calibrate(probability) if calibrated else probability

    if screen is None:
        return np.concatenate([scored(c, x, seen) for c, seen in zip(checkpoints, views)])
    first = [scored(c, x, seen[:1]) for c, seen in zip(checkpoints, views)]
    rest = np.flatnonzero(np.mean(first, axis=0)[0] >= screen)
    rows = []
    for c, seen, on_first in zip(checkpoints, views, first):
        out = np.full((len(seen), len(x)), np.nan)
        out[:1] = on_first
        if len(seen) > 1 and rest.size:
            out[1:, rest] = scored(c, x[rest], seen[1:])
        rows.append(out)
    return np.concatenate(rows)


def uncalibrated(checkpoints: Sequence[Checkpoint]) -> list[str]:
    """Ids of the checkpoints whose output is the network's raw probability."""
    return [c.id for c in checkpoints if c.calibration is None]


@dataclass(frozen=True)
class Prediction:
    """Per-lesion PRL probability and the two uncertainty measures of the same samples."""

    #: The model's output: the mean of the samples scored (networks × views); for a lesion the
    #: screen kept to its first looks, their median (see :func:`from_samples`).
    probability: np.ndarray
    #: Sample standard deviation of the samples; NaN for a single sample.
    uncertainty_sd: np.ndarray
    #: Mutual information of the samples (BALD), in bits; NaN for a single sample.
    bald: np.ndarray


def from_samples(samples: np.ndarray) -> Prediction:
    """The prediction of per-sample probabilities ``samples`` (samples × lesions; NaN: a sample
    not scored for that lesion, see ``screen`` in :func:`view_probabilities`).

    A lesion with samples left out was kept by the screen to one view per network, and takes
    the median of those instead of their mean: each network saw it in one orientation only, and
    one network's false alarm on that view, which its other flips would have averaged away,
    sets a mean of three. Their median ranks those lesions much as the mean of every view does
    (held out, ROC AUC 0.960 against 0.963 for every view and 0.949 for the mean of the first
    looks; docs/model.md, "Views"), and, as the median of K samples is at most twice their mean,
    it stays below a threshold the screen is half of: such a lesion is never called PRL.
    """
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    count = np.isfinite(samples).sum(0)
    mean = np.nansum(samples, 0) / count
    screened_out = count < len(samples)
    probability = mean.copy()
    if screened_out.any():
        probability[screened_out] = np.nanmedian(samples[:, screened_out], 0)
    several = count > 1
    sd, bald = np.full(mean.shape, np.nan), np.full(mean.shape, np.nan)
    if several.any():
        spread = samples[:, several] - mean[several]
        sd[several] = np.sqrt(np.nansum(spread**2, 0) / (count[several] - 1))
        bald[several] = mutual_information(samples[:, several])
    return Prediction(probability, sd, bald)


def predict(checkpoints: Sequence[Checkpoint], x: np.ndarray | Patches, *, tta: bool | None = None,
            batch_size: int = INFERENCE_BATCH, device: str = "auto", precision: str = "auto") -> Prediction:
    """The model's prediction of patches ``x``: its networks × views (:func:`view_probabilities`)
    combined by :func:`from_samples`."""
    return from_samples(view_probabilities(checkpoints, x, tta=tta, batch_size=batch_size, device=device,
                                           precision=precision))


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a PRL probability: 0 when sure, 1 at p = 0.5."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def mutual_information(samples: np.ndarray) -> np.ndarray:
    """BALD score of ``samples`` (samples × lesions; NaN samples left out): entropy of the mean
    minus mean entropy."""
    samples = np.asarray(samples, dtype=np.float64)
    scored = np.isfinite(samples)
    count = scored.sum(0)
    mean = np.where(scored, samples, 0).sum(0) / count
    mean_entropy = np.where(scored, binary_entropy(np.where(scored, samples, 0.5)), 0).sum(0) / count
    return np.maximum(binary_entropy(mean) - mean_entropy, 0.0)
