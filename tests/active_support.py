"""Helpers for the active-learning tests: tiny models and a tiny project (seconds on a CPU)."""

from __future__ import annotations

import copy
import functools
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import blob_mask, write_subject_files

from napari_deep_prl.base.errors import InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import open_cohort, write_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.data.splits import validation_shares
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.comparison import held_out_validation
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import DeepPRL, ModelConfig
from napari_deep_prl.model.train import TrainConfig, train
from napari_deep_prl.ratings.project import Project

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


def rim_manifest(folder: Path) -> Path:
    """The conftest manifest's three subjects, with a dark phase rim around each PRL: lesions a
    network can tell apart (3 subjects × 3 lesions, lesion 1 a PRL)."""
    return write_manifest([write_subject_files(folder, f"sub-0{i}", seed=i, rim_lesions=(0,)) for i in (1, 2, 3)],
                          folder / "manifest.csv")


#: Four lesions a subject (:func:`site_project`), the first a PRL with a dark phase rim.
SITE_CENTRES = ((8, 8, 8), (20, 20, 12), (10, 24, 16), (24, 8, 18))


def site_project(folder: Path, subjects: int) -> Project:
    """A project of ``subjects`` subjects × 4 lesions (enough labels to recalibrate on from 5),
    their PRL masks imported as rater 'prl_mask'."""
    rows = [write_subject_files(folder, f"sub-0{i}", seed=i, mask=blob_mask(centres=SITE_CENTRES), rim_lesions=(0,))
            for i in range(1, subjects + 1)]
    project = tiny_project(folder / "project", write_manifest(rows, folder / "manifest.csv"))
    run_to_end(project.import_prl_masks())
    return project


@functools.cache
def ranking_models() -> tuple[Checkpoint, Checkpoint]:
    """Tiny models that rank the lesions of :func:`rim_manifest`'s subjects perfectly: one every
    PRL first (trained on them), its mirror image every PRL last. Nothing validates better than
    the first, nor worse than the second, so a comparison with either has a known answer."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # 8-voxel patches cut the rims' edges: known
        patches = run_to_end(build_patchset(open_cohort(rim_manifest(Path(folder))), PatchConfig(size=SIZE)))
    config = replace(TINY_TRAIN, epochs=10, lr=1e-2, samples_per_epoch=32)
    best = run_to_end(train(patches, config, val_subjects=["sub-01"], init=tiny_checkpoint())).checkpoint
    mirror = copy.deepcopy(best.model)
    with torch.no_grad():
        mirror.head[-1].weight.neg_()
        mirror.head[-1].bias.neg_()
    worst = Checkpoint(mirror, 0.5, best.patch_config, {"note": "ranks every PRL last"})
    everyone = [patches.subjects]
    assert held_out_validation([best], patches, everyone, config)[1]["val_auc"] == 1.0  # else no known answer
    assert held_out_validation([worst], patches, everyone, config)[1]["val_auc"] == 0.0
    return best, worst


def worst_pair() -> list[Checkpoint]:
    """Two networks that rank every PRL last: the same one, told apart by an identity calibration
    (which changes the id, not the raw probabilities a comparison recalibrates)."""
    worst = ranking_models()[1]
    return [worst, replace(worst, calibration=PlattFit(0.0, 1.0, 1.0, 0.0))]


def add_contrarian(project: Project) -> str:
    """Rater 'contrarian': the PRL masks' labels on the subject one network is validated on, the
    opposite on the others (so what training teaches contradicts validation); returns that subject."""
    truth = project.training_labels("prl_mask")
    for subject in sorted(truth["subject"].unique()):
        labels = truth.assign(prl=truth["prl"] ^ (truth["subject"] != subject))
        counts = labels.groupby("subject")["prl"].sum().astype(int).to_dict()
        if validation_shares(counts, 1, TrainConfig().val_fraction, TrainConfig().seed)[0] == [subject]:
            project.import_ratings(labels.assign(rater="contrarian", label=labels["prl"].map(
                {True: "prl", False: "not_prl"}))[["subject", "lesion", "rater", "label"]])
            return subject
    raise AssertionError("no subject is validated on alone")


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
