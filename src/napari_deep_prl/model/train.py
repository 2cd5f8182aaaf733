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
count, trained the same way: several networks trained stacked (:func:`train_together`, on a GPU
by default) each come out as trained alone up to float32 rounding.

Stopping (``stop.set()``, e.g. a GUI's cancel button or Ctrl-C in the CLI) ends training after
the current step; the partial epoch is validated and the best model so far (by validation F1)
returned, whatever ``keep`` says: a stopped run's last weights are not converged.

On a GPU the host should queue steps ahead of the device: the loss is read once per
:data:`LOSS_READ_STEPS` steps, batches are copied through pinned memory (the patch set staged on
the device when it fits), and ``batch_size`` may be raised (:func:`auto_batch_size`).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.patches import PatchConfig, chunks
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
    to_device,
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

#: The paper's batch size, the default (``--batch-size auto`` on a CPU).
BATCH_SIZE = 32
#: The largest batch ``--batch-size auto`` picks on a GPU: with the default 640 samples per epoch,
#: 256 leaves 3 steps an epoch.
MAX_AUTO_BATCH = 256
#: The training loss is read from the device (a host round-trip that waits for the GPU) every
#: this many steps and at the end of each epoch; the batch progress shows the epoch's mean so far.
LOSS_READ_STEPS = 10
STACK_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (the paper's, except ``lr`` and ``samples_per_epoch``: CPU budget)."""

    epochs: int = 100
    #: Patches per step (and per network). The learning rate is per step and not scaled with it: a
    #: larger batch takes fewer, less noisy steps per epoch (:func:`auto_batch_size`).
    batch_size: int = BATCH_SIZE
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
    #: An ensemble's networks trained stacked, in one forward and backward pass per step
    #: (:func:`train_together`): ``"auto"`` on CUDA only, ``"on"``, ``"off"`` (one after another).
    stack: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or not 0 < self.val_fraction < 1:
            raise InputError("epochs must be >= 0, batch_size >= 1 and val_fraction in (0, 1)")
        if self.keep not in ("last", "best"):
            raise InputError(f"unknown keep rule '{self.keep}'; use 'last' or 'best'")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise InputError(f"unknown threshold rule '{self.threshold_rule}'; use one of "
                             f"{', '.join(THRESHOLD_RULES)}")
        if self.stack not in STACK_CHOICES:
            raise InputError(f"unknown stack setting '{self.stack}'; use one of {', '.join(STACK_CHOICES)}")
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
    runs = yield from train_together(patches, [config], [val_subjects], [init], stop=stop)
    return runs[0]


def train_together(patches: PatchSet, configs: Sequence[TrainConfig],
                   val_subjects: Sequence[Sequence[str] | None], inits: Sequence[Checkpoint | None], *,
                   stop: threading.Event | None = None) -> Generator[Progress, None, list[TrainResult]]:
    """Train one network per config in one loop of steps, each as :func:`train` would alone.

    Each network keeps its own seed (initial weights, batches, augmentation), validation
    patients, history, kept epoch and calibration. With one network, or ``stack`` off, the
    networks are :class:`DeepPRL` modules stepped in turn; stacked (:func:`stacks`), their
    weights are stacked and one ``vmap``-ed forward and backward pass steps them all, so that a
    GPU runs K networks' small kernels as one launch each. The configs may differ only in
    ``seed`` (the steps, learning rate and device are shared). A stop stops every network.
    """
    started = time.perf_counter()
    config = configs[0]
    if any(replace(c, seed=config.seed) != config for c in configs):
        raise InputError("networks trained together may differ in their seed only")
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    members = [_Member(patches, c, val, init, device) for c, val, init in zip(configs, val_subjects, inits)]
    stepper: _Steps = (_Stacked(members, config, device) if len(members) > 1 and stacks(config, device)
                       else _Separate(members, config, device))
    per_epoch = {max(1, -(-(config.samples_per_epoch or len(m.training)) // config.batch_size)) for m in members}
    if len(per_epoch) > 1:
        raise InputError("networks trained together take the same steps: give samples_per_epoch (one draw "
                         "per training patch gives each network its own number)")
    steps_per_epoch = per_epoch.pop()
    total_steps = config.epochs * steps_per_epoch
    for optimiser in stepper.optimisers:  # one per network, or one over the stacked weights
        stepper.schedulers.append(torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda t: max(0.0, 1 - t / max(total_steps, 1)) ** config.poly_power))
    batches = _Batches(patches, device)

    for member in members:
        member.validate(0, float("nan"), stopped=False)
    yield Progress(0, config.epochs, "epoch", "before training", _shown(members, 0))
    stopped = False
    for epoch in range(1, config.epochs + 1):
        stepper.train()
        loss_sum = torch.zeros(len(members), dtype=torch.float64, device=device)
        shown: dict[str, float] = {}
        steps = 0
        for step in range(steps_per_epoch):
            if stop is not None and stop.is_set():
                stopped = True
                break
            xs, ys = zip(*(batches(member, config) for member in members))
            loss_sum += stepper.step(xs, ys, dtype).double()
            steps += 1
            if steps % LOSS_READ_STEPS == 0 or steps == steps_per_epoch:
                shown = {"loss": float(loss_sum.mean()) / steps}  # the one host round-trip
            yield Progress(step + 1, steps_per_epoch, "batch", f"epoch {epoch}", shown)
        if not steps:
            break
        stepper.sync()
        for member, loss in zip(members, (loss_sum / steps).tolist()):
            member.validate(epoch, loss, stopped)
        yield Progress(epoch, config.epochs, "epoch", "stopped" if stopped else "", _shown(members, -1))
        if stopped:
            break

    seconds = time.perf_counter() - started
    return [member.finish(patches, stopped, steps_per_epoch, seconds, device, dtype) for member in members]


def stacks(config: TrainConfig, device: torch.device) -> bool:
    """Whether an ensemble's networks train stacked (``config.stack``; ``auto``: on CUDA), which
    needs epochs of a fixed number of draws (``samples_per_epoch``: without it each network takes
    as many steps as it has training patches)."""
    wanted = config.stack == "on" or (config.stack == "auto" and device.type == "cuda")
    return wanted and config.samples_per_epoch is not None


def auto_batch_size(config: TrainConfig, patch_config: PatchConfig, networks: int = 1) -> int:
    """The batch size ``--batch-size auto`` means: :data:`BATCH_SIZE` on a CPU; on CUDA the largest
    power of two up to :data:`MAX_AUTO_BATCH` whose training step for ``networks`` stacked networks
    takes at most half the free GPU memory (probed with one step of a few patches)."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return BATCH_SIZE
    probe = 4
    model = DeepPRL(config.model, patch_config.size, patch_config.contrasts).to(device)
    x = torch.rand(probe, len(patch_config.channels), *(patch_config.size,) * 3, device=device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with autocast(device, resolve_precision(config.precision, device)):
        logits = model(x)
    logits.float().sum().backward()
    per_patch = (torch.cuda.max_memory_allocated(device) - before) / probe
    del model, x, logits
    torch.cuda.empty_cache()  # the probe's blocks count as free again
    free, _ = torch.cuda.mem_get_info(device)
    return batch_that_fits(free / 2, per_patch * networks)


def batch_that_fits(room: float, per_patch: float) -> int:
    """The largest power of two up to :data:`MAX_AUTO_BATCH` patches of ``per_patch`` bytes in
    ``room`` bytes (at least 1)."""
    fits = max(1, int(room // max(per_patch, 1.0)))
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))


class _Member:
    """One network's run: its training rows, seeded draws, validation history and kept model."""

    def __init__(self, patches: PatchSet, config: TrainConfig, val_subjects: Sequence[str] | None,
                 init: Checkpoint | None, device: torch.device) -> None:
        if val_subjects is None:
            val_subjects = split_validation(patches, config.val_fraction, config.seed)
        self.config, self.init, self.val_subjects = config, init, list(val_subjects)
        self.train_ids = [s for s in patches.subjects if s not in set(val_subjects)]
        if not self.train_ids:
            raise InputError("every subject is in the validation set; nothing is left to train on")
        # the training patches are drawn from ``patches`` by row, not copied: the set is held once
        self.validation = patches.select(val_subjects).originals()
        self.training = np.flatnonzero(np.isin(patches.subject, self.train_ids))
        labels = patches.y[self.training]
        self.positives, self.negatives = self.training[labels == 1], self.training[labels == 0]
        if self.positives.size == 0 or self.negatives.size == 0:
            raise InputError(f"the training subjects have {self.positives.size} PRL and {self.negatives.size} "
                             "non-PRL lesions; both classes are needed")
        torch.manual_seed(config.seed)
        self.model = _initial_model(patches, config, init).to(device)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.device = device
        self.history: list[dict[str, Any]] = []
        self.start: _Best | None = None
        self.best: _Best | None = None
        self.point: OperatingPoint | None = None

    def rows(self) -> np.ndarray:
        return _balanced_rows(self.rng, self.positives, self.negatives, self.config.batch_size)

    def validate(self, epoch: int, loss: float, stopped: bool) -> None:
        """Score the model after ``epoch`` (0: before training) and keep it if it ranks best."""
        scores, self.point = _validate(self.model, self.validation, self.config, self.device)
        record: dict[str, Any] = {"epoch": epoch, "loss": loss, **scores}
        if stopped:
            record["partial"] = True
        self.history.append(record)
        if epoch == 0:
            self.start = _Best(record, self.model, self.point)
            self.best = self.start if self.config.keep_start else None
        elif self.best is None or _rank(record) > _rank(self.best.record):
            self.best = _Best(record, self.model, self.point)

    def finish(self, patches: PatchSet, stopped: bool, steps_per_epoch: int, seconds: float,
               device: torch.device, dtype: torch.dtype) -> TrainResult:
        """The kept model as a checkpoint (see the module doc for which one)."""
        config, model, start, history = self.config, self.model, self.start, self.history
        assert start is not None and self.point is not None
        best = self.best
        if config.keep == "last" and not stopped and len(history) > 1:
            last = _Best(history[-1], model, self.point)
            best = start if config.keep_start and _rank(start.record) > _rank(last.record) else last
        best = best or start  # stopped before the first step, with keep_start=False
        model.load_state_dict(best.state)
        model.eval()
        views = TTA_VIEWS if config.tta else ((),)
        validation = self.validation
        kept, point = _validate(model, validation, config, device, views) if config.tta else (best.record, best.point)
        training, positives = self.training, self.positives
        summary = {
            "train_subjects": self.train_ids, "val_subjects": self.val_subjects,
            "train_patches": len(training), "train_prl_patches": int(positives.size),
            "train_lesions": int((~patches.shifted[training]).sum()), "val_lesions": len(validation),
            "train_confluent_parts": None if patches.part is None
            else int((patches.part[training] & ~patches.shifted[training]).sum()),
            "val_prl_lesions": int(validation.y.sum()), "epochs_run": len(history) - 1,
            "steps_per_epoch": steps_per_epoch, "kept_epoch": best.record["epoch"], "keep": config.keep,
            "stopped": stopped,
            "seconds": round(seconds, 1), "device": str(device),
            "precision": precision_name(dtype),
            "config": _jsonable(asdict(config)),
        }
        metadata: dict[str, Any] = {"training": summary, "validation": best.record, "tta": config.tta,
                                    "views": [list(view) for view in views]}
        if config.tta:
            metadata["validation_tta"] = kept
        if self.init is not None:
            metadata["parent"] = self.init.id
        if patches.grids:  # the grids the training subjects' images came on
            metadata["grids"] = patches.grids
        checkpoint = Checkpoint(model.to(memory_format=torch.contiguous_format),
                                point.threshold, patches.config, metadata, point.calibration)
        return TrainResult(checkpoint, history, best.record["epoch"], stopped)


class _Batches:
    """The training batches: rows drawn, patches read, augmented, on the device.

    On CUDA the whole patch set is staged in GPU memory once when it takes at most a quarter of
    the free memory (a default cohort's few thousand patches of 3 × 28³: a few hundred MB), so a
    step copies only its row numbers to the device; copies go through pinned memory without
    waiting for the GPU (:func:`~napari_deep_prl.model.inference.to_device`).
    """

    def __init__(self, patches: PatchSet, device: torch.device) -> None:
        self.patches, self.device, self.staged = patches, device, None
        shape = (len(patches), *patches.x.shape[1:])
        if device.type == "cuda" and int(np.prod(shape)) * 4 <= torch.cuda.mem_get_info(device)[0] / 4:
            self.staged = torch.empty(shape, dtype=torch.float32, device=device)
            for run in chunks(len(patches), patches.config.size):  # a run at a time: bounded host memory
                self.staged[run] = to_device(torch.from_numpy(np.asarray(patches.x[run], np.float32)), device)

    def __call__(self, member: _Member, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
        rows = member.rows()
        if self.staged is not None:
            x = self.staged.index_select(0, to_device(torch.from_numpy(rows), self.device))
        else:
            x = to_device(torch.from_numpy(self.patches.x[rows]), self.device)
        y = to_device(torch.from_numpy(self.patches.y[rows]), self.device)
        return augment_batch(x, config.augment, member.generator), y


class _Steps:
    """Training steps over the members' networks; ``sync`` puts the weights in their modules."""

    optimisers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]

    def train(self) -> None:
        raise NotImplementedError

    def step(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """One step of every network on its batch; their losses ``(K,)``, on the device."""
        raise NotImplementedError

    def sync(self) -> None:
        """Nothing to do where the members' modules are the ones trained."""


class _Separate(_Steps):
    """Each network a module with its own optimiser, stepped in turn."""

    def __init__(self, members: Sequence[_Member], config: TrainConfig, device: torch.device) -> None:
        self.models = [m.model for m in members]
        if device.type == "cpu":  # as the batches (see for_device)
            for model in self.models:
                model.to(memory_format=torch.channels_last_3d)
        self.device, self.config = device, config
        self.optimisers = [torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
                           for model in self.models]
        self.schedulers = []

    def train(self) -> None:
        for model in self.models:
            model.train()

    def step(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        losses = []
        for model, optimiser, scheduler, x, y in zip(self.models, self.optimisers, self.schedulers, xs, ys):
            with autocast(self.device, dtype):
                logits = model(for_device(x, self.device))
            loss = focal_loss(logits.float(), y, gamma=self.config.gamma, alpha=self.config.alpha)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.detach())
        return torch.stack(losses)


class _Stacked(_Steps):
    """The networks' weights stacked along a first axis, one ``vmap``-ed pass stepping them all.

    The stacked forward pass computes each network's logits on its own batch (convolutions of
    stacked weights become grouped convolutions, batch norms keep each network's statistics);
    the loss is the sum of the networks' losses, so each gets its own gradient, and Adam, which
    works element by element, steps the stacked weights as it would each network's. Each
    network's module gets its weights back (``sync``) before it is validated.
    """

    def __init__(self, members: Sequence[_Member], config: TrainConfig, device: torch.device) -> None:
        self.models = [m.model for m in members]
        self.params, self.buffers = torch.func.stack_module_state(self.models)
        template = copy.deepcopy(self.models[0]).to("meta")

        def forward(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, (params, buffers), (x,))

        self.forward = torch.func.vmap(forward, randomness="different")  # dropout: own masks
        self.device, self.config, self.template = device, config, template
        self.optimisers = [torch.optim.Adam(self.params.values(), lr=config.lr, weight_decay=config.weight_decay)]
        self.schedulers = []

    def train(self) -> None:
        self.template.train()

    def step(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        with autocast(self.device, dtype):
            logits = self.forward(self.params, self.buffers, torch.stack(xs)).float()
        losses = torch.stack([focal_loss(out, y, gamma=self.config.gamma, alpha=self.config.alpha)
                              for out, y in zip(logits, ys)])
        (optimiser,), (scheduler,) = self.optimisers, self.schedulers
        optimiser.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimiser.step()
        scheduler.step()
        return losses.detach()

    def sync(self) -> None:
        with torch.no_grad():
            for i, model in enumerate(self.models):
                model.load_state_dict({name: value[i] for name, value in (*self.params.items(),
                                                                           *self.buffers.items())})


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


def _shown(members: Sequence[_Member], epoch: int) -> dict[str, float]:
    """The epoch's scores worth showing live: a network's, or the mean of the networks'."""
    shown = {k: float(np.mean([m.history[epoch][k] for m in members]))
             for k in ("loss", "val_loss", "val_f1", "val_auc")}
    return {k: v for k, v in shown.items() if np.isfinite(v)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
