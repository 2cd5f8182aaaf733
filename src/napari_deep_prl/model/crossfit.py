"""Cross-fitted ensembles: K networks, each validated on a different K-th of the patients.

One training run validates on a fifth of the patients: with a few dozen PRLs in the cohort that
is a handful of them, so the decision threshold, chosen where validation F1 peaks, is a noisy
pick. Cross-fitting trains K networks on patient-level folds (stratified by PRL count, as the
cross-validation): every training patient is validated exactly once, by the network that did not
train on it. The threshold is chosen on all of these out-of-fold predictions together (by
``TrainConfig.threshold_rule``), and scoring averages the K networks. In the nested cross-
validation (30 epochs, the inner models as the ensemble) this raised the test F1 from 0.751 ±
0.103 to 0.793 ± 0.051 and the ROC AUC from 0.980 to 0.985 (CHANGELOG.md); trained on 28
patients and tested on 30 others, three cross-fitted networks ranked like the best of three
single ones (ROC AUC 0.983–0.984) without a higher F1 (docs/model.md, "Cross-fitted ensembles").
It costs K trainings: one after another on a CPU, stacked into one pass per step on a GPU
(:func:`~napari_deep_prl.model.train.train_together`).

The threshold is chosen on single networks' outputs and applied to their average, as in the
cross-validation's ensemble rows (the average of K networks is not available for a patient that
K - 1 of them trained on). Under the default ``"calibrated"`` rule each network's output is
already calibrated on its own validation patients, so the pooled Platt fit is about the identity
and the cut about half the pooled best F1.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.comparison import held_out_validation
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.inference import resolve_device
from napari_deep_prl.model.train import TrainConfig, TrainResult, stacks, train, train_together

#: Networks trained by default (``deep-prl train``, training from scratch in the app): under the
#: calibrated rule a cross-fitted three beat one network in every comparison measured (nested CV
#: at 100 epochs, test F1 0.855 against 0.816; a foreign phantom, 0.947 against 0.897 and 0.938:
#: docs/model.md, "Cross-fitted ensembles").
DEFAULT_MODELS = 3


@dataclass
class EnsembleResult:
    """The members' checkpoints (sharing the out-of-fold threshold) and their training runs."""

    checkpoints: list[Checkpoint]
    runs: list[TrainResult]
    threshold: float
    #: One row per training lesion: ``subject, lesion, member, prl, prl_probability``.
    out_of_fold: pd.DataFrame
    #: Best out-of-fold F1, its ROC AUC, the threshold, and lesion counts.
    validation: dict[str, float]
    stopped: bool


def train_crossfitted(patches: PatchSet, config: TrainConfig = TrainConfig(), models: int = DEFAULT_MODELS, *,
                      init: Sequence[Checkpoint] = (), stop: threading.Event | None = None
                      ) -> Generator[Progress, None, EnsembleResult]:
    """Train ``models`` networks on patient-level folds of ``patches``, yielding progress.

    Member ``i`` is validated on fold ``i`` and seeded ``config.seed + i``; with ``init`` (one
    checkpoint per member, e.g. an ensemble's members) it fine-tunes ``init[i]``. With fewer
    subjects than networks (a project's first labels) there are as many folds as subjects and
    member ``i`` is validated on fold ``i`` modulo their number, so the ensemble keeps its size.
    A stop keeps the members finished so far (the interrupted one too when none has finished).
    Stacked (:func:`~napari_deep_prl.model.train.stacks`: on CUDA by default) the members train
    together, each as it would alone, and a stop keeps every one of them, interrupted alike.
    """
    counts = patches.prl_counts()
    if models < 2:
        raise InputError(f"a cross-fitted ensemble needs at least 2 models, not {models}; "
                         "train a single model with --models 1")
    if init and len(init) != models:
        raise InputError(f"the ensemble to fine-tune has {len(init)} networks, not {models}; "
                         f"fine-tune it as {len(init)} models")
    if len(counts) < 2:
        raise InputError(f"{len(counts)} subject(s): a cross-fitted ensemble validates each network on "
                         "subjects it does not train on, so it needs at least 2; add subjects")
    shares = validation_shares(counts, models, config.val_fraction, config.seed)
    configs = [replace(config, seed=config.seed + member) for member in range(models)]
    inits = list(init) if init else [None] * models
    if stacks(config, resolve_device(config.device)):
        yield Progress(0, models, "model", f"{models} models together")
        runs = yield from train_together(patches, configs, shares, inits, stop=stop)
    else:
        runs = yield from _one_after_another(patches, configs, shares, inits, stop)
    stopped = len(runs) < models or runs[-1].stopped
    yield Progress(len(runs), models, "model", "stopped" if stopped else "done")

    out_of_fold, validation = held_out_validation([run.checkpoint for run in runs], patches,
                                                  shares[:len(runs)], config)
    threshold = validation["threshold"]
    ensemble = {"models": len(runs), "planned": models, "threshold": threshold, "out_of_fold": validation,
                "stopped": stopped}
    checkpoints = [_as_member(run.checkpoint, i, ensemble) for i, run in enumerate(runs)]
    return EnsembleResult(checkpoints, runs, threshold, out_of_fold, validation, stopped)


def _one_after_another(patches: PatchSet, configs: Sequence[TrainConfig], shares: Sequence[Sequence[str]],
                       inits: Sequence[Checkpoint | None], stop: threading.Event | None
                       ) -> Generator[Progress, None, list[TrainResult]]:
    """The members trained in turn; a stop keeps those finished (the interrupted one if none is)."""
    runs: list[TrainResult] = []
    for member, (config, val, init) in enumerate(zip(configs, shares, inits)):
        yield Progress(member, len(configs), "model", f"model {member + 1}/{len(configs)}")
        run = yield from train(patches, config, val_subjects=val, init=init, stop=stop)
        if run.stopped and runs:
            break
        runs.append(run)
        if run.stopped:
            break
    return runs


def _as_member(checkpoint: Checkpoint, index: int, ensemble: dict[str, Any]) -> Checkpoint:
    """The member with the ensemble's threshold; its own validation stays in its metadata."""
    metadata = {**checkpoint.metadata, "ensemble": {**ensemble, "member": index,
                                                    "member_threshold": checkpoint.threshold}}
    return replace(checkpoint, threshold=float(ensemble["threshold"]), metadata=metadata)


def ensemble_info(checkpoints: list[Checkpoint]) -> dict[str, Any] | None:
    """The cross-fitting record of loaded members (None for a single or hand-assembled set)."""
    records = [c.metadata.get("ensemble") for c in checkpoints]
    if not records or any(r is None for r in records):
        return None
    return {k: v for k, v in records[0].items() if k not in ("member", "member_threshold")}


def history_table(runs: list[TrainResult]) -> pd.DataFrame:
    """Every member's per-epoch history, with a ``model`` column (1-based)."""
    table = pd.concat([pd.DataFrame(run.history) for run in runs], keys=range(1, len(runs) + 1),
                      names=["model", None])
    return table.reset_index(level="model").reset_index(drop=True)
