"""An ensemble's networks trained stacked, in one pass per step, each as it would train alone."""

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_support import TINY_TRAIN, one_torch_thread, toy_patches  # noqa: F401

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.model.checkpoint import load_models
from napari_deep_prl.model.crossfit import train_crossfitted
from napari_deep_prl.model.inference import TTA_VIEWS, network_probabilities
from napari_deep_prl.model.train import (
    LOSS_READ_STEPS,
    MAX_AUTO_BATCH,
    auto_batch_size,
    batch_that_fits,
    stacks,
    train,
    train_together,
)

#: float32, as the float32 training steps of two runs can only be compared there (bfloat16 rounds
#: the stacked and the single convolutions' sums differently at the third digit).
EXACT = replace(TINY_TRAIN, lr=1e-3, keep="best", precision="float32")
VALIDATED_ON = [["sub-0", "sub-1"], ["sub-2", "sub-3"]]


def _differences(a: torch.nn.Module, b: torch.nn.Module) -> np.ndarray:
    """Every weight's (and batch-norm statistic's) absolute difference."""
    sa, sb = a.state_dict(), b.state_dict()
    return np.concatenate([(sa[k].double() - sb[k].double()).abs().flatten().numpy()
                           for k in sa if sa[k].is_floating_point()])


def test_stacked_networks_come_out_as_each_trained_alone():
    """Both runs do the same arithmetic in another order: the stacked convolutions are grouped
    ones, the single network's channels-last ones, so float32 sums round differently (losses
    agree to about 1e-7). Adam divides each gradient by its running size, so a weight whose
    gradient is about zero (the mask branch sees the same mask in every toy patch) can move by
    up to about the step size (lr 1e-3) either way on rounding alone: 99 % of the weights must
    agree to 1e-6 (here: 4e-8) and none may differ by more than the 12 steps could move it;
    outputs to 1e-5. Other batches, seeds or shared batch-norm statistics move most weights by
    whole steps (the two members here differ by more than 1e-2)."""
    patches = toy_patches()
    configs = [replace(EXACT, seed=seed, stack="on") for seed in (0, 1)]
    together = run_to_end(train_together(patches, configs, VALIDATED_ON, [None, None]))
    for config, val, stacked in zip(configs, VALIDATED_ON, together):
        alone = run_to_end(train(patches, replace(config, stack="off"), val_subjects=val))
        assert [h["epoch"] for h in stacked.history] == [0, 1, 2, 3]
        for mine, theirs in zip(stacked.history, alone.history):
            assert mine["val_f1"] == theirs["val_f1"]
            assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5, nan_ok=True)
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
        assert stacked.kept_epoch == alone.kept_epoch
        differences = _differences(stacked.checkpoint.model, alone.checkpoint.model)
        assert np.quantile(differences, 0.99) < 1e-6 and differences.max() < 12 * EXACT.lr
        assert stacked.checkpoint.threshold == pytest.approx(alone.checkpoint.threshold, abs=1e-5)
        assert stacked.checkpoint.metadata["training"]["val_subjects"] == val
        # ... and they score alike: the calibrated outputs scoring averages, on every flip
        scored = [network_probabilities(run.checkpoint, patches.x, TTA_VIEWS, device="cpu", precision="float32")
                  for run in (stacked, alone)]
        np.testing.assert_allclose(*scored, atol=1e-5)
        calibrated = [run.checkpoint.calibrate(p) for run, p in zip((stacked, alone), scored)]
        np.testing.assert_allclose(*calibrated, atol=1e-4)
    assert np.quantile(_differences(together[0].checkpoint.model, together[1].checkpoint.model), 0.5) > 1e-2


def test_an_ensemble_trains_stacked_where_asked_and_a_stop_keeps_every_network():
    assert not stacks(TINY_TRAIN, torch.device("cpu"))  # auto: a CPU trains them one after another
    assert stacks(TINY_TRAIN, torch.device("cuda")) and stacks(replace(TINY_TRAIN, stack="on"), torch.device("cpu"))
    stop = threading.Event()
    gen = train_crossfitted(toy_patches(), replace(TINY_TRAIN, stack="on"), 3, stop=stop)
    events = []
    while (event := next(gen)).stage != "batch":
        events.append(event)
    assert events[0].message == "3 models together"
    stop.set()
    with pytest.raises(StopIteration) as end:
        while True:
            next(gen)
    result = end.value.value
    assert result.stopped and len(result.checkpoints) == 3
    assert all(run.stopped and run.history[-1].get("partial") for run in result.runs)
    with pytest.raises(InputError, match="seed only"):
        run_to_end(train_together(toy_patches(), [TINY_TRAIN, replace(TINY_TRAIN, lr=0.1)], VALIDATED_ON,
                                  [None, None]))
    with pytest.raises(InputError, match="stack"):
        replace(TINY_TRAIN, stack="yes")
    # one draw per training patch: each network its own number of steps, so one after another
    assert not stacks(replace(TINY_TRAIN, stack="on", samples_per_epoch=None), torch.device("cuda"))


def test_the_loss_is_read_every_few_steps_and_shown_as_the_epoch_mean():
    config = replace(TINY_TRAIN, epochs=1, samples_per_epoch=8 * (LOSS_READ_STEPS + 2))
    batches = []
    gen = train(toy_patches(), config)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if event.stage == "batch":
            batches.append(event)
    assert [e.step for e in batches] == list(range(1, LOSS_READ_STEPS + 3))  # one event per step, as before
    assert not batches[0].metrics  # nothing read yet
    assert batches[LOSS_READ_STEPS - 1].metrics["loss"] == batches[LOSS_READ_STEPS].metrics["loss"]
    assert batches[-1].metrics["loss"] == pytest.approx(result.history[1]["loss"])


def test_auto_batch_size_is_the_default_on_a_cpu_and_what_fits_on_a_gpu():
    assert auto_batch_size(TINY_TRAIN, toy_patches().config, 3) == 32
    mb = 2 ** 20
    assert batch_that_fits(1000 * mb, 10 * mb) == 64  # 100 fit: the power of two below
    assert batch_that_fits(10 ** 6 * mb, mb) == MAX_AUTO_BATCH
    assert batch_that_fits(mb, 10 * mb) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*mixes two scales")  # a network of one epoch may not calibrate
def test_cli_trains_an_ensemble_stacked_with_an_automatic_batch(manifest, tmp_path, capsys):
    model = tmp_path / "stacked.pt"
    assert main(["train", str(manifest), "-o", str(model), "--epochs", "1", "--patch-size", "12",
                 "--samples-per-epoch", "8", "--batch-size", "auto", "--stack", "on", "--models", "2",
                 "--device", "cpu", "--threads", "1"]) == 0
    assert "batch size 32 (auto)" in capsys.readouterr().err
    members = load_models(model)
    assert len(members) == 2
    assert [m.metadata["training"]["config"]["batch_size"] for m in members] == [32, 32]
    assert {m.metadata["training"]["config"]["stack"] for m in members} == {"on"}
    with pytest.raises(SystemExit):
        main(["train", str(manifest), "-o", str(model), "--batch-size", "big"])
