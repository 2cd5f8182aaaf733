"""Active learning: per-lesion uncertainty, and review-queue orders built on it.

Uncertainty comes from several stochastic views of each lesion's patch:

- ``mc_dropout``: the model's dropout layers stay on at inference (MC dropout; needs a model
  trained with ``ModelConfig.dropout > 0``), ``n_samples`` passes;
- ``ensemble``: one view per checkpoint (e.g. the models of a cross-validation);
- ``tta``: the test-time augmentation views of :mod:`napari_deep_prl.scoring.score` (axis flips);
- ``none``: one plain pass (probability and entropy only).

From the views' probabilities ``p_t``: the *entropy* of their mean (how unsure the averaged model
is) and the *mutual information* (BALD: entropy of the mean minus the mean entropy — high when
the views disagree, i.e. when a label would teach the model most), and the views' SD. Entropy and
mutual information are in bits (an undecided lesion has entropy 1).

Scores are stored in the project's predictions under a *model version* naming the checkpoints
and the method (``<id>/mc16``, ``<id>+<id>/ensemble``, ``<id>/tta``, ``<id>`` for one plain
pass): the stored ``uncertainty`` column is the mutual information. :func:`score_project` computes only the lesions that have no stored score for that
version, so nothing is recomputed while the model is unchanged.

Queue strategies are :class:`~napari_deep_prl.ratings.queue.Strategy` objects (see
:data:`STRATEGIES`), so the rater's queue records each rating's strategy and model version, and
the calibration set and repeats stay outside them (the queue handles those).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import Lesions, find_lesions
from napari_deep_prl.data.patches import PatchConfig, patch_runs
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.inference import (
    binary_entropy,
    mutual_information,
    resolve_device,
    view_probabilities,
)
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.queue import Strategy, seeded_shuffle, subject_order
from napari_deep_prl.scoring.score import (
    Decision,
    Scores,
    checked_decision,
    decided,
    decision_threshold,
    subject_summary,
)

METHODS = ("auto", "none", "mc_dropout", "ensemble", "tta")
#: Queue orders offered to raters; the last three need the project scored by a model.
STRATEGIES = ("subject_order", "random", "entropy", "disagreement", "likely_prl")
MODEL_STRATEGIES = STRATEGIES[2:]
#: Per-lesion columns of :func:`score_lesions` (after the lesion table's position columns).
SCORE_COLUMNS = ("subject", "lesion", "x", "y", "z", "x_mm", "y_mm", "z_mm", "volume_mm3",
                 "prl_probability", "prl", "entropy", "uncertainty")


@dataclass(frozen=True)
class Uncertainty:
    """Per-lesion mean probability and uncertainty measures (NaN where a method has none)."""

    probability: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    spread: np.ndarray


def from_samples(samples: np.ndarray) -> Uncertainty:
    """All measures from views' probabilities (views × lesions); one view has no spread."""
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(0)
    if len(samples) == 1:
        nan = np.full(mean.shape, np.nan)
        return Uncertainty(mean, binary_entropy(mean), nan, nan)
    return Uncertainty(mean, binary_entropy(mean), mutual_information(samples),
                       samples.std(0, ddof=1))


@contextmanager
def _dropout_on(model: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm frozen) with only the dropout layers sampling."""
    was_training = model.training
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    try:
        yield
    finally:
        model.train(was_training)


def mc_dropout_samples(checkpoint: Checkpoint, x: np.ndarray, *, n_samples: int = 16,
                       seed: int = 0, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """The model's outputs (n_samples × lesions, calibrated like its scores) with dropout
    sampling; seeded, reproducible."""
    if checkpoint.model_config.dropout <= 0:
        raise InputError(f"model {checkpoint.id} has no dropout (dropout=0): MC dropout needs a "
                         "model trained with dropout > 0; use the 'tta' or 'ensemble' method")
    torch_device = resolve_device(device)
    model = checkpoint.model.to(torch_device)
    out = np.empty((n_samples, len(x)), dtype=np.float64)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(), _dropout_on(model):
        torch.manual_seed(seed)
        for t in range(n_samples):
            for i in range(0, len(x), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(torch_device)
                out[t, i:i + batch_size] = torch.sigmoid(model(batch)).double().cpu().numpy()
    return checkpoint.calibrate(out)


def resolve_method(checkpoints: Sequence[Checkpoint], method: str = "auto") -> str:
    """``auto``: ensemble for several models, MC dropout when the model has dropout, else TTA."""
    if method not in METHODS:
        raise InputError(f"uncertainty method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if not checkpoints:
        raise InputError("no model given: load a checkpoint first")
    if method != "auto":
        return method
    if len(checkpoints) > 1:
        return "ensemble"
    return "mc_dropout" if checkpoints[0].model_config.dropout > 0 else "tta"


def estimate(checkpoints: Sequence[Checkpoint], x: np.ndarray, method: str = "auto", *,
             n_samples: int = 16, seed: int = 0, device: str = "auto") -> Uncertainty:
    """Mean probability and uncertainty of patches ``x`` under one method (see module doc)."""
    return from_samples(view_samples(checkpoints, x, method, n_samples=n_samples, seed=seed, device=device))


def view_samples(checkpoints: Sequence[Checkpoint], x: np.ndarray, method: str = "auto", *,
                 n_samples: int = 16, seed: int = 0, device: str = "auto") -> np.ndarray:
    """The views' probabilities (views × patches) of ``x`` under one method."""
    method = resolve_method(checkpoints, method)
    if method == "mc_dropout":
        return np.concatenate([mc_dropout_samples(c, x, n_samples=n_samples, seed=seed, device=device)
                               for c in checkpoints])
    return view_probabilities(checkpoints, x, tta=method == "tta", device=device)


