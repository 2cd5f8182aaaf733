"""Recalibrating a model for a new site (``deep-prl calibrate``): what changes and what does not,
the guard rails, and that it helps at a shifted site."""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from active_support import ranking_models, site_project
from model_support import TINY_TRAIN, one_torch_thread, toy_patches  # noqa: F401

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import open_cohort, write_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import load_checkpoint, load_models, save_ensemble
from napari_deep_prl.model.dataset import build_patchset
from napari_deep_prl.model.metrics import PlattFit, metrics_from_predictions
from napari_deep_prl.model.network import ModelConfig
from napari_deep_prl.model.train import TrainConfig, train
from napari_deep_prl.scoring.recalibrate import MIN_LESIONS, MIN_PRLS, recalibrate
from napari_deep_prl.scoring.score import score_cohort
from napari_deep_prl.simulate import simulate_cohort

SITE = {"site": "site-b", "labels_from": "site-b/manifest.csv", "device": "cpu"}


@pytest.fixture(scope="module")
def toy_model():
    """A tiny network trained on toy patches (PRLs carry a dark ring), and those patches."""
    torch.set_num_threads(1)
    patches = toy_patches()
    return run_to_end(train(patches, replace(TINY_TRAIN, epochs=4, tta=False))).checkpoint, patches


def shifted(checkpoint, intercept: float):
    """The network with a flat calibration that over- (positive) or under-calls (negative) every lesion."""
    fit = checkpoint.calibration
    return replace(checkpoint, calibration=replace(fit, slope=fit.slope / 100, intercept=intercept))


def test_refits_calibration_and_threshold_keeps_weights_and_records_it(toy_model, tmp_path):
    checkpoint, patches = toy_model
    with pytest.warns(InputWarning, match="very different"):  # every lesion about 0.9: far off
        result = run_to_end(recalibrate([shifted(checkpoint, 2.0)], patches, **SITE))
    new, old = result.checkpoints[0], shifted(checkpoint, 2.0)
    assert new.model is old.model  # the weights are the same tensors
    assert new.calibration != old.calibration and new.id != old.id
    assert result.after["brier"] < result.before["brier"]
    assert abs(result.after["mean_probability"] - result.after["observed_rate"]) < abs(
        result.before["mean_probability"] - result.before["observed_rate"])
    record = new.metadata["recalibration"]
    assert record["site"] == "site-b" and record["labels_from"] == "site-b/manifest.csv"
    assert (record["lesions"], record["prls"]) == (len(patches), int(patches.y.sum()))
    assert record["previous_id"] == old.id and record["previous_threshold"] == old.threshold
    assert PlattFit(**record["previous_calibration"]) == old.calibration and record["date"]
    assert new.metadata["training"] == old.metadata["training"]  # what it learnt from stays recorded
    loaded = load_checkpoint(new.save(tmp_path / "site.pt"))
    assert loaded.id == new.id and loaded.threshold == new.threshold
    assert loaded.metadata["recalibration"] == record


