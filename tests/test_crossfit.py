import contextlib
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from model_support import TINY_TRAIN, one_torch_thread, toy_patches  # noqa: F401

from napari_deep_prl.base.errors import CheckpointError, InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.model.checkpoint import load_checkpoint, load_models, save_ensemble
from napari_deep_prl.model.crossfit import (
    ensemble_info,
    history_table,
    train_crossfitted,
)
from napari_deep_prl.model.inference import (
    TTA_VIEWS,
    checkpoint_views,
    network_probabilities,
    predict,
)
from napari_deep_prl.model.metrics import calibrated_threshold
from napari_deep_prl.scoring.score import decision_threshold


@pytest.fixture(scope="module")
def ensemble():
    torch.set_num_threads(1)
    return run_to_end(train_crossfitted(toy_patches(), TINY_TRAIN, 3))


def test_every_training_patient_is_validated_once_by_a_model_that_did_not_train_on_it(ensemble):
    patches = toy_patches()
    val = [set(run.checkpoint.metadata["training"]["val_subjects"]) for run in ensemble.runs]
    assert sum(len(v) for v in val) == len(set().union(*val)) == len(patches.subjects)
    for run, held_out in zip(ensemble.runs, val):
        assert not held_out & set(run.checkpoint.metadata["training"]["train_subjects"])
    oof = ensemble.out_of_fold
    assert len(oof) == len(patches.originals()) and not oof.duplicated(["subject", "lesion"]).any()
    for member, held_out in enumerate(val):
        assert set(oof.loc[oof["member"] == member, "subject"]) == held_out
    # seeds differ per member, so the networks do
    assert len({run.checkpoint.id for run in ensemble.runs}) == 3
    # ... each calibrated on its 8 flips, and its out-of-fold output the mean of them
    assert [checkpoint_views(c) for c in ensemble.checkpoints] == [TTA_VIEWS] * 3
    for member, checkpoint in enumerate(ensemble.checkpoints):
        part = patches.select(checkpoint.metadata["training"]["val_subjects"]).originals()
        raw = network_probabilities(checkpoint, part.x, TTA_VIEWS, device="cpu", precision="float32")
        mine = oof.loc[oof["member"] == member, "prl_probability"].to_numpy()
        np.testing.assert_allclose(mine, checkpoint.calibrate(raw).mean(0), atol=1e-6)


def test_the_threshold_is_chosen_on_all_out_of_fold_predictions_and_shared(ensemble):
    oof = ensemble.out_of_fold
    threshold, f1 = calibrated_threshold(oof["prl"].to_numpy(), oof["prl_probability"].to_numpy())
    assert ensemble.threshold == pytest.approx(threshold) and ensemble.validation["val_f1"] == pytest.approx(f1)
    assert [c.threshold for c in ensemble.checkpoints] == [threshold] * 3
    assert decision_threshold(ensemble.checkpoints) == pytest.approx(threshold)
    # each member keeps the threshold of its own validation fold in its record
    own = [c.metadata["ensemble"]["member_threshold"] for c in ensemble.checkpoints]
    assert own == [run.checkpoint.threshold for run in ensemble.runs]
    # each member keeps its own calibration (None where its fold's fit was degenerate, as for two
    # of these tiny networks), so the ensemble averages each member's own output
    calibrations = [c.calibration for c in ensemble.checkpoints]
    assert calibrations == [run.checkpoint.calibration for run in ensemble.runs] and any(calibrations)
    info = ensemble_info(ensemble.checkpoints)
    assert info["models"] == 3 and info["out_of_fold"]["lesions"] == len(oof) and not info["stopped"]


