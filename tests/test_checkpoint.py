import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_deep_prl.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.errors import CheckpointError
from napari_deep_prl.evaluate import PlattFit
from napari_deep_prl.model import DeepPRL
from napari_deep_prl.patches import PatchConfig

from model_support import SIZE, TINY, one_torch_thread  # noqa: F401


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
