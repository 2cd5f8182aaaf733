"""Active learning core: queue strategies on stored scores, fine-tuning and retraining."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from active_support import (  # noqa: F401
    TINY_TRAIN,
    one_torch_thread,
    tiny_checkpoint,
    tiny_project,
)

from napari_deep_prl.active import strategies as active
from napari_deep_prl.active.finetune import (
    finetune,
    labels_since,
    next_version_path,
    should_retrain,
)
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.model.checkpoint import load_checkpoint, load_models

SCORES = pd.DataFrame({"lesion_key": [1, 2, 3, 4], "subject": ["a", "a", "b", "b"],
                       "lesion": [1, 2, 1, 2], "prl_probability": [0.05, 0.55, 0.9, 0.3],
                       "uncertainty_sd": [0.3, 0.01, 0.02, 0.03], "bald": [0.01, 0.2, 0.05, 0.4]})
CANDIDATES = SCORES[["lesion_key", "subject", "lesion"]].iloc[::-1]


@pytest.mark.parametrize(("name", "expected"), [
    ("entropy", [2, 4, 3, 1]),        # closest to 0.5 first
    ("disagreement", [4, 2, 3, 1]),   # highest stored mutual information (BALD) first
    ("likely_prl", [3, 2, 4, 1]),     # highest probability first
    ("subject_order", [1, 2, 3, 4]),
])
def test_strategies_order_lesions_as_defined(name, expected):
    strategy = active.make_strategy(name, SCORES, version="m1")
    assert strategy.rank(CANDIDATES) == expected
    assert strategy.name == name
    assert strategy.model_version == ("m1" if name in active.MODEL_STRATEGIES else None)


def test_unscored_lesions_come_last_and_random_is_seeded():
    candidates = pd.concat([CANDIDATES, pd.DataFrame({"lesion_key": [9], "subject": ["a"],
                                                      "lesion": [9]})])
    assert active.make_strategy("likely_prl", SCORES, version="m1").rank(candidates)[-1] == 9
    first = active.make_strategy("random", seed=3).rank(CANDIDATES)
    assert first == active.make_strategy("random", seed=3).rank(CANDIDATES)
    assert sorted(first) == [1, 2, 3, 4]


def test_model_strategy_without_scores_says_what_to_do():
    with pytest.raises(InputError, match="score the project"):
        active.make_strategy("entropy")
    with pytest.raises(InputError, match="unknown"):
        active.make_strategy("cleverest")
    one_sample = SCORES.assign(uncertainty_sd=np.nan, bald=np.nan)  # one network, one view
    with pytest.raises(InputError, match="stored no disagreement"):
        active.make_strategy("disagreement", one_sample, version="m1")


@pytest.fixture
def project(tmp_path, manifest):
    with tiny_project(tmp_path / "project", manifest) as opened:
        yield opened


def test_finetune_saves_a_versioned_checkpoint_with_parent_and_labels(project):
    run_to_end(project.import_prl_masks())
    parent = tiny_checkpoint()
    assert labels_since(project, parent, "prl_mask") == 9
    assert should_retrain(project, parent, every=5, source="prl_mask")
    config = replace(TINY_TRAIN, samples_per_epoch=64)  # from scratch: 8 steps of 8 per epoch
    result = run_to_end(finetune(project, parent, config, source="prl_mask"))
    assert result.path.name == "deep-prl-v001.pt"
    loaded = load_checkpoint(result.path)
    assert loaded.metadata["parent"] == parent.id
    assert loaded.metadata["labels"]["source"] == "prl_mask"
    assert loaded.metadata["labels"]["n"] == 9 and loaded.metadata["labels"]["n_prl"] == 3
    # an epoch of fine-tuning is one draw per label (9, in batches of 8: 2 steps)
    assert loaded.metadata["training"]["steps_per_epoch"] == 2
    assert not should_retrain(project, loaded, every=1, source="prl_mask")
    assert next_version_path(project.models_dir).name == "deep-prl-v002.pt"


def test_finetuning_an_ensemble_keeps_it_one_cross_fitted_on_the_labelled_subjects(project):
    run_to_end(project.import_prl_masks())
    parents = [tiny_checkpoint(seed) for seed in (0, 1)]
    config = replace(TINY_TRAIN, samples_per_epoch=64)
    result = run_to_end(finetune(project, parents, config, source="prl_mask"))
    members = load_models(result.path)
    assert [m.metadata["parent"] for m in members] == [p.id for p in parents]
    assert [m.id for m in members] == [c.id for c in result.checkpoints]
    validated = [m.metadata["training"]["val_subjects"] for m in members]
    assert set(validated[0]).isdisjoint(validated[1])  # each network validated on other subjects
    assert all(m.metadata["labels"]["n"] == 9 for m in members)
    assert {m.threshold for m in members} == {result.validation["threshold"]}  # one shared cut
    assert "2 networks, out-of-fold F1" in result.summary() and not result.stopped
    assert not should_retrain(project, members[0], every=1, source="prl_mask")
    four = [tiny_checkpoint(seed) for seed in range(4)]  # labels in 3 subjects: two share a fold
    result = run_to_end(finetune(project, four, config, source="prl_mask"))
    validated = [m.metadata["training"]["val_subjects"] for m in result.checkpoints]
    assert len(load_models(result.path)) == 4 and validated[3] == validated[0]