def test_an_ensemble_file_round_trips_and_scores_as_the_average(ensemble, tmp_path):
    path = save_ensemble(ensemble.checkpoints, tmp_path / "ens.pt")
    loaded = load_models(path)
    assert [c.id for c in loaded] == [c.id for c in ensemble.checkpoints]
    assert ensemble_info(loaded) == ensemble_info(ensemble.checkpoints)
    x = toy_patches().x[:6]
    mixed = len({c.calibration is None for c in loaded}) > 1  # as here: two members could not calibrate
    with pytest.warns(InputWarning, match="mixes two scales") if mixed else contextlib.nullcontext():
        both = predict(loaded, x, tta=False, device="cpu", precision="float32")
    singles = [predict([c], x, tta=False, device="cpu", precision="float32").probability for c in loaded]
    assert np.allclose(both.probability, np.mean(singles, axis=0), atol=1e-6) and (both.uncertainty_sd > 0).all()
    with pytest.raises(CheckpointError, match="an ensemble of 3 models"):
        load_checkpoint(path)
    assert [c.id for c in load_models(path, ensemble.checkpoints[0].save(tmp_path / "one.pt"))] == \
        [*(c.id for c in loaded), loaded[0].id]
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left behind


def test_stopping_keeps_the_models_finished_so_far():
    stop = threading.Event()
    gen = train_crossfitted(toy_patches(), TINY_TRAIN, 3, stop=stop)
    while True:
        try:
            event = next(gen)
        except StopIteration as done:
            result = done.value
            break
        if event.stage == "model" and event.step == 1:  # the first model is done
            stop.set()
    assert result.stopped and len(result.checkpoints) == 1 and not result.runs[0].stopped
    assert set(result.out_of_fold["member"]) == {0}
    assert ensemble_info(result.checkpoints)["models"] == 1
    history = history_table(result.runs)
    assert set(history["model"]) == {1} and history["epoch"].tolist() == [0, 1, 2, 3]


def test_impossible_ensembles_are_refused():
    with pytest.raises(InputError, match="at least 2 models"):
        run_to_end(train_crossfitted(toy_patches(), TINY_TRAIN, 1))
    with pytest.raises(InputError, match="1 subject.*needs at least 2"):
        run_to_end(train_crossfitted(toy_patches(n_subjects=1), TINY_TRAIN, 3))


def test_with_fewer_subjects_than_networks_the_networks_share_validation_folds():
    result = run_to_end(train_crossfitted(toy_patches(n_subjects=2), TINY_TRAIN, 3))
    validated = [c.metadata["training"]["val_subjects"] for c in result.checkpoints]
    assert len(result.checkpoints) == 3 and validated[2] == validated[0]  # network 3 reuses fold 1
    assert sorted(validated[0] + validated[1]) == ["sub-0", "sub-1"]
    assert len(result.out_of_fold) == 3 * 8  # every network's own validation lesions


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*mixes two scales")  # a network of one epoch may not calibrate
def test_cli_trains_an_ensemble_that_score_and_the_history_read(manifest, tmp_path, capsys):
    model = tmp_path / "ens.pt"
    args = ["train", str(manifest), "-o", str(model), "--epochs", "1", "--patch-size", "12",
            "--samples-per-epoch", "8", "--batch-size", "8", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main(args) == 0  # three networks by default
    assert "3 cross-fitted models; out-of-fold (9 lesions, 3 PRL)" in capsys.readouterr().err
    members = load_models(model)
    assert len(members) == 3
    history = pd.read_csv(tmp_path / "ens_history.tsv", sep="\t")
    assert history["model"].tolist() == [1, 1, 2, 2, 3, 3]
    oof = pd.read_csv(tmp_path / "ens_out_of_fold.tsv", sep="\t")
    assert sorted(oof["subject"]) == sorted(["sub-01", "sub-02", "sub-03"] * 3)
    out = tmp_path / "scores.tsv"
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--quiet"]) == 0
    assert len(pd.read_csv(out, sep="\t")) == 9
    assert main([*args, "--models", "2", "--init", str(model)]) == 2
    assert "holds 3 network(s) and fine-tuning keeps them" in capsys.readouterr().err
    tuned = tmp_path / "tuned.pt"
    # member by member (on these lesions, which no network can tell apart, better or worse is luck)
    assert main([*args[:3], str(tuned), *args[4:], "--init", str(model), "--accept-worse"]) == 0
    assert [m.metadata["parent"] for m in load_models(tuned)] == [m.id for m in members]
