"""Gradient x input saliency of a lesion's patch (model/saliency.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, centres_of
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.model.saliency import lesion_saliency


def _checkpoint(seed: int) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint(DeepPRL(TINY, SIZE).train(), 0.5, PatchConfig(size=SIZE))


def test_the_map_covers_the_patch_and_leaves_the_model_as_it_was(manifest):
    subject = read_manifest(manifest)[0].load()
    lesions = find_lesions(subject)
    lesion = int(lesions.ids[-1])
    models = [_checkpoint(0), _checkpoint(1)]
    weights = [p.detach().clone() for p in models[0].model.parameters()]
    saliency = lesion_saliency(models, subject, lesions, lesion)
    assert saliency.map.shape == (SIZE,) * 3 and saliency.map.dtype == np.float32
    assert np.isfinite(saliency.map).all() and saliency.map.min() >= 0 and saliency.map.max() == pytest.approx(1.0)
    # the patch is centred on the lesion: its centre voxel is the lesion's rounded centre of mass
    assert (saliency.origin + SIZE // 2 == centres_of(lesions, np.array([lesion]))[0]).all()
    model = models[0].model
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_no_model_no_map(manifest):
    subject = read_manifest(manifest)[0].load()
    with pytest.raises(InputError, match="no model"):
        lesion_saliency([], subject, find_lesions(subject), 1)
