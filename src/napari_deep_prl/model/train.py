"""Training Deep-PRL: the paper's recipe as a stoppable generator of progress events.

Recipe (all in :class:`TrainConfig`): Adam (lr 1e-3, weight decay 3e-5), learning rate decayed
per step as ``lr · (1 - t/T)^0.9`` (polynomial, power 0.9), batches of 32 drawn class-balanced
(each sample is a PRL with probability 1/2, then a uniform patch of that class, with
replacement; ``samples_per_epoch`` of them per epoch: 640 by default, so that an epoch costs the
same whatever the cohort and 30 epochs of the CPU preset fit in minutes; ``None`` means one
draw per training patch), the paper's augmentation on every batch
(:mod:`napari_deep_prl.model.augment`), focal loss (γ 2, α 0.2 on PRLs). One deviation from the
paper: its lr 1e-4 suits 100 epochs of a few thousand lesions (~20,000 steps on a GPU); a CPU
budget of 30 epochs × 20 steps had not converged at 1e-4, so the default is 1e-3 (``lr=1e-4``
reproduces the paper).

Validation: the patients in ``val_subjects`` (by default a seeded ``val_fraction`` of them,
stratified by PRL-count group like the cross-validation folds) are held out of training; after
every epoch their lesions (original patches only) are scored: loss, best F1, ROC AUC and the
decision threshold. Which model is kept (``keep``):

``"last"`` (default)
    the model at the end of training, when the learning rate has decayed to zero. A validation
    split of a few patients holds about ten PRLs, so its F1 moves by 0.05 per lesion and from
    epoch to epoch; the epoch with the best of 30 such scores is mostly the luckiest one, often
    an early, under-trained model (docs/model.md, "Which model is kept").
``"best"`` (the paper's rule)
    the epoch with the best validation F1 (ties: higher ROC AUC, then lower loss).

Either way the decision rule is chosen on the kept model's validation predictions on the views
scoring will use (all 8 flips with ``tta``, else the patch as cut; recorded in the checkpoint as
``views``), by ``threshold_rule`` (:func:`~napari_deep_prl.model.metrics.operating_point`):

``"calibrated"`` (default)
    a Platt fit to those predictions becomes part of the model (``Checkpoint.calibration``):
    its output is the calibrated probability, cut at half the best validation F1 — the
    F1-optimal cut of calibrated probabilities. Every validation lesion places it, so it moves
    about half as much between validation splits as the argmax below, and models calibrated
    on different patients average on one scale (docs/evaluation.md, "A calibrated threshold"
    and "Each model calibrated").
``"best_f1"`` (the paper's rule)
    the raw probability, cut where it maximises the validation F1, a cut set by the one or two
    lesions at the edge of that maximum.

``history[0]`` is the model before training (the parent model when fine-tuning), and it competes
with the kept model, so training never returns a model worse on validation than where it started
— unless ``keep_start=False``: fine-tuning round after round on one small validation set, the
model kept last time was the luckiest of many noisy validation scores, and fresh epochs rarely
beat it, so a loop of fine-tunes (e.g. active learning) would stop moving.

Reproducible: the seed fixes the initial weights, the batches and the augmentation (random
numbers drawn on the CPU), so the same seed gives the same model on the same machine and thread
count. Stopping (``stop.set()``, e.g. a GUI's cancel button or Ctrl-C in the CLI) ends training
after the current step; the partial epoch is validated and the best model so far (by validation
F1) returned, whatever ``keep`` says: a stopped run's last weights are not converged.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.model.augment import AugmentConfig, augment_batch
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.inference import (
    TTA_VIEWS,
    autocast,
    for_device,
    precision_name,
    predict_views,
    resolve_device,
    resolve_precision,
)
from napari_deep_prl.model.losses import focal_loss
from napari_deep_prl.model.metrics import (
    THRESHOLD_RULES,
    OperatingPoint,
    model_output,
    operating_point,
    roc_auc,
)
from napari_deep_prl.model.network import PRESETS, DeepPRL, ModelConfig, inference_copy


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (the paper's, except ``lr`` and ``samples_per_epoch``: CPU budget)."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 3e-5
    poly_power: float = 0.9
    samples_per_epoch: int | None = 640
    gamma: float = 2.0
    alpha: float = 0.2
    augment: AugmentConfig = AugmentConfig()
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    model: ModelConfig = field(default_factory=lambda: PRESETS["default"])
    #: The model before training competes for the best validation score (see the module doc).
    keep_start: bool = True
    #: Choose the kept model's threshold and calibration on its validation probabilities averaged
    #: over the :data:`TTA_VIEWS` (all 8 flips), the views that scoring then averages; ``False``:
    #: on the patch as cut. The checkpoint records them (``views``).
    tta: bool = True
    #: Which model is kept: the last epoch's or the best-validation-F1 one (see the module doc).
    keep: Literal["last", "best"] = "last"
    #: Arithmetic of the training steps (see :func:`resolve_precision`); validation, and so the
    #: threshold, always runs in float32.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    #: How the kept model's decision threshold is chosen on validation (see the module doc).
    threshold_rule: Literal["calibrated", "best_f1"] = "calibrated"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or not 0 < self.val_fraction < 1:
            raise InputError("epochs must be >= 0, batch_size >= 1 and val_fraction in (0, 1)")
        if self.keep not in ("last", "best"):
            raise InputError(f"unknown keep rule '{self.keep}'; use 'last' or 'best'")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise InputError(f"unknown threshold rule '{self.threshold_rule}'; use one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        resolve_precision(self.precision, torch.device("cpu"))  # refuses unknown names


@dataclass
class TrainResult:
    """The kept checkpoint, the per-epoch history (``history[0]``: before training)."""

    checkpoint: Checkpoint
    history: list[dict[str, float]]
    kept_epoch: int
    stopped: bool


def split_validation(patches: PatchSet, fraction: float, seed: int) -> list[str]:
    """A seeded patient-level validation split, stratified by PRL-count group."""
    counts = patches.prl_counts()
    if len(counts) < 2:
        raise InputError(f"{len(counts)} subject(s): training needs at least 2, "
                         "one of them held out for validation")
    return validation_shares(counts, 1, fraction, seed)[0]


def train(patches: PatchSet, config: TrainConfig = TrainConfig(), *,
          val_subjects: Sequence[str] | None = None, init: Checkpoint | None = None,
          stop: threading.Event | None = None) -> Generator[Progress, None, TrainResult]:
    """Train on ``patches`` (less ``val_subjects``), yielding progress; return the best model.

    ``init`` fine-tunes an existing checkpoint (its architecture and patch settings are kept;
    ``config.model`` is then ignored).
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    if val_subjects is None:
        val_subjects = split_validation(patches, config.val_fraction, config.seed)
    train_ids = [s for s in patches.subjects if s not in set(val_subjects)]
    if not train_ids:
        raise InputError("every subject is in the validation set; nothing is left to train on")
    # the training patches are drawn from ``patches`` by row, not copied: the set is held once
    validation = patches.select(val_subjects).originals()
    training = np.flatnonzero(np.isin(patches.subject, train_ids))
    positives, negatives = training[patches.y[training] == 1], training[patches.y[training] == 0]
    if positives.size == 0 or negatives.size == 0:
        raise InputError(f"the training subjects have {positives.size} PRL and {negatives.size} "
                         "non-PRL lesions; both classes are needed")

    torch.manual_seed(config.seed)
    model = _initial_model(patches, config, init).to(device)
    if device.type == "cpu":  # as the batches (see for_device)
        model = model.to(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-(config.samples_per_epoch or len(training)) // config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda t: max(0.0, 1 - t / max(total_steps, 1)) ** config.poly_power)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    scores, point = _validate(model, validation, config, device)
    history = [{"epoch": 0, "loss": float("nan"), **scores}]
    start = _Best(history[0], model, point)
    best = start if config.keep_start else None
    yield Progress(0, config.epochs, "epoch", "before training", _shown(history[0]))
    stopped = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses: list[float] = []
        for step in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                stopped = True
                break
            rows = _balanced_rows(rng, positives, negatives, config.batch_size)
            losses.append(_step(model, optimiser, patches, rows, config, generator, device, dtype))
            scheduler.step()
            yield Progress(step + 1, steps_per_epoch, "batch", f"epoch {epoch}", {"loss": losses[-1]})
        if not losses:
            break
        scores, point = _validate(model, validation, config, device)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), **scores}
        if stopped:
            record["partial"] = True
        history.append(record)
        if best is None or _rank(record) > _rank(best.record):
            best = _Best(record, model, point)
        yield Progress(epoch, config.epochs, "epoch", "stopped" if stopped else "", _shown(record))
        if stopped:
            break

    if config.keep == "last" and not stopped and len(history) > 1:
        last = _Best(history[-1], model, point)
        best = start if config.keep_start and _rank(start.record) > _rank(last.record) else last
    best = best or start  # stopped before the first step, with keep_start=False
    model.load_state_dict(best.state)
    model.eval()
    views = TTA_VIEWS if config.tta else ((),)
    kept, point = _validate(model, validation, config, device, views) if config.tta else (best.record, best.point)
    summary = {
        "train_subjects": train_ids, "val_subjects": list(val_subjects),
        "train_patches": len(training), "train_prl_patches": int(positives.size),
        "train_lesions": int((~patches.shifted[training]).sum()), "val_lesions": len(validation),
        "train_confluent_parts": None if patches.part is None
        else int((patches.part[training] & ~patches.shifted[training]).sum()),
        "val_prl_lesions": int(validation.y.sum()), "epochs_run": len(history) - 1,
        "steps_per_epoch": steps_per_epoch, "kept_epoch": best.record["epoch"], "keep": config.keep,
        "stopped": stopped,
        "seconds": round(time.perf_counter() - started, 1), "device": str(device),
        "precision": precision_name(dtype),
        "config": _jsonable(asdict(config)),
    }
    metadata: dict[str, Any] = {"training": summary, "validation": best.record, "tta": config.tta,
                                "views": [list(view) for view in views]}
    if config.tta:
        metadata["validation_tta"] = kept
    if init is not None:
        metadata["parent"] = init.id
    if patches.grids:  # the grids the training subjects' images came on
        metadata["grids"] = patches.grids
    checkpoint = Checkpoint(model.to(memory_format=torch.contiguous_format),
                            point.threshold, patches.config, metadata, point.calibration)
    return TrainResult(checkpoint, history, best.record["epoch"], stopped)


