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
