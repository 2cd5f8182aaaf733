"""The forward pass: views, calibration per network, and both uncertainties of the same samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from active_support import SIZE, one_torch_thread, tiny_checkpoint  # noqa: F401

from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.inference import (
    TTA_VIEWS,
    binary_entropy,
    checkpoint_views,
    from_samples,
    mutual_information,
    predict,
    view_probabilities,
)


def test_entropy_and_mutual_information_definitions():
    assert binary_entropy(np.array([0.5]))[0] == pytest.approx(1.0)
    assert binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0], abs=1e-9)
    agree = np.array([[0.5], [0.5]])  # unsure, but every sample says the same: no disagreement
    split = np.array([[0.0], [1.0]])  # confident samples that contradict each other
    assert mutual_information(agree)[0] == pytest.approx(0.0)
    assert mutual_information(split)[0] == pytest.approx(1.0, abs=1e-6)


def test_a_prediction_is_the_mean_sd_and_bald_of_the_same_samples():
    samples = np.array([[0.1, 0.5], [0.3, 0.5], [0.2, 0.5]])
    prediction = from_samples(samples)
    assert prediction.probability == pytest.approx([0.2, 0.5])
    assert prediction.uncertainty_sd == pytest.approx([0.1, 0.0])
    assert prediction.bald == pytest.approx([mutual_information(samples)[0], 0.0])
    assert prediction.bald[0] > 0
    one = from_samples(samples[:1])  # a single sample has neither spread nor disagreement
    assert one.probability == pytest.approx([0.1, 0.5])
    assert np.isnan(one.uncertainty_sd).all() and np.isnan(one.bald).all()
    # samples not scored (NaN) are left out, lesion by lesion
    ragged = from_samples(np.array([[0.1, 0.02], [0.3, np.nan], [0.2, np.nan]]))
    assert ragged.probability == pytest.approx([0.2, 0.02])
    assert ragged.uncertainty_sd[0] == pytest.approx(0.1) and ragged.bald[0] == pytest.approx(prediction.bald[0])
    assert np.isnan(ragged.uncertainty_sd[1]) and np.isnan(ragged.bald[1])


def test_a_checkpoint_is_scored_on_the_views_it_records():
    checkpoint = tiny_checkpoint()
    assert checkpoint_views(checkpoint) == ((),)  # older still: the patch as cut
    checkpoint.metadata["tta"] = True
    assert checkpoint_views(checkpoint) == TTA_VIEWS  # the previous version: all 8 flips
    checkpoint.metadata["views"] = [[], [2, 3, 4]]
    assert checkpoint_views(checkpoint) == ((), (2, 3, 4))
    assert checkpoint_views(checkpoint, tta=False) == ((),) and checkpoint_views(checkpoint, tta=True) == TTA_VIEWS
    x = np.random.default_rng(0).random((3, 3, SIZE, SIZE, SIZE), dtype=np.float32)
    rows = view_probabilities([checkpoint], x, device="cpu", precision="float32")
    flipped = view_probabilities([tiny_checkpoint()], x[:, :, ::-1, ::-1, ::-1].copy(), device="cpu",
                                 precision="float32")
    assert rows.shape == (2, 3) and rows[1] == pytest.approx(flipped[0], abs=1e-6)


def test_the_screen_scores_the_other_views_only_where_the_first_look_reaches_it():
    networks = []
    for seed in (0, 1, 2):
        network = tiny_checkpoint(seed, dropout=0.0)
        network.metadata["views"] = [list(view) for view in TTA_VIEWS]
        networks.append(network)
    x = np.random.default_rng(0).random((12, 3, SIZE, SIZE, SIZE), dtype=np.float32)
    every = view_probabilities(networks, x, device="cpu", precision="float32")
    firsts = [0, 8, 16]  # each network's first view: the patch as cut
    first = every[firsts].mean(0)
    screen = float(np.median(first))
    screened = view_probabilities(networks, x, device="cpu", precision="float32", screen=screen)
    assert screened.shape == every.shape == (24, 12)
    onward = first >= screen
    assert 0 < onward.sum() < len(x)
    assert np.isfinite(screened[:, onward]).all() and np.isnan(screened[:, ~onward]).sum() == 21 * (~onward).sum()
    np.testing.assert_allclose(screened[:, onward], every[:, onward], atol=1e-6)
    np.testing.assert_allclose(screened[firsts][:, ~onward], every[firsts][:, ~onward], atol=1e-6)
    # scored on every view: their mean; kept to the first looks: the median of those
    probability = from_samples(screened).probability
    np.testing.assert_allclose(probability[onward], every[:, onward].mean(0), atol=1e-6)
    np.testing.assert_allclose(probability[~onward], np.median(every[firsts][:, ~onward], 0), atol=1e-6)


def test_a_lesion_kept_to_its_first_looks_is_ranked_on_their_median_and_never_called():
    # three networks x two views; the second lesion was kept to each network's first view
    samples = np.array([[0.30, 0.01], [0.40, np.nan], [0.20, 0.15], [0.30, np.nan], [0.25, 0.02], [0.35, np.nan]])
    prediction = from_samples(samples)
    assert prediction.probability == pytest.approx([0.3, 0.02])  # one network's alarm does not lift it
    assert prediction.uncertainty_sd[1] == pytest.approx(np.std([0.01, 0.15, 0.02], ddof=1))
    assert prediction.bald[1] == pytest.approx(mutual_information(np.array([[0.01], [0.15], [0.02]]))[0])
    # below a screen at half the threshold, the median of the first looks stays below the threshold
    rng = np.random.default_rng(0)
    for networks in (1, 2, 3, 4, 5):
        first = rng.beta(0.3, 3.0, size=(networks, 20_000))
        screen = 0.5 * 0.4
        kept = first[:, first.mean(0) < screen]
        samples = np.concatenate([kept, np.full((7 * networks, kept.shape[1]), np.nan)])
        assert (from_samples(samples).probability < 2 * screen).all()


def _clear_and_ambiguous(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches whose phase channel is 0 (non-PRL) or 1 (PRL): a trivially separable task."""
    y = torch.arange(n) % 2
    x = torch.full((n, 3, SIZE, SIZE, SIZE), 0.5)
    x[:, 1] = y.float()[:, None, None, None]
    return x, y.float()


def _trained(seed: int) -> Checkpoint:
    checkpoint = tiny_checkpoint(seed, dropout=0.0)
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


def test_an_ensemble_disagrees_more_on_ambiguous_input():
    clear, _ = _clear_and_ambiguous(2)
    ambiguous = clear[:1].clone()
    ambiguous[:, 1] = 0.5  # half-way between the two classes
    members = [_trained(seed) for seed in range(3)]
    prediction = predict(members, torch.cat([clear, ambiguous]).numpy(), device="cpu")
    assert prediction.bald[2] > 1.5 * max(prediction.bald[:2])
    assert binary_entropy(prediction.probability)[2] > max(binary_entropy(prediction.probability[:2]))
