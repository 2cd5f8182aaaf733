"""Review-queue orders built on a model's stored scores (active learning).

A project's lesions are scored by :mod:`napari_deep_prl.scoring.project` (the model panel's
*Score project*, ``deep-prl active score``), which stores each lesion's PRL probability and the
two uncertainty measures of the model's samples (networks × views): their standard deviation
and their mutual information (BALD). The orders here only read those scores:

- ``entropy``: most uncertain first, the entropy of the probability (how unsure the averaged
  model is; 1 bit at 0.5);
- ``disagreement``: most disagreement first, the mutual information (high when the samples
  disagree, i.e. when a label would teach the model most);
- ``likely_prl``: most likely PRL first.

Queue strategies are :class:`~napari_deep_prl.ratings.queue.Strategy` objects, named in
:data:`napari_deep_prl.active.STRATEGIES`, so the rater's queue records each rating's strategy and
model version, and the calibration set and repeats stay outside them (the queue handles those).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_deep_prl.active import MODEL_STRATEGIES, STRATEGIES
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.model.inference import binary_entropy
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.queue import Strategy, seeded_shuffle, subject_order
from napari_deep_prl.scoring.project import latest_scored_version, stored_scores


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
    """A queue order by name (:data:`~napari_deep_prl.active.STRATEGIES`).

    The model orders need ``scores`` (stored scores with ``lesion_key, prl_probability, bald``;
    :func:`~napari_deep_prl.scoring.project.stored_scores`) and the ``version`` that produced them.
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
        column, values = "entropy", binary_entropy(scores["prl_probability"].to_numpy())
    elif name == "disagreement":
        column, values = "bald", scores["bald"].to_numpy(dtype=np.float64)
        if np.isnan(values).all():
            raise InputError(f"model version {version} stored no disagreement (a single network scored "
                             "on one view has only one sample); score with an ensemble or a model that "
                             "uses several views for the disagreement order")
    else:
        column, values = "prl_probability", scores["prl_probability"].to_numpy()
    return _by_score(name, scores.assign(**{column: values}), column, version)


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