def test_a_model_right_for_the_site_stays_about_where_it_was(toy_model):
    """Labels like the training's: the calibration changes little, and no warning."""
    checkpoint, _ = toy_model
    site = toy_patches(seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_to_end(recalibrate([checkpoint], site, **SITE))
    assert result.shifts == []
    assert result.after["f1"] >= result.before["f1"]


def test_too_few_labels_or_no_prl_is_refused_saying_how_many_are_needed(toy_model):
    checkpoint, patches = toy_model
    none = patches.take(patches.y == 0)
    with pytest.raises(InputError, match=rf"0 of them PRL.*at least {MIN_PRLS} PRLs.*Label {MIN_PRLS} more PRL"):
        run_to_end(recalibrate([checkpoint], none, **SITE))
    few = patches.take(np.arange(12))
    with pytest.raises(InputError, match=rf"12 labelled lesion.*at least {MIN_LESIONS} labelled lesions.*"
                                         rf"Label .*{MIN_LESIONS - 12} more lesion\(s\) of either kind"):
        run_to_end(recalibrate([checkpoint], few, **SITE))


def test_a_network_that_ranks_the_site_backwards_cannot_be_calibrated(toy_model):
    checkpoint, patches = toy_model
    mirror = copy.deepcopy(checkpoint.model)
    with torch.no_grad():
        mirror.head[-1].weight.neg_()
        mirror.head[-1].bias.neg_()
    with pytest.raises(InputError, match="do not rise with the labels.*--flip-phase"):
        run_to_end(recalibrate([replace(checkpoint, model=mirror)], patches, **SITE))


def test_a_cross_fitted_ensemble_keeps_one_shared_threshold(toy_model, tmp_path):
    checkpoint, patches = toy_model
    record = {"models": 2, "planned": 2, "threshold": 0.4, "out_of_fold": {"val_f1": 1.0}, "stopped": False}
    members = [replace(shifted(checkpoint, bump), metadata={**checkpoint.metadata, "ensemble": {
        **record, "member": i, "member_threshold": 0.4}}) for i, bump in enumerate((2.0, -2.0))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        result = run_to_end(recalibrate(members, patches, **SITE))
    first, second = result.checkpoints
    assert first.threshold == second.threshold == first.metadata["ensemble"]["threshold"]
    assert first.calibration == second.calibration  # the same network: the same fit
    assert {c.metadata["recalibration"]["previous_id"] for c in result.checkpoints} == {m.id for m in members}
    path = save_ensemble(result.checkpoints, tmp_path / "site.pt")
    assert [c.id for c in load_models(path)] == [c.id for c in result.checkpoints]


# --------------------------------------------------------------------------- a shifted site

SMALL = {"fov_mm": (80.0, 96.0, 80.0), "voxel_size": (1.25, 1.25, 1.25), "prl_rate": 0.25, "prl_fraction": 0.25}
#: Site A's PRL share: twice site B's.
PREVALENT = {"prl_rate": 0.5, "prl_fraction": 0.5}
#: Fitted on the first subjects of site B, tested on the others.
FIT_SUBJECTS = 6


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    """A tiny model trained on a research site (phase and MP2RAGE on one grid, half the lesions
    PRLs); a clinical site (a vendor-filtered phase on a tilted slab, MP2RAGE on the structural
    grid its patches are cut on, a quarter of the lesions PRLs, so the model over-calls there)
    with manifests of the subjects to recalibrate on and of the others."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sites")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # lesions larger than the small patches
        research = run_to_end(simulate_cohort(root / "a", 8, 1, contrasts=(), **{**SMALL, **PREVALENT}))
        clinical = open_cohort(run_to_end(simulate_cohort(root / "b", 16, 4, site="clinical",
                                                          contrasts=("mp2rage",), **SMALL)))
        patches = run_to_end(build_patchset(open_cohort(research), PatchConfig(size=16)))
        config = TrainConfig(epochs=12, batch_size=16, samples_per_epoch=256, lr=3e-3, device="cpu", tta=False,
                             model=ModelConfig(widths=(8, 16), reduction=4, fc=(32,)))
        model = run_to_end(train(patches, config)).checkpoint
    fit = write_manifest(list(clinical)[:FIT_SUBJECTS], root / "b" / "fit.csv")
    test = list(clinical)[FIT_SUBJECTS:]
    return model, fit, test, root


def held_out(checkpoints, subjects) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        lesions = run_to_end(score_cohort(subjects, checkpoints, device="cpu")).lesions
    truth, probability = lesions["prl_truth"].astype(int).to_numpy(), lesions["prl_probability"].to_numpy()
    return {"calibration_gap": abs(probability.mean() - truth.mean()), "brier": np.mean((probability - truth) ** 2),
            "f1": metrics_from_predictions(truth, lesions["prl"].to_numpy(float))["f1"]}


@pytest.mark.slow
def test_recalibrating_at_a_clinical_site_helps_on_its_other_lesions(two_sites, tmp_path):
    """`deep-prl calibrate` on six subjects of the shifted site: on its ten others the mean
    probability comes near the PRL rate, the Brier score falls and F1 does not drop."""
    model, fit, test, root = two_sites
    model.save(tmp_path / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        status = main(["calibrate", str(tmp_path / "model.pt"), str(fit), "-o", str(tmp_path / "site.pt"),
                       "--site", "clinic", "--device", "cpu", "--quiet"])
    assert status == 0
    site = load_models(tmp_path / "site.pt")
    assert site[0].id != model.id and site[0].metadata["recalibration"]["site"] == "clinic"
    before, after = held_out([model], test), held_out(site, test)
    assert after["calibration_gap"] < before["calibration_gap"] / 2
    assert after["brier"] < before["brier"]
    assert after["f1"] >= before["f1"]


def test_the_command_refuses_too_few_labels_and_writes_nothing(two_sites, tmp_path, capsys):
    model, fit, test, root = two_sites
    model.save(tmp_path / "model.pt")
    one = write_manifest(test[:1], root / "b" / "one.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        status = main(["calibrate", str(tmp_path / "model.pt"), str(one), "-o", str(tmp_path / "site.pt"), "--quiet"])
    assert status == 2 and not (tmp_path / "site.pt").exists()
    assert f"recalibrating needs at least {MIN_LESIONS} labelled lesions" in capsys.readouterr().err


def test_active_calibrate_recalibrates_on_a_project_s_labels(tmp_path, capsys):
    """`deep-prl active calibrate`: the model panel's action on the command line."""
    project = site_project(tmp_path, 6)
    project.close()
    model = ranking_models()[0]
    model.save(tmp_path / "model.pt")
    assert main(["active", "calibrate", str(project.root), "--model", str(tmp_path / "model.pt"), "--source",
                 "prl_mask", "-o", str(tmp_path / "site.pt"), "--device", "cpu", "--quiet"]) == 0
    assert "recalibrated for project on 24 labelled lesions (6 PRL" in capsys.readouterr().err
    [site] = load_models(tmp_path / "site.pt")
    assert site.metadata["recalibration"]["previous_id"] == model.id and site.id != model.id
