import threading
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from model_support import TINY_TRAIN, one_torch_thread, toy_patches  # noqa: F401

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model import train as train_module
from napari_deep_prl.model.checkpoint import load_checkpoint
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.inference import (
    TTA_VIEWS,
    checkpoint_views,
    predict,
    predict_views,
    resolve_device,
    resolve_precision,
)
from napari_deep_prl.model.metrics import (
    OperatingPoint,
    best_f1_threshold,
    operating_point,
)
from napari_deep_prl.model.network import inference_copy
from napari_deep_prl.model.train import split_validation, train


def test_tiny_training_lowers_the_loss_and_round_trips(tmp_path):
    patches = toy_patches()
    events = []
    gen = train(patches, TINY_TRAIN)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    history = result.history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["loss"] < history[1]["loss"]
    assert {"epoch", "batch"} <= {e.stage for e in events}
    assert result.kept_epoch == len(history) - 1  # keep="last", and training beat the untrained model
    # calibration and threshold are chosen again on the kept model's 8 flips of the validation lesions
    validation = patches.select(result.checkpoint.metadata["training"]["val_subjects"])
    views = torch.sigmoid(predict_views(inference_copy(result.checkpoint.model, torch.device("cpu")),
                                        validation.x, torch.device("cpu"), TTA_VIEWS))
    assert result.checkpoint.tta and len(TTA_VIEWS) == 8 and checkpoint_views(result.checkpoint) == TTA_VIEWS
    point = operating_point(validation.y, views.numpy(), "calibrated")
    assert point.calibration is not None
    assert asdict(result.checkpoint.calibration) == pytest.approx(asdict(point.calibration), rel=1e-4)
    assert result.checkpoint.threshold == pytest.approx(point.threshold, abs=1e-6)
    assert result.checkpoint.threshold == pytest.approx(result.checkpoint.validation["val_f1"] / 2)
    assert result.checkpoint.validation["threshold"] == result.checkpoint.threshold
    # scoring the validation lesions gives the calibrated output the threshold was chosen on
    scored = predict([result.checkpoint], validation.x, device="cpu", precision="float32").probability
    assert scored == pytest.approx(point.calibration.calibrate(views.numpy()).mean(0), abs=1e-4)
    assert result.checkpoint.validation == result.checkpoint.metadata["validation_tta"]
    summary = result.checkpoint.metadata["training"]
    assert not set(summary["train_subjects"]) & set(summary["val_subjects"])
    loaded = load_checkpoint(result.checkpoint.save(tmp_path / "m.pt"))
    x = torch.from_numpy(patches.x[:4])
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), result.checkpoint.model.eval()(x))
    assert loaded.metadata["validation"]["epoch"] == result.kept_epoch
    assert loaded.tta and loaded.threshold == pytest.approx(result.checkpoint.threshold)
    assert loaded.calibration == result.checkpoint.calibration


def test_without_tta_the_kept_epoch_threshold_is_kept():
    result = run_to_end(train(toy_patches(), replace(TINY_TRAIN, tta=False)))
    assert not result.checkpoint.tta and "validation_tta" not in result.checkpoint.metadata
    assert checkpoint_views(result.checkpoint) == ((),)
    assert result.checkpoint.threshold == result.history[result.kept_epoch]["threshold"]
    assert result.checkpoint.validation == result.history[result.kept_epoch]


def test_the_paper_threshold_rule_is_the_validation_argmax():
    result = run_to_end(train(toy_patches(), replace(TINY_TRAIN, tta=False, threshold_rule="best_f1")))
    validation = toy_patches().select(result.checkpoint.metadata["training"]["val_subjects"])
    one_view = torch.sigmoid(predict_views(inference_copy(result.checkpoint.model, torch.device("cpu")),
                                           validation.x, torch.device("cpu"), ((),))[0])
    assert result.checkpoint.threshold == pytest.approx(best_f1_threshold(validation.y, one_view.numpy())[0],
                                                        abs=1e-6)
    assert result.checkpoint.metadata["training"]["config"]["threshold_rule"] == "best_f1"
    assert result.checkpoint.calibration is None  # the output stays the raw probability
    with pytest.raises(InputError, match="threshold rule"):
        replace(TINY_TRAIN, threshold_rule="youden")


def test_same_seed_same_model():
    config = replace(TINY_TRAIN, epochs=1)
    first = run_to_end(train(toy_patches(), config)).checkpoint.id
    assert run_to_end(train(toy_patches(), config)).checkpoint.id == first
    assert run_to_end(train(toy_patches(), replace(config, seed=1))).checkpoint.id != first


