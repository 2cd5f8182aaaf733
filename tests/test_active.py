"""Active learning core: uncertainty measures, strategies, cached scores, retraining."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from active_support import (  # noqa: F401
    SIZE,
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
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint, load_models
from napari_deep_prl.model.metrics import PlattFit, expected_f1_threshold


def test_entropy_and_mutual_information_definitions():
    assert active.binary_entropy(np.array([0.5]))[0] == pytest.approx(1.0)
    assert active.binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0], abs=1e-9)
    agree = np.array([[0.5], [0.5]])  # unsure, but every view says the same: no disagreement
    split = np.array([[0.0], [1.0]])  # confident views that contradict each other
    assert active.mutual_information(agree)[0] == pytest.approx(0.0)
    assert active.mutual_information(split)[0] == pytest.approx(1.0, abs=1e-6)
    both = active.from_samples(split)
    assert both.entropy[0] == pytest.approx(1.0) and both.spread[0] == pytest.approx(np.sqrt(0.5))


SCORES = pd.DataFrame({"lesion_key": [1, 2, 3, 4], "subject": ["a", "a", "b", "b"],
                       "lesion": [1, 2, 1, 2], "probability": [0.05, 0.55, 0.9, 0.3],
                       "uncertainty": [0.01, 0.2, 0.05, 0.4]})
CANDIDATES = SCORES[["lesion_key", "subject", "lesion"]].iloc[::-1]


@pytest.mark.parametrize(("name", "expected"), [
    ("entropy", [2, 4, 3, 1]),        # closest to 0.5 first
    ("disagreement", [4, 2, 3, 1]),   # highest stored mutual information first
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


def _clear_and_ambiguous(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches whose phase channel is 0 (non-PRL) or 1 (PRL): a trivially separable task."""
    y = torch.arange(n) % 2
    x = torch.full((n, 3, SIZE, SIZE, SIZE), 0.5)
    x[:, 1] = y.float()[:, None, None, None]
    return x, y.float()


def _trained(seed: int, dropout: float) -> Checkpoint:
    checkpoint = tiny_checkpoint(seed, dropout)
    model, (x, y) = checkpoint.model, _clear_and_ambiguous(8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return checkpoint


def _probe() -> np.ndarray:
    clear, _ = _clear_and_ambiguous(2)
    ambiguous = clear[:1].clone()
    ambiguous[:, 1] = 0.5  # half-way between the two classes
    return torch.cat([clear, ambiguous]).numpy()


def test_mc_dropout_samples_differ_between_passes_reproducibly():
    # Whether an in-between input gets more MC-dropout uncertainty than a clear one depends on
    # how a tiny model happens to train on a given CPU; the sampling itself is what is ours.
    checkpoint = _trained(0, dropout=0.5)
    samples = active.mc_dropout_samples(checkpoint, _probe(), n_samples=32, seed=1)
    assert samples[:, 0].mean() < 0.3 and samples[:, 1].mean() > 0.7  # learnt the task
    assert (samples.std(axis=0) > 1e-3).all()  # dropout on: every lesion's passes differ
    assert (active.mutual_information(samples) > 0).all()
    again = active.mc_dropout_samples(checkpoint, _probe(), n_samples=32, seed=1)
    np.testing.assert_array_equal(samples, again)
    assert checkpoint.model.training is False  # dropout switched back off


def test_ensemble_spread_is_higher_for_ambiguous_input():
    members = [_trained(seed, dropout=0.0) for seed in range(3)]
    scores = active.estimate(members, _probe(), "ensemble", device="cpu")
    assert scores.mutual_information[2] > 1.5 * max(scores.mutual_information[:2])
    assert scores.entropy[2] > max(scores.entropy[:2])


def test_mc_dropout_refuses_a_model_without_dropout():
    with pytest.raises(InputError, match="dropout"):
        active.mc_dropout_samples(tiny_checkpoint(dropout=0.0), _probe())
    assert active.resolve_method([tiny_checkpoint(dropout=0.0)]) == "tta"
    assert active.resolve_method([tiny_checkpoint()]) == "mc_dropout"
    assert active.resolve_method([tiny_checkpoint(), tiny_checkpoint(1)]) == "ensemble"


@pytest.fixture
def project(tmp_path, manifest):
    with tiny_project(tmp_path / "project", manifest) as opened:
        yield opened


def test_scores_are_stored_per_model_version_and_not_recomputed(project):
    checkpoint = tiny_checkpoint()
    events = []
    gen = active.score_project(project, [checkpoint], "mc_dropout", n_samples=4, device="cpu")
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            scores = stop.value
            break
    version = active.model_version([checkpoint], "mc_dropout", n_samples=4)
    assert version == f"{checkpoint.id}/mc4"
    assert len(scores) == len(project.lesions()) == 9
    assert set(scores["model_id"]) == {version}
    assert [e.metrics["cached"] for e in events] == [0.0, 0.0, 0.0]
    again = active.score_project(project, [checkpoint], "mc_dropout", n_samples=4, device="cpu")
    assert all(e.metrics["cached"] == 1.0 for e in _events(again))

    strategy = active.project_strategy(project, "disagreement", version)
    queue = project.queue("alice", strategy)
    item = queue.next()
    assert item.model_version == version and item.strategy == "disagreement"
    top = scores.sort_values("uncertainty", ascending=False)["lesion_key"].iloc[0]
    assert item.lesion_key == top
    queue.record(item, "prl")
    assert project.store.current()["model_version"].tolist() == [version]


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

    each = active.project_scores(project, [calibrated], "m")
    assert each.threshold == 0.6
    assert each.lesions["prl"].tolist() == [1, 0, 0, 0, 0, 0]
    assert each.subjects[["subject", "lesions", "prl_count"]].values.tolist() == [
        ["sub-01", 3, 1], ["sub-02", 3, 0]]

    together = active.project_scores(project, [calibrated], "m", decision="expected_f1")
    alone = [0.9, 0.05, 0.45, 0.4, 0.02]  # the confluent lesion does not place the cut
    assert together.threshold == expected_f1_threshold(alone)[0]
    assert 0.05 < together.threshold < 0.4
    # ... but is decided at it, like every scored lesion
    assert together.lesions["prl"].tolist() == [1, 1, 0, 1, 1, 0]
    assert together.subjects["prl_ge1"].tolist() == [True, True]
    with pytest.raises(InputError, match="calibrated"):
        active.project_scores(project, [tiny_checkpoint()], "m", decision="expected_f1")


def _events(gen) -> list:
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration:
            return out



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


def test_tta_and_single_pass_methods():
    checkpoint, x = tiny_checkpoint(dropout=0.0), _probe()
    tta = active.estimate([checkpoint], x, "tta", device="cpu")
    assert np.isfinite(tta.mutual_information).all() and (tta.spread >= 0).all()
    plain = active.estimate([checkpoint], x, "none", device="cpu")
    assert np.isnan(plain.mutual_information).all()
    assert ((plain.probability >= 0) & (plain.probability <= 1)).all()