def _initial_model(patches: PatchSet, config: TrainConfig, init: Checkpoint | None) -> DeepPRL:
    if init is None:
        return DeepPRL(config.model, patches.config.size, patches.config.contrasts)
    if init.patch_config != patches.config:
        raise InputError(f"the model to fine-tune was trained on patches {init.patch_config}, "
                         f"these are {patches.config}; cut the patches with the model's settings")
    return copy.deepcopy(init.model)


def _balanced_rows(rng: np.random.Generator, positives: np.ndarray, negatives: np.ndarray,
                   n: int) -> np.ndarray:
    """Class-balanced draw with replacement: each row is a PRL with probability 1/2."""
    is_positive = rng.random(n) < 0.5
    rows = negatives[rng.integers(negatives.size, size=n)]
    rows[is_positive] = positives[rng.integers(positives.size, size=int(is_positive.sum()))]
    return np.sort(rows)  # sorted rows read the patch array in order


def _step(model: DeepPRL, optimiser: torch.optim.Optimizer, patches: PatchSet, rows: np.ndarray,
          config: TrainConfig, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> float:
    x = for_device(augment_batch(torch.from_numpy(patches.x[rows]).to(device), config.augment, generator), device)
    y = torch.from_numpy(patches.y[rows]).to(device)
    with autocast(device, dtype):
        logits = model(x)
    loss = focal_loss(logits.float(), y, gamma=config.gamma, alpha=config.alpha)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def _validate(model: DeepPRL, validation: PatchSet, config: TrainConfig, device: torch.device,
              views: Sequence[tuple[int, ...]] = ((),)) -> tuple[dict[str, float], OperatingPoint]:
    """Loss, best F1 and threshold, ROC AUC of the model's output on the validation lesions
    (``views`` averaged), and the operating point behind them (:func:`operating_point`)."""
    logits = predict_views(inference_copy(model, device), validation.x, device, views)
    raw = torch.sigmoid(logits.double())
    if not torch.isfinite(raw).all():
        raise InputError(f"training diverged: the network's outputs on the validation lesions are not finite "
                         f"(precision {config.precision}, learning rate {config.lr}). Train again with "
                         "--precision float32 or a lower --lr, and with patches that hold the lesions "
                         "(--patch-size).")
    truth = torch.from_numpy(validation.y.astype(np.float32))
    # the loss of the raw probability (of its mean over views), as the network is trained
    mean_logit = logits[0] if len(views) == 1 else torch.logit(raw.mean(0), eps=1e-12).float()
    loss = float(focal_loss(mean_logit, truth, gamma=config.gamma, alpha=config.alpha)) if len(truth) else float("nan")
    point = operating_point(validation.y, raw.numpy(), config.threshold_rule)
    output = model_output(raw.numpy(), point.calibration)
    return ({"val_loss": loss, "val_f1": point.f1, "val_auc": roc_auc(validation.y, output),
             "threshold": point.threshold}, point)


class _Best:
    """A validation record, its operating point and a copy of the weights they were measured on."""

    def __init__(self, record: dict[str, float], model: DeepPRL, point: OperatingPoint) -> None:
        self.record, self.point, self.state = record, point, _copy_state(model)


def _rank(record: dict[str, float]) -> tuple[float, float, float]:
    def finite(v: float, default: float) -> float:
        return v if np.isfinite(v) else default

    return (record["val_f1"], finite(record["val_auc"], -1.0), -finite(record["val_loss"], np.inf))


def _copy_state(model: DeepPRL) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _shown(record: dict[str, float]) -> dict[str, float]:
    return {k: record[k] for k in ("loss", "val_loss", "val_f1", "val_auc") if np.isfinite(record[k])}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