def test_a_fine_tune_keeps_its_parent_unless_told_to_move_on():
    patches = toy_patches()
    parent = run_to_end(train(patches, TINY_TRAIN)).checkpoint
    start = run_to_end(train(patches, replace(TINY_TRAIN, epochs=0), init=parent)).history[0]
    wrecking = replace(TINY_TRAIN, epochs=2, lr=50.0)  # epochs that can only do worse
    kept = run_to_end(train(patches, wrecking, init=parent))
    assert kept.kept_epoch == 0 and kept.checkpoint.id == parent.id
    moved = run_to_end(train(patches, replace(wrecking, keep_start=False), init=parent))
    assert moved.kept_epoch >= 1 and moved.checkpoint.id != parent.id
    assert moved.history[moved.kept_epoch]["val_loss"] > start["val_loss"]


@pytest.mark.parametrize(("keep", "start_f1", "kept"), [("last", 0.5, 3), ("best", 0.5, 1), ("last", 0.95, 0)])
def test_the_kept_model_follows_the_keep_rule(monkeypatch, keep, start_f1, kept):
    # scripted validation scores: epoch 1 is the best of the trained ones, epoch 3 the last
    scores = iter([start_f1, 0.9, 0.6, 0.7])
    monkeypatch.setattr(train_module, "_validate", lambda *args, **kwargs: (
        {"val_loss": 0.1, "val_f1": next(scores), "val_auc": 0.9, "threshold": 0.5}, OperatingPoint(0.5, 0.5)))
    result = run_to_end(train(toy_patches(), replace(TINY_TRAIN, keep=keep, tta=False)))
    assert result.kept_epoch == kept and result.checkpoint.validation == result.history[kept]
    assert result.checkpoint.metadata["training"]["keep"] == keep


def test_an_unknown_keep_rule_is_refused():
    with pytest.raises(InputError, match="keep rule"):
        replace(TINY_TRAIN, keep="first")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_training_learns_in_either_precision_and_records_it(precision):
    result = run_to_end(train(toy_patches(), replace(TINY_TRAIN, precision=precision)))
    assert result.history[-1]["loss"] < result.history[1]["loss"]
    assert result.checkpoint.metadata["training"]["precision"] == precision
    assert all(p.dtype == torch.float32 for p in result.checkpoint.model.parameters())  # weights stay float32


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    for avx512_bf16, amx, expected in [(False, False, torch.float32), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert resolve_precision("auto", cpu) == expected
    with pytest.raises(InputError, match="precision"):
        replace(TINY_TRAIN, precision="float16")


def test_stop_keeps_the_best_model_so_far():
    stop = threading.Event()
    gen = train(toy_patches(), TINY_TRAIN, stop=stop)
    while next(gen).stage != "batch":
        pass
    stop.set()
    with pytest.raises(StopIteration) as end:
        while True:
            next(gen)
    result = end.value.value
    assert result.stopped
    assert result.history[-1].get("partial") and len(result.history) == 2
    assert result.checkpoint.metadata["training"]["stopped"]


def test_validation_split_is_by_patient_and_explicit_split_is_used():
    patches = toy_patches(n_subjects=10)
    val = split_validation(patches, 0.2, seed=0)
    assert 1 <= len(val) <= 3 and set(val) <= set(patches.subjects)
    result = run_to_end(train(patches, replace(TINY_TRAIN, epochs=0), val_subjects=["sub-0", "sub-1"]))
    assert result.checkpoint.metadata["training"]["val_subjects"] == ["sub-0", "sub-1"]
    with pytest.raises(InputError, match="at least 2"):
        split_validation(patches.select(["sub-0"]), 0.2, seed=0)


def test_both_classes_are_needed():
    patches = toy_patches()
    patches.y[:] = 0
    with pytest.raises(InputError, match="both classes"):
        run_to_end(train(patches, TINY_TRAIN))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(InputError, match="no CUDA"):
        resolve_device("cuda")


def test_patchset_oversamples_prls_and_selects_subjects(manifest):
    cohort = read_manifest(manifest)
    with pytest.warns(InputWarning, match="larger --patch-size"):  # 8 voxels is too small for them
        patches = run_to_end(build_patchset(cohort, PatchConfig(size=8)))
    # 3 subjects x 3 lesions, lesion 1 of each a PRL with 6 shifted copies
    assert patches.x.shape == (27, 3, 8, 8, 8)
    assert int(patches.shifted.sum()) == 18 and (patches.y[patches.shifted] == 1).all()
    originals = patches.originals()
    assert len(originals) == 9 and originals.y.sum() == 3
    assert patches.prl_counts() == {"sub-01": 1, "sub-02": 1, "sub-03": 1}
    assert set(patches.select(["sub-02"]).subject) == {"sub-02"}
    with pytest.raises(InputError, match="sub-99"):
        patches.select(["sub-99"])
    assert np.isfinite(patches.x[:]).all()
