import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import CheckpointError
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.model.metrics import PlattFit
from napari_deep_prl.model.network import DeepPRL


@pytest.fixture
def checkpoint():
    torch.manual_seed(0)
    return Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.37, PatchConfig(size=SIZE, normalisation="patch"),
                      {"training": {"epochs_run": 2}, "parent": None})


def test_round_trip_keeps_weights_threshold_and_metadata(tmp_path, checkpoint):
    path = checkpoint.save(tmp_path / "m.pt")
    loaded = load_checkpoint(path)
    assert loaded.id == checkpoint.id
    assert loaded.threshold == pytest.approx(0.37)
    assert loaded.patch_config == checkpoint.patch_config and loaded.model_config == TINY
    assert loaded.metadata["training"] == {"epochs_run": 2}
    x = torch.rand(2, 3, SIZE, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), checkpoint.model(x))
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert json.loads(raw["metadata"])["package_version"]


def test_missing_foreign_and_corrupt_files_are_clear_errors(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": checkpoint.model.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a napari-deep-prl checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    good = checkpoint.save(tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "cut.pt")


def test_weights_not_matching_the_architecture_are_refused(tmp_path, checkpoint):
    path = checkpoint.save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    metadata = json.loads(raw["metadata"])
    metadata["model"]["widths"] = [3, 5]
    raw["metadata"] = json.dumps(metadata)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_a_calibration_round_trips_and_shapes_the_output(tmp_path, checkpoint):
    raw = np.array([[0.05, 0.3, 0.9]])
    assert checkpoint.calibrate(raw) is raw  # no calibration: the output is the raw probability
    fit = PlattFit(centre=-1.0, scale=2.0, slope=1.5, intercept=-0.3)
    calibrated = replace(checkpoint, calibration=fit)
    loaded = load_checkpoint(calibrated.save(tmp_path / "m.pt"))
    assert loaded.calibration == fit and loaded.id == calibrated.id
    assert loaded.id != checkpoint.id  # same weights, another output: stored scores are not shared
    assert loaded.calibrate(raw) == pytest.approx(fit.calibrate(raw))
    assert loaded.calibrate(raw).shape == raw.shape


@pytest.mark.parametrize("calibration", [{"centre": 0.0}, [1, 2],
                                         {"centre": 0.0, "scale": 1.0, "slope": -2.0, "intercept": 0.0}])
def test_a_damaged_calibration_is_refused(tmp_path, checkpoint, calibration):
    path = checkpoint.save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    metadata = json.loads(raw["metadata"])
    metadata["calibration"] = calibration
    raw["metadata"] = json.dumps(metadata)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="checkpoint field 'calibration'"):
        load_checkpoint(path)


def edited(path, checkpoint, change):
    """``checkpoint`` saved at ``path`` with its metadata (a dict) or its weights changed."""
    checkpoint.save(path)
    raw = torch.load(path, weights_only=True)
    metadata = json.loads(raw["metadata"])
    change(metadata, raw["state_dict"])
    raw["metadata"] = json.dumps(metadata)
    torch.save(raw, path)
    return path


def setting(name, value):
    def change(metadata, state):
        metadata[name] = value
    return change


# the checkpoints: each loaded silently and decided every lesion (or failed with a traceback later)
@pytest.mark.parametrize("change, field", [
    (setting("threshold", float("nan")), "threshold"),
    (setting("threshold", 5), "threshold"),
    (setting("threshold", -1), "threshold"),
    (setting("threshold", "0.5"), "threshold"),
    (setting("calibration", {"centre": float("nan"), "scale": 1.0, "slope": 1.0, "intercept": 0.0}), "calibration"),
    (setting("calibration", {"centre": 0.0, "scale": "1", "slope": 1.0, "intercept": 0.0}), "calibration"),
    (lambda metadata, state: metadata["patch"].update(size=SIZE + 4), "patch_size"),  # 40 vs 28 in the issue
    (lambda metadata, state: metadata["patch"].update(size=SIZE + 0.7), "patch"),  # 28.7
    (lambda metadata, state: metadata["patch"].update(mask_dilation=True), "patch"),
    (lambda metadata, state: metadata["patch"].update(normalisation=["patch"]), "patch"),
    (lambda metadata, state: metadata["model"].update(dropout=float("nan")), "model"),
    (lambda metadata, state: metadata["model"].update(widths=[2, "4"]), "model"),
    (lambda metadata, state: metadata.pop("threshold"), "threshold"),
    (setting("tta", "yes"), "tta"),
    (setting("views", [[2], [2]]), "views"),
    (setting("views", [[5]]), "views"),
    (setting("views", []), "views"),
    (setting("views", "all"), "views"),
    (setting("training", {"val_subjects": "sub-01"}), "training"),
    (setting("channels", ["phase", "mp2rage", "mask"]), "channels"),
])
def test_every_metadata_field_is_checked_on_loading(tmp_path, checkpoint, change, field):
    path = edited(tmp_path / "m.pt", checkpoint, change)
    with pytest.raises(CheckpointError, match=rf"^{path}: checkpoint field '{field}' is .*, not .*; the file is "
                                              "damaged or was edited"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(tmp_path, checkpoint, value):
    # all-NaN weights scored every lesion n/a and called none PRL, with exit status 0
    def poison(metadata, state):
        for tensor in state.values():
            if tensor.is_floating_point():
                tensor.fill_(value)

    path = edited(tmp_path / "m.pt", checkpoint, poison)
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint weights \S+ hold NaN or infinite values"):
        load_checkpoint(path)


def test_a_weight_claiming_more_values_than_the_file_holds_is_refused(tmp_path, checkpoint):
    def expand(metadata, state):
        name = next(k for k in state if k.endswith("head.1.weight"))
        state[name] = torch.zeros(1).expand(state[name].shape)  # one stored value behind every element

    path = edited(tmp_path / "m.pt", checkpoint, expand)
    with pytest.raises(CheckpointError, match=r"head.1.weight claims more values than the file holds"):
        load_checkpoint(path)


def test_an_ensemble_names_the_member_at_fault(tmp_path, checkpoint):
    from napari_deep_prl.model.checkpoint import load_models, save_ensemble

    path = save_ensemble([checkpoint, checkpoint], tmp_path / "e.pt")
    raw = torch.load(path, weights_only=True)
    metadata = json.loads(raw["members"][1]["metadata"])
    metadata["threshold"] = float("nan")
    raw["members"][1]["metadata"] = json.dumps(metadata)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"{path}: member 2 of 2: checkpoint field 'threshold' is NaN"):
        load_models(path)


@pytest.mark.parametrize("patch_size", [800, 2000])
@pytest.mark.parametrize("field", ["patch_size", "patch"])
def test_a_patch_size_that_would_allocate_gigabytes_is_refused_first(tmp_path, checkpoint, manifest, patch_size,
                                                                     field):
    # 800 built a 3.3 GB network before refusing it, 2000 tried 48 GB: run capped, in a child process
    from capped import one_line_error, run_cli

    def grow(metadata, state):
        metadata["patch_size"] = patch_size
        if field == "patch":  # both fields, consistently
            metadata["patch"]["size"] = patch_size

    path = edited(tmp_path / "m.pt", checkpoint, grow)
    error = one_line_error(run_cli("score", manifest, "--model", path, "-o", tmp_path / "s.tsv"))
    assert f"{path}: checkpoint field '{field}' is " in error and "whole number of voxels from 4 to 96" in error
