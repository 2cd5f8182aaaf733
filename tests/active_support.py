"""Helpers for the active-learning tests: tiny models and a tiny project (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_deep_prl.checkpoint import Checkpoint
from napari_deep_prl.model import DeepPRL, ModelConfig
from napari_deep_prl.patches import PatchConfig
from napari_deep_prl.project import Project
from napari_deep_prl.train import TrainConfig

#: Patch side of the tiny models (two pooling blocks leave 2³ features).
SIZE = 8
TINY = ModelConfig(widths=(2, 4), reduction=2, fc=(8,), dropout=0.3)
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, samples_per_epoch=16, device="cpu", model=TINY)


def tiny_checkpoint(seed: int = 0, dropout: float = 0.3) -> Checkpoint:
    """An untrained tiny model that cuts 8³ patches."""
    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY.to_dict(), "dropout": dropout})
    model = DeepPRL(config, SIZE).eval()
    return Checkpoint(model, 0.5, PatchConfig(size=SIZE), {"note": "tiny test model"})


def tiny_project(root: Path, manifest: Path) -> Project:
    """A project over the conftest manifest (3 subjects × 3 lesions, lesion 1 a PRL)."""
    return Project.init(root, manifest)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: OpenMP threads only spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_job(qtbot, job, timeout=30_000):
    """Wait for the job's worker; fail if it raised."""
    errors = []
    job.worker.errored.connect(errors.append)
    with qtbot.waitSignal(job.worker.finished, timeout=timeout):
        pass  # signals queued by the worker thread are delivered while waiting
    assert errors == []
    return job
