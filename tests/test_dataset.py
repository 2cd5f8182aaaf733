"""Training patch sets: each subject holds its patches, or its volumes when the patches would
outweigh them, and either way the same patches are read (issue 31, defect 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from capped import lattice_subject
from model_support import TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, extract_patches
from napari_deep_prl.evaluation.methods import MethodSettings, patch_set
from napari_deep_prl.model.dataset import (
    CutOnDemand,
    build_patchset,
    oversampling_shifts,
    patch_bytes,
    volume_bytes,
)
from napari_deep_prl.model.inference import predict_views
from napari_deep_prl.model.network import DeepPRL, inference_copy

CONFIGS = [PatchConfig(), PatchConfig(normalisation="patch"),
           PatchConfig(phase_centre="zero", other_lesions="downweight", mask_dilation=2)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two subjects on a 112 x 112 x 108 grid (16 MB of volumes, the memory of 62 patches): 20
    lesions (2 PRLs: 32 patches with the shifted copies) and 100 lesions (9 PRLs: 154 patches)."""
    folder = tmp_path_factory.mktemp("lattice")
    return [lattice_subject(folder, "sub-few", 20), lattice_subject(folder, "sub-many", 100)]


def cut_beforehand(paths, config):
    """Every patch of the subject cut at once: the originals, then each PRL at each shift."""
    subject = paths.load()
    lesions = find_lesions(subject)
    ids, prl = lesions.ids, lesions.table["prl"].to_numpy(bool)
    offsets = oversampling_shifts(5)
    rows = np.concatenate([ids, np.tile(ids[prl], len(offsets))])
    shifts = np.concatenate([np.zeros((ids.size, 3), np.int64), np.repeat(offsets, prl.sum(), axis=0)])
    return extract_patches(subject, lesions, config, ids=rows, shift=shifts), rows


@pytest.mark.parametrize("config", CONFIGS, ids=["subject", "patch", "zero-downweight"])
def test_a_subject_whose_patches_outweigh_its_volumes_keeps_them_and_reads_the_same_patches(cohort, config):
    patches = run_to_end(build_patchset(cohort, config))
    few, many = patches.x.blocks
    assert isinstance(few, np.ndarray) and isinstance(many, CutOnDemand)
    subject = cohort[1].load()
    assert patch_bytes(len(many), config) > volume_bytes(subject, find_lesions(subject), config)
    expected, rows = zip(*(cut_beforehand(paths, config) for paths in cohort))
    expected = np.concatenate(expected)
    np.testing.assert_array_equal(patches.lesion, np.concatenate(rows))
    assert patches.x.shape == expected.shape == (186, 3, 28, 28, 28)
    # read as training reads them: shuffled batches mixing both subjects
    order = np.random.default_rng(0).permutation(len(patches))
    for batch in np.array_split(order, len(order) // 32):
        np.testing.assert_array_equal(patches.x[np.sort(batch)], expected[np.sort(batch)])
    many_originals = patches.select(["sub-many"]).originals()
    np.testing.assert_array_equal(many_originals.x[:], expected[(patches.subject == "sub-many") & ~patches.shifted])
    np.testing.assert_array_equal(patches.x[5], expected[5])


def test_validation_scores_patches_cut_when_read_as_patches_held(cohort):
    patches = run_to_end(build_patchset(cohort)).select(["sub-many"])
    assert isinstance(patches.x.blocks[1], CutOnDemand)
    torch.manual_seed(0)
    fast = inference_copy(DeepPRL(TINY, 28), torch.device("cpu"))
    # 154 patches: two runs of 88 read from the set, each scored in batches of 8
    read = predict_views(fast, patches.x, torch.device("cpu"), ((), (2,)))
    held = predict_views(fast, patches.x[:], torch.device("cpu"), ((), (2,)))
    assert torch.equal(read, held)


def test_the_cross_validation_cache_reads_back_the_same_patches_from_disk(cohort, tmp_path):
    settings = MethodSettings(cache=tmp_path)
    built = run_to_end(patch_set(cohort, PatchConfig(), settings))
    assert len(list(tmp_path.glob("patches-*.npy"))) == 1 and len(list(tmp_path.glob("patches-*.npz"))) == 1
    cached = run_to_end(patch_set(cohort, PatchConfig(), settings))
    assert isinstance(cached.x.blocks[0], np.memmap)  # the patches stay on disk, read by rows
    np.testing.assert_array_equal(cached.x[:], built.x[:])
    for column in ("y", "subject", "lesion", "shifted"):
        np.testing.assert_array_equal(getattr(cached, column), getattr(built, column))
