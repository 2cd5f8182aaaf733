"""Helpers for the model/training/scoring tests: tiny networks and separable toy patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.dataset import PatchSet
from napari_deep_prl.model.network import ModelConfig
from napari_deep_prl.model.train import TrainConfig

SIZE = 8
TINY = ModelConfig(widths=(2, 4), reduction=2, fc=(8,))
TINY_TRAIN = TrainConfig(epochs=3, batch_size=8, samples_per_epoch=32, lr=1e-2, device="cpu", model=TINY)


def toy_patches(n_subjects: int = 6, per_subject: int = 8, seed: int = 0) -> PatchSet:
    """PRLs carry a dark phase ring around the mask; others do not. Every subject has both."""
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    y = np.tile((np.arange(per_subject) < per_subject // 4).astype(np.int8), n_subjects)
    x = rng.normal(0.5, 0.05, (n, 3, SIZE, SIZE, SIZE)).astype(np.float32)
    x[:, 2] = 0
    x[:, 2, 3:5, 3:5, 3:5] = 1
    x[y == 1, 1, 2:6, 2:6, 2:6] -= 0.3
    subject = np.repeat([f"sub-{i}" for i in range(n_subjects)], per_subject).astype(object)
    return PatchSet(x, y, subject, np.tile(np.arange(1, per_subject + 1), n_subjects),
                    np.zeros(n, bool), PatchConfig(size=SIZE))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: OpenMP threads only spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