def model_version(checkpoints: Sequence[Checkpoint], method: str = "auto", *,
                  n_samples: int = 16) -> str:
    """The key scores are stored under: checkpoint ids and the uncertainty method."""
    method = resolve_method(checkpoints, method)
    ids = "+".join(c.id for c in checkpoints)
    suffix = {"none": "", "mc_dropout": f"/mc{n_samples}", "ensemble": "/ensemble",
              "tta": "/tta"}[method]
    return ids + suffix


def _shared_patch_config(checkpoints: Sequence[Checkpoint]) -> PatchConfig:
    configs = {c.patch_config for c in checkpoints}
    if len(configs) > 1:
        raise InputError(f"the models cut patches differently ({configs}); an ensemble needs "
                         "models trained with the same patch settings")
    return checkpoints[0].patch_config


def score_lesions(subject: Subject, checkpoints: Sequence[Checkpoint], method: str = "auto", *,
                  lesions: Lesions | None = None, n_samples: int = 16, seed: int = 0,
                  device: str = "auto") -> pd.DataFrame:
    """One row per lesion (:data:`SCORE_COLUMNS`): probability, decision, entropy, uncertainty.

    The decision threshold is the mean of the models' thresholds (as in ensemble scoring). The
    patches are scored a run at a time (:func:`patches.patch_runs`); MC dropout seeds run ``i``
    with ``seed + i``.
    """
    lesions = find_lesions(subject) if lesions is None else lesions
    runs = patch_runs(subject, lesions, _shared_patch_config(checkpoints))
    scores = from_samples(np.concatenate([view_samples(checkpoints, x, method, n_samples=n_samples, seed=seed + i,
                                                       device=device) for i, x in enumerate(runs)], axis=1))
    table = lesions.table.assign(subject=subject.subject, prl_probability=scores.probability,
                                 prl=scores.probability >= decision_threshold(checkpoints),
                                 entropy=scores.entropy, uncertainty=scores.mutual_information)
    return table[list(SCORE_COLUMNS)].reset_index(drop=True)


def score_project(project: Project, checkpoints: Sequence[Checkpoint], method: str = "auto", *,
                  subjects: Sequence[str] | None = None, n_samples: int = 16, seed: int = 0,
                  device: str = "auto", stop: threading.Event | None = None
                  ) -> Generator[Progress, None, pd.DataFrame]:
    """Score the project's lesions (or those of ``subjects``) and store the predictions.

    Subjects whose lesions all have a stored score for this model version are skipped. Returns
    the stored predictions of the version (with an ``entropy`` column); ``stop`` ends the run
    after the current subject, keeping what was stored.
    """
    version = model_version(checkpoints, method, n_samples=n_samples)
    registered = project.lesions()
    wanted = list(subjects) if subjects is not None else sorted(registered["subject"].unique())
    done = project.store.predictions(version)
    for step, subject_id in enumerate(wanted, start=1):
        if stop is not None and stop.is_set():
            break
        needed = set(registered.loc[registered["subject"] == subject_id, "lesion"])
        have = set(done.loc[done["subject"] == subject_id, "lesion"])
        if not needed <= have:
            table = score_lesions(project.load_subject(subject_id), checkpoints, method,
                                  n_samples=n_samples, seed=seed, device=device)
            project.store.add_predictions(version, table.rename(
                columns={"prl_probability": "probability"}))
        yield Progress(step, len(wanted), "subjects", subject_id, {"cached": float(needed <= have)})
    return stored_scores(project, version)


