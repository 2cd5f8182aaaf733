"""Scoring a project: every subject through :func:`~napari_deep_prl.scoring.score.score_subject`,
the scores kept in the project's predictions.

The model panel's *Score project*, ``deep-prl active score`` / ``rank`` and fine-tuning's
re-score run :func:`score_project`; it scores each subject exactly as ``deep-prl score`` does
(the same function, the checkpoints' own views, the default precision), so a lesion's
probability, call and uncertainty are the same on the command line, in the panel and in the
review queue. The model may be checkpoints or an exported ONNX file
(:mod:`napari_deep_prl.model.backend`).

The scores are stored in the rating store's predictions (probability, ``uncertainty_sd``,
``bald``) under a *model version* naming the checkpoints and the way they were scored:
``<id>+<id>+…/views`` (:func:`model_version`). A checkpoint's id hashes its weights and its
calibration, so the key changes whenever the model's output could. :func:`score_project`
computes only the subjects that have a lesion without a stored score of that version, so
nothing is recomputed while the model is unchanged. Predictions stored by earlier versions of
the package (keys ending ``/tta``, ``/ensemble``, ``/mc<N>`` or a bare id) stay readable
(:func:`stored_scores`) but are never taken for this version's: scoring a project again with
the same model computes its scores afresh under the new key.

The decision is made when the scores are read (:func:`project_scores`), as in
:func:`~napari_deep_prl.scoring.score.score_cohort`: each lesion at the models' threshold, or the
project's scored lesions together.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence

import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import Progress
from napari_deep_prl.model.backend import Model, networks
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.scoring.score import (
    Decision,
    Scores,
    checked_decision,
    decided,
    score_subject,
    subject_summary,
)

#: What the model version says about how its scores were made: every network on its own views
#: (:func:`~napari_deep_prl.model.inference.checkpoint_views`), as ``deep-prl score`` does.
SCORED_ON = "views"


def model_version(checkpoints: Model) -> str:
    """The key a model's scores are stored under: its networks' ids and :data:`SCORED_ON` (an
    ONNX model exported from checkpoints stores its scores under theirs: they are the same)."""
    if not networks(checkpoints):
        raise InputError("no model given: load a checkpoint first")
    return "+".join(c.id for c in networks(checkpoints)) + "/" + SCORED_ON


def score_project(project: Project, checkpoints: Model, *, subjects: Sequence[str] | None = None,
                  device: str = "auto", stop: threading.Event | None = None) -> Generator[Progress, None, pd.DataFrame]:
    """Score the project's lesions (or those of ``subjects``) and store the predictions.

    Subjects whose lesions all have a stored score of this model version are skipped. Returns
    the stored scores of the version (:func:`stored_scores`); ``stop`` ends the run after the
    current subject, keeping what was stored.
    """
    version = model_version(checkpoints)
    registered = project.lesions()
    wanted = list(subjects) if subjects is not None else sorted(registered["subject"].unique())
    done = project.store.predictions(version)
    for step, subject_id in enumerate(wanted, start=1):
        if stop is not None and stop.is_set():
            break
        needed = set(registered.loc[registered["subject"] == subject_id, "lesion"])
        have = set(done.loc[done["subject"] == subject_id, "lesion"])
        if not needed <= have:
            table = score_subject(project.load_subject(subject_id), checkpoints, device=device, evidence=False)
            project.store.add_predictions(version, table.rename(columns={"prl_probability": "probability"}))
        yield Progress(step, len(wanted), "subjects", subject_id, {"cached": float(needed <= have)})
    return stored_scores(project, version)


def stored_scores(project: Project, version: str) -> pd.DataFrame:
    """The project's stored scores of one model version: ``lesion_key, subject, lesion,
    model_id, prl_probability, uncertainty_sd, bald, created_at``, one row per scored lesion."""
    return project.store.predictions(version).rename(columns={"probability": "prl_probability"})


def latest_scored_version(project: Project) -> str | None:
    """The model version that stored predictions in the project last (``None``: never scored)."""
    stored = project.store.predictions()
    return None if stored.empty else str(stored.sort_values("created_at")["model_id"].iloc[-1])


def project_scores(project: Project, checkpoints: Model, version: str,
                   decision: Decision = "validation") -> Scores:
    """The project's stored scores of a model version, decided, and counted per subject.

    ``decision`` as in :func:`~napari_deep_prl.scoring.score.score_cohort`: each lesion at the models'
    threshold, or (``"expected_f1"``) every scored lesion of the project together, so that the
    project's PRL count suits a study rather than one patient. Only scored subjects are counted.
    """
    threshold = checked_decision(checkpoints, None, decision)
    confluent = project.lesions().set_index("lesion_key")["confluent"]
    table = stored_scores(project, version)
    table["confluent"] = table["lesion_key"].map(confluent).fillna(0).astype(bool)
    table, threshold = decided(table, threshold, decision)
    return Scores(table, subject_summary(table, list(table["subject"].unique())), threshold)
