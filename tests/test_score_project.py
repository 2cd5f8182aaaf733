"""Scoring a project: the cohort's scoring path, per subject, cached under a model version."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from active_support import one_torch_thread, tiny_checkpoint, tiny_project  # noqa: F401

from napari_deep_prl.active import strategies as active
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.metrics import PlattFit, expected_f1_threshold
from napari_deep_prl.scoring.project import (
    latest_scored_version,
    model_version,
    project_scores,
    score_project,
    stored_scores,
)
from napari_deep_prl.scoring.score import score_cohort

pytestmark = pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")


@pytest.fixture
def project(tmp_path, manifest):
    with tiny_project(tmp_path / "project", manifest) as opened:
        yield opened


def flipping_calibrated(seed: int = 0) -> Checkpoint:
    """A tiny network scored on all 8 flips (as the previous version trained them), calibrated."""
    checkpoint = tiny_checkpoint(seed, dropout=0.0)
    checkpoint.metadata["tta"] = True
    return replace(checkpoint, threshold=0.45, calibration=PlattFit(centre=0.1, scale=1.2, slope=2.0, intercept=-0.3))


def _events(gen) -> tuple[list, object]:
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


def test_scores_are_stored_per_model_version_and_not_recomputed(project):
    checkpoint = flipping_calibrated()
    events, scores = _events(score_project(project, [checkpoint], device="cpu"))
    version = model_version([checkpoint])
    assert version == f"{checkpoint.id}/views"
    assert len(scores) == len(project.lesions()) == 9
    assert set(scores["model_id"]) == {version}
    assert scores[["prl_probability", "uncertainty_sd", "bald"]].notna().all().all()  # 8 views: 8 samples
    assert [e.metrics["cached"] for e in events] == [0.0, 0.0, 0.0]
    again, _ = _events(score_project(project, [checkpoint], device="cpu"))
    assert all(e.metrics["cached"] == 1.0 for e in again)

    strategy = active.project_strategy(project, "disagreement", version)
    queue = project.queue("alice", strategy)
    item = queue.next()
    assert item.model_version == version and item.strategy == "disagreement"
    assert item.lesion_key == scores.sort_values("bald", ascending=False)["lesion_key"].iloc[0]
    queue.record(item, "prl")
    assert project.store.current()["model_version"].tolist() == [version]


def test_a_project_scores_as_its_manifest_scores_through_the_cohort_path(project):
    members = [flipping_calibrated(0), replace(flipping_calibrated(1), threshold=0.55)]
    version = model_version(members)
    run_to_end(score_project(project, members, device="cpu"))
    stored = project_scores(project, members, version).lesions
    cohort = run_to_end(score_cohort(read_manifest(project.root / project.config.manifest), members,
                                     device="cpu")).lesions
    both = cohort.merge(stored, on=["subject", "lesion"], suffixes=("", "_project"), validate="one_to_one")
    assert len(both) == 9
    for column in ("prl_probability", "uncertainty_sd", "bald"):
        np.testing.assert_allclose(both[f"{column}_project"], both[column], rtol=1e-12, atol=1e-15)
    assert both["prl_project"].tolist() == both["prl"].tolist()


def test_project_scores_decide_each_lesion_or_the_project_together(project, monkeypatch):
    calibrated = replace(tiny_checkpoint(), threshold=0.6,
                         calibration=PlattFit(centre=0.0, scale=1.0, slope=1.0, intercept=0.0))
    lesions = project.lesions()
    # sub-03 is not scored; one lesion of sub-01 is marked confluent
    scored = lesions[lesions["subject"] != "sub-03"].assign(
        probability=[0.9, 0.55, 0.05, 0.45, 0.4, 0.02])
    project.store.add_predictions("m", scored)
    confluent = lesions.assign(confluent=lesions["lesion_key"] == scored["lesion_key"].iloc[1])
    monkeypatch.setattr(project, "lesions", lambda: confluent)

    each = project_scores(project, [calibrated], "m")
    assert each.threshold == 0.6
    assert each.lesions["prl"].tolist() == [1, 0, 0, 0, 0, 0]
    assert each.subjects[["subject", "lesions", "prl_count"]].values.tolist() == [
        ["sub-01", 3, 1], ["sub-02", 3, 0]]

    together = project_scores(project, [calibrated], "m", decision="expected_f1")
    alone = [0.9, 0.05, 0.45, 0.4, 0.02]  # the confluent lesion does not place the cut
    assert together.threshold == expected_f1_threshold(alone)[0]
    assert 0.05 < together.threshold < 0.4
    # ... but is decided at it, like every scored lesion
    assert together.lesions["prl"].tolist() == [1, 1, 0, 1, 1, 0]
    assert together.subjects["prl_ge1"].tolist() == [True, True]
    with pytest.raises(InputError, match="calibrated"):
        project_scores(project, [tiny_checkpoint()], "m", decision="expected_f1")


def test_scores_of_the_previous_version_stay_readable_and_are_recomputed_under_the_new_key(project):
    checkpoint = flipping_calibrated()
    legacy = f"{checkpoint.id}/tta"  # how the previous version keyed its flip-TTA scores
    old = project.lesions().assign(probability=0.3, bald=0.02)
    project.store.add_predictions(legacy, old)
    assert latest_scored_version(project) == legacy
    assert active.project_strategy(project, "disagreement").model_version == legacy
    assert stored_scores(project, legacy)["bald"].tolist() == [0.02] * 9
    events, scores = _events(score_project(project, [checkpoint], device="cpu"))
    assert [e.metrics["cached"] for e in events] == [0.0, 0.0, 0.0]  # not taken for this version's
    assert latest_scored_version(project) == model_version([checkpoint]) != legacy
    assert not np.allclose(scores["prl_probability"], 0.3)
    assert stored_scores(project, legacy)["prl_probability"].tolist() == [0.3] * 9  # kept as they were


def test_a_model_version_needs_a_model():
    with pytest.raises(InputError, match="no model given"):
        model_version([])