def stored_scores(project: Project, version: str) -> pd.DataFrame:
    """The project's stored predictions of one model version, with their entropy."""
    stored = project.store.predictions(version)
    return stored.assign(entropy=binary_entropy(stored["probability"].to_numpy()))


def project_scores(project: Project, checkpoints: Sequence[Checkpoint], version: str,
                   decision: Decision = "validation") -> Scores:
    """The project's stored predictions of a model version, decided, and counted per subject.

    ``decision`` as in :func:`~napari_deep_prl.scoring.score.score_cohort`: each lesion at the models'
    threshold, or (``"expected_f1"``) every scored lesion of the project together, so that the
    project's PRL count suits a study rather than one patient. Only scored subjects are counted.
    """
    threshold = checked_decision(checkpoints, None, decision)
    confluent = project.lesions().set_index("lesion_key")["confluent"]
    table = stored_scores(project, version).rename(columns={"probability": "prl_probability"})
    table["confluent"] = table["lesion_key"].map(confluent).fillna(0).astype(bool)
    table, threshold = decided(table, threshold, decision)
    return Scores(table, subject_summary(table, list(table["subject"].unique())), threshold)


def _by_score(name: str, scores: pd.DataFrame, column: str, version: str) -> Strategy:
    """Highest ``column`` first; lesions without a score last, in subject order."""
    values = scores.set_index("lesion_key")[column]

    def rank(candidates: pd.DataFrame) -> list[int]:
        ordered = candidates.assign(_score=candidates["lesion_key"].map(values).fillna(-np.inf))
        return ordered.sort_values(["_score", "subject", "lesion"], ascending=[False, True, True],
                                   kind="stable")["lesion_key"].tolist()

    return Strategy(name, rank, version)


def make_strategy(name: str, scores: pd.DataFrame | None = None, *, version: str | None = None,
                  seed: int = 0) -> Strategy:
    """A queue order by name (:data:`STRATEGIES`).

    The model orders need ``scores`` (stored predictions with ``lesion_key, probability,
    uncertainty``; :func:`stored_scores`) and the ``version`` that produced them.
    """
    if name == "subject_order":
        return subject_order()
    if name == "random":
        return seeded_shuffle(seed)
    if name not in MODEL_STRATEGIES:
        raise InputError(f"queue strategy {name!r} is unknown; use one of {', '.join(STRATEGIES)}")
    if scores is None or version is None or scores.empty:
        raise InputError(f"the '{name}' order needs model scores: score the project with a model "
                         "first (model panel → Score project, or `deep-prl active score`)")
    if name == "entropy":
        column, values = "entropy", binary_entropy(scores["probability"].to_numpy())
    elif name == "disagreement":
        column, values = "uncertainty", scores["uncertainty"].to_numpy(dtype=np.float64)
        if np.isnan(values).all():
            raise InputError(f"model version {version} stored no uncertainty (one plain pass); "
                             "score with MC dropout, an ensemble or TTA for the disagreement order")
    else:
        column, values = "probability", scores["probability"].to_numpy()
    return _by_score(name, scores.assign(**{column: values}), column, version)


def latest_scored_version(project: Project) -> str | None:
    """The model version that stored predictions in the project last (``None``: never scored)."""
    stored = project.store.predictions()
    return None if stored.empty else str(stored.sort_values("created_at")["model_id"].iloc[-1])


def project_strategy(project: Project, name: str, version: str | None = None, *,
                     seed: int = 0) -> Strategy:
    """A strategy over the project's stored scores of ``version`` (what the review queue uses).

    For a model order, ``version`` defaults to the model that scored the project last.
    """
    if version is None and name in MODEL_STRATEGIES:
        version = latest_scored_version(project)
    scores = stored_scores(project, version) if version is not None else None
    return make_strategy(name, scores, version=version, seed=seed)


def open_strategy(project_dir: str | Path, name: str, *, seed: int = 0) -> Strategy:
    """The queue strategy ``name`` for a project folder; a model order reads its latest stored scores."""
    if name not in MODEL_STRATEGIES:
        return make_strategy(name, seed=seed)
    with Project.open(project_dir, readonly=True) as project:
        return project_strategy(project, name, seed=seed)
