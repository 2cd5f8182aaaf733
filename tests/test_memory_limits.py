"""Memory bounded by the input (issue 31, defect 3): headers that promise more than their file
holds, images past the documented limit, and subjects with thousands of lesions, each run
through the command line under an address-space limit (:mod:`capped`)."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from capped import lattice_subject, one_line_error, run_cli

from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.images import MAX_VOXELS
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.model.network import DeepPRL, ModelConfig


def lying_header(path, shape, dtype=np.float64, *, compress=False):
    """A NIfTI file of 1,376 bytes (as in the issue) whose header claims ``shape`` of ``dtype``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    header.set_data_offset(352)
    raw = header.binaryblock + bytes(4) + bytes(1024)
    assert len(raw) == 1376
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture
def small(write_subject):
    return write_subject("sub-01")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The cheapest network that takes 28³ patches: memory per lesion as the real one's."""
    torch.manual_seed(0)
    network = DeepPRL(ModelConfig(widths=(1, 1), reduction=1, fc=(1,)), 28).eval()
    return Checkpoint(network, 0.5, PatchConfig()).save(tmp_path_factory.mktemp("model") / "nano.pt")


@pytest.mark.parametrize("command", ["lesions", "score"])
@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
def test_a_header_claiming_a_billion_voxels_is_refused_before_reading(tmp_path, small, model, command, compress):
    # the files: 1,376 bytes whose header claims 1000 x 1000 x 999 float64 (8 GB)
    phase = lying_header(tmp_path / f"phase.nii{'.gz' if compress else ''}", (1000, 1000, 999), compress=compress)
    extra = ["--model", model, "-o", tmp_path / "s.tsv"] if command == "score" else []
    error = one_line_error(run_cli(command, "--phase", phase, "--mp2rage", small.image("mp2rage"), "--mask", small.mask,
                                   *extra))
    assert f"{phase}: phase image header claims (1000, 1000, 999) = 999,000,000 voxels, more than the " \
           f"{MAX_VOXELS:,} this package reads" in error


@pytest.mark.parametrize("compress", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("dtype", [np.float64, np.int16])
def test_a_header_promising_more_than_its_file_holds_is_refused_as_truncated(tmp_path, small, compress, dtype):
    # under the voxel limit, and more than the memory cap: reading it first would fail for lack of memory
    shape = (1000, 1000, 260)
    phase = lying_header(tmp_path / f"phase.nii{'.gz' if compress else ''}", shape, dtype, compress=compress)
    error = one_line_error(run_cli("lesions", "--phase", phase, "--mp2rage", small.image("mp2rage"),
                                   "--mask", small.mask))
    holds = "it decompresses to fewer" if compress else "the file holds 1,376"
    assert (f"{phase}: phase image header promises {shape} {np.dtype(dtype)} voxels, "
            f"{352 + int(np.prod(shape)) * np.dtype(dtype).itemsize:,} bytes of file, but {holds}: the file is "
            "truncated or its header is damaged. Re-export or re-copy the file") in error


def test_a_valid_gzip_of_gigabytes_is_refused_by_the_voxel_limit(tmp_path, small):
    # a real gzip stream (a few MB) of 1000 x 1000 x 999 zeros, consistent with its header
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 999))
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=1)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    phase = tmp_path / "phase.nii.gz"
    with open(phase, "wb") as fh:
        fh.write(compressor.compress(header.binaryblock + bytes(4)))
        block = bytes(1 << 24)
        for start in range(0, 999_000_000, len(block)):
            fh.write(compressor.compress(block[:min(len(block), 999_000_000 - start)]))
        fh.write(compressor.flush())
    error = one_line_error(run_cli("lesions", "--phase", phase, "--mp2rage", small.image("mp2rage"),
                                   "--mask", small.mask))
    assert "= 999,000,000 voxels, more than the" in error


def test_gzip_of_several_members_is_read_whole(write_subject):
    # its trailer counts the last member only: the size check must not refuse it
    paths = write_subject()
    expected = paths.load().phase
    raw = gzip.decompress(paths.image("phase").read_bytes())
    paths.image("phase").write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    np.testing.assert_array_equal(paths.load().phase, expected)


def test_scoring_memory_does_not_grow_with_the_lesion_count(tmp_path, model):
    # 3,000 lesions took 2.6 GB of address space (and 10,000 5.6 GB of memory) when all their
    # patches were cut at once; a run at a time they fit in the cap with room to spare
    manifest = write_manifest([lattice_subject(tmp_path, "sub-many", 3000)], tmp_path / "manifest.csv")
    out = tmp_path / "scores.tsv"
    result = run_cli("score", manifest, "--model", model, "-o", out, "--no-tta", "--threads", "1",
                     "--precision", "float32", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    scores = pd.read_csv(out, sep="\t")
    assert len(scores) == 3000 and scores["prl_probability"].notna().all()


def test_training_memory_does_not_grow_with_the_lesion_count(tmp_path, model):
    # 10,000 lesions in one subject were refused (their patches and shifted copies would take
    # 3.9 GB); the 10,000-lesion subject trains and a 5,000-lesion one validates (both keep their
    # volumes and have patches cut per batch and per run), far under the cap
    cohort = [lattice_subject(tmp_path, "sub-many", 10_000), lattice_subject(tmp_path, "sub-valid", 5_000)]
    out = tmp_path / "m.pt"
    result = run_cli("train", write_manifest(cohort, tmp_path / "manifest.csv"), "-o", out, "--init", model,
                     "--accept-worse", "--models", "1", "--epochs", "1", "--samples-per-epoch", "32", "--no-tta",
                     "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = load_checkpoint(out).metadata["training"]
    assert summary["train_subjects"] == ["sub-many"] and summary["val_subjects"] == ["sub-valid"]
    assert summary["train_lesions"] == 10_000 and summary["train_patches"] == 10_000 + 6 * 834
    assert summary["val_lesions"] == 5_000
