import warnings
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401

from napari_deep_prl.base.errors import InputError, InputWarning
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest, write_manifest
from napari_deep_prl.data.images import SubjectPaths
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.data.patches import PatchConfig, extract_patches
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.model.inference import (
    SCREEN_SHARE,
    mutual_information,
    predict,
    view_probabilities,
)
from napari_deep_prl.model.metrics import PlattFit, expected_f1_threshold
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.scoring.score import (
    SCORE_COLUMNS,
    SUBJECT_COLUMNS,
    score_cohort,
    score_subject,
    truth_by_kind,
    truth_metrics,
)


def _checkpoint(seed=0, normalisation="subject"):
    torch.manual_seed(seed)
    return Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE, normalisation=normalisation))


def test_cohort_scores_columns_counts_and_probability_maps(manifest, tmp_path):
    cohort = read_manifest(manifest)
    with pytest.warns(InputWarning, match=r"9 of 9 lesions .* too large for the 8-voxel patch"):
        scores = run_to_end(score_cohort(cohort, [_checkpoint()], nifti_dir=tmp_path / "maps"))
    table = scores.lesions
    assert tuple(table.columns) == (*SCORE_COLUMNS, "prl_truth")  # the manifest has PRL masks
    assert len(table) == 9 and set(table["subject"]) == set(cohort.ids)
    assert table["prl_probability"].between(0, 1).all() and set(table["prl"]) <= {0, 1}
    assert table[["uncertainty_sd", "bald"]].isna().all().all()  # one model, one view: one sample
    assert tuple(scores.subjects.columns) == SUBJECT_COLUMNS
    assert (scores.subjects["prl_count"] == table.groupby("subject")["prl"].sum().to_numpy()).all()
    subject = cohort[0].load()
    image = nib.load(tmp_path / "maps" / "sub-01_space-phase_desc-PRL_probseg.nii.gz")
    assert image.shape == subject.shape and np.allclose(image.affine, subject.affine)
    labels = find_lesions(subject).labels
    rows = table[table["subject"] == "sub-01"]
    for lesion, probability in zip(rows["lesion"], rows["prl_probability"]):
        assert np.allclose(np.asanyarray(image.dataobj)[labels == lesion], probability, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
@pytest.mark.parametrize("reference, space", [(None, "qsm"), ("mp2rage", "mp2rage"), ("mask", "mask")])
def test_a_probability_map_is_named_after_its_reference_grid(write_subject, tmp_path, reference, space):
    research = write_subject("sub-01")
    qsm = SubjectPaths("sub-01", (("qsm", research.image("phase")), ("mp2rage", research.image("mp2rage"))),
                       research.mask, reference=reference)
    model = Checkpoint(DeepPRL(TINY, SIZE, ("mp2rage", "qsm")).eval(), 0.5,
                       PatchConfig(size=SIZE, contrasts=("mp2rage", "qsm")))
    run_to_end(score_cohort([qsm], [model], tta=False, nifti_dir=tmp_path / "maps"))
    assert [p.name for p in (tmp_path / "maps").iterdir()] == [f"sub-01_space-{space}_desc-PRL_probseg.nii.gz"]


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_cohort_scoring_from_files_matches_scoring_loaded_subjects(manifest):
    # From files, the lesions are found on a second thread while the images load.
    cohort = read_manifest(manifest)
    checkpoints = [_checkpoint(0), _checkpoint(1, normalisation="patch")]
    from_files = run_to_end(score_cohort(cohort, checkpoints)).lesions
    loaded = pd.concat([score_subject(paths.load(), checkpoints) for paths in cohort], ignore_index=True)
    pd.testing.assert_frame_equal(from_files, loaded)


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_scoring_a_run_of_lesions_at_a_time_gives_the_same_scores(manifest, monkeypatch):
    import napari_deep_prl.data.patches as patches_module

    cohort = read_manifest(manifest)
    checkpoints = [_checkpoint(0), _checkpoint(1, normalisation="patch")]
    at_once = run_to_end(score_cohort(cohort, checkpoints, tta=True)).lesions
    monkeypatch.setattr(patches_module, "CHUNK_VOXELS", 1)  # one lesion a run
    pd.testing.assert_frame_equal(run_to_end(score_cohort(cohort, checkpoints, tta=True)).lesions, at_once)


def test_tta_and_ensembles_report_both_uncertainties_of_the_same_samples(manifest):
    subject = read_manifest(manifest)[0].load()
    single = score_subject(subject, [_checkpoint()])
    tta = score_subject(subject, [_checkpoint()], tta=True)
    assert (tta["uncertainty_sd"] > 0).all() and (tta["bald"] >= 0).all() and tta["bald"].notna().all()
    # two patch settings: every network's views pooled as one set of samples
    first, second = _checkpoint(0), _checkpoint(1, normalisation="patch")
    mixed = score_subject(subject, [first, second], precision="float32")
    lesions = find_lesions(subject)
    samples = np.concatenate([view_probabilities([c], extract_patches(subject, lesions, c.patch_config),
                                                 precision="float32") for c in (first, second)])
    np.testing.assert_allclose(mixed["prl_probability"], samples.mean(0), atol=1e-12)
    np.testing.assert_allclose(mixed["uncertainty_sd"], samples.std(0, ddof=1), atol=1e-12)
    np.testing.assert_allclose(mixed["bald"], mutual_information(samples), atol=1e-12)
    assert not np.allclose(mixed["prl_probability"], single["prl_probability"])


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_lesions_the_patch_as_cut_puts_below_the_screen_skip_the_other_flips(manifest):
    cohort = read_manifest(manifest)
    network = replace(_checkpoint(), calibration=PlattFit(centre=0.0, scale=1.0, slope=3.0, intercept=-3.0))
    network.metadata["tta"] = True  # calibrated on the 8 flips, as training does by default
    common = {"precision": "float32"}
    as_cut = run_to_end(score_cohort(cohort, [network], tta=False, **common)).lesions
    screen = float(as_cut["prl_probability"].median())
    cut = screen / SCREEN_SHARE  # the decision threshold whose screen this is
    every = run_to_end(score_cohort(cohort, [network], tta=True, threshold=cut, **common)).lesions
    screened = run_to_end(score_cohort(cohort, [network], threshold=cut, **common)).lesions
    onward = (as_cut["prl_probability"] >= screen).to_numpy()
    assert 0 < onward.sum() < len(onward)
    pd.testing.assert_frame_equal(screened[onward], every[onward])  # every flip, as before
    rest = screened[~onward]
    np.testing.assert_allclose(rest["prl_probability"], as_cut.loc[~onward, "prl_probability"])
    assert rest[["uncertainty_sd", "bald"]].isna().all().all() and not rest["prl"].any()  # one sample, far below
    assert screened["prl"].tolist() == every["prl"].tolist()


def test_bfloat16_scoring_stays_close_to_float32(manifest):
    subject = read_manifest(manifest)[0].load()
    exact = score_subject(subject, [_checkpoint()], precision="float32")
    fast = score_subject(subject, [_checkpoint()], precision="bfloat16")
    difference = (exact["prl_probability"] - fast["prl_probability"]).abs()
    assert 0 < difference.max() < 0.01  # bfloat16 did run, and only rounds
    with pytest.raises(InputError, match="precision"):
        score_subject(subject, [_checkpoint()], precision="half")


def test_an_operating_point_overrides_the_models_threshold(manifest):
    subject = read_manifest(manifest)[0].load()
    checkpoints = [_checkpoint(0), _checkpoint(1)]
    checkpoints[1].threshold = 0.7
    default = score_subject(subject, checkpoints, precision="float32")  # bfloat16 may tie 3 lesions
    assert (default["prl"] == (default["prl_probability"] >= 0.6)).all()  # mean of 0.5 and 0.7
    cut = float(default["prl_probability"].median())
    chosen = score_subject(subject, checkpoints, threshold=cut, precision="float32")
    assert chosen["prl"].tolist() == (chosen["prl_probability"] >= cut).astype(int).tolist()
    assert 0 < chosen["prl"].sum() < len(chosen)  # the median splits this subject's lesions
    pd.testing.assert_series_equal(chosen["prl_probability"], default["prl_probability"])
    with pytest.raises(InputError, match="threshold 1.5 is not a probability"):
        run_to_end(score_cohort(read_manifest(manifest), checkpoints, threshold=1.5))


def test_ground_truth_column_only_with_a_prl_mask(manifest):
    subject = read_manifest(manifest)[0].load()
    with_truth = score_subject(subject, [_checkpoint()])
    assert with_truth["prl_truth"].tolist() == find_lesions(subject).table["prl"].astype(int).tolist()
    subject = read_manifest(manifest)[0].load()
    without = score_subject(type(subject)(subject.subject, subject.images, subject.mask, subject.affine),
                            [_checkpoint()])
    assert tuple(without.columns) == SCORE_COLUMNS and truth_metrics(without) is None


def test_truth_metrics_against_hand_counts_by_lesion_kind():
    scores = pd.DataFrame({
        "subject": "sub-01",
        "prl_truth": [1, 1, 0, 0, 0, 1, 0, 1, np.nan],
        "prl": [1, 0, 1, 0, 0, 1, 1, 0, 1],
        "prl_probability": [0.9, 0.2, 0.6, 0.1, 0.3, 0.95, 0.7, 0.4, 0.99],
        "confluent": [False] * 5 + [True] * 3 + [False],
        "component": [1, 2, 3, 4, 5, 6, 6, 7, 8],  # 6: a split component's two parts; 7: kept whole
    })  # the lesion without truth is not counted
    metrics = truth_metrics(scores)
    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (1, 1, 1, 2)
    assert metrics["f1"] == pytest.approx(0.5) and metrics["specificity"] == pytest.approx(2 / 3)
    assert metrics["roc_auc"] == pytest.approx(4 / 6)  # 0.9 beats all 3 negatives, 0.2 beats 1
    kinds = truth_by_kind(scores)
    assert kinds.index.tolist() == ["non_confluent", "confluent_part", "confluent_whole", "all"]
    assert kinds.loc["confluent_part", ["lesions", "prls", "tp", "fp", "fn", "tn"]].tolist() == [2, 1, 1, 1, 0, 0]
    assert kinds.at["confluent_part", "roc_auc"] == 1.0 and kinds.at["confluent_part", "ppv"] == 0.5
    assert kinds.loc["confluent_whole", ["lesions", "prls", "tp", "fn"]].tolist() == [1, 1, 0, 1]
    assert np.isnan(kinds.at["confluent_whole", "roc_auc"])  # one class: undefined
    assert kinds.loc["all", ["lesions", "tp", "fp", "fn", "tn"]].tolist() == [8, 2, 2, 2, 2]
    assert truth_metrics(scores, lesions="confluent_part")["ppv"] == 0.5
    assert truth_metrics(scores.assign(confluent=False), lesions="confluent_part") is None
    with pytest.raises(InputError, match="confluent_part"):
        truth_metrics(scores, lesions="merged")


def test_predict_matches_the_model():
    checkpoint = _checkpoint()
    x = np.random.default_rng(0).random((5, 3, SIZE, SIZE, SIZE), dtype=np.float32)
    prediction = predict([checkpoint, checkpoint], x, device="cpu", batch_size=2, precision="float32")
    with torch.no_grad():
        expected = torch.sigmoid(checkpoint.model(torch.from_numpy(x))).numpy()
    assert np.allclose(prediction.probability, expected, atol=1e-5)
    assert np.allclose(prediction.uncertainty_sd, 0, atol=1e-6) and np.allclose(prediction.bald, 0, atol=1e-6)


def test_each_model_is_calibrated_before_the_ensemble_averages():
    x = np.random.default_rng(0).random((5, 3, SIZE, SIZE, SIZE), dtype=np.float32)
    plain = _checkpoint()
    sharp = replace(plain, calibration=PlattFit(centre=0.0, scale=1.0, slope=3.0, intercept=-1.0))
    raw = predict([plain], x, tta=False, device="cpu", precision="float32").probability
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # one scale: nothing to warn about
        alone = predict([sharp], x, tta=False, device="cpu", precision="float32").probability
    assert alone == pytest.approx(sharp.calibration.calibrate(raw), abs=1e-6)
    with pytest.warns(InputWarning, match=f"model\\(s\\) {plain.id} output raw probabilities"):
        both = predict([plain, sharp], x, tta=False, device="cpu", precision="float32")
    assert both.probability == pytest.approx((raw + alone) / 2, abs=1e-6)
    assert both.uncertainty_sd == pytest.approx(np.abs(raw - alone) / np.sqrt(2), abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_the_cohort_decision_calls_as_many_lesions_as_maximise_the_expected_f1(manifest):
    cohort = read_manifest(manifest)
    plain = _checkpoint()
    calibrated = replace(plain, calibration=PlattFit(centre=0.0, scale=1.0, slope=3.0, intercept=-1.0))
    common = {"tta": False, "precision": "float32"}
    per_lesion = run_to_end(score_cohort(cohort, [calibrated], **common))
    assert per_lesion.threshold == 0.5  # the model's own
    scores = run_to_end(score_cohort(cohort, [calibrated], decision="expected_f1", **common))
    table = scores.lesions
    pd.testing.assert_series_equal(table["prl_probability"], per_lesion.lesions["prl_probability"])
    alone = ~table["confluent"].astype(bool)
    assert scores.threshold == expected_f1_threshold(table.loc[alone, "prl_probability"])[0]
    assert table["prl"].tolist() == (table["prl_probability"] >= scores.threshold).astype(int).tolist()
    assert scores.subjects["prl_count"].tolist() == table.groupby("subject")["prl"].sum().tolist()
    with pytest.warns(InputWarning, match="cohort decision on a single subject"):
        run_to_end(score_cohort(cohort[:1], [calibrated], decision="expected_f1", **common))
    with pytest.raises(InputError, match="exclude each other"):
        run_to_end(score_cohort(cohort, [calibrated], decision="expected_f1", threshold=0.3))
    with pytest.raises(InputError, match=f"model\\(s\\) {plain.id} output raw ones"):
        run_to_end(score_cohort(cohort, [plain, calibrated], decision="expected_f1"))
    with pytest.raises(InputError, match="unknown decision 'vote'"):
        run_to_end(score_cohort(cohort, [calibrated], decision="vote"))


def _damage(path):
    """Cut a gzipped NIfTI in half, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_an_unreadable_subject_stops_the_run_or_is_left_out_and_named(manifest):
    cohort = read_manifest(manifest)
    _damage(cohort[1].image("phase"))
    with pytest.raises(InputError, match="sub-02_phase.nii.gz: image data cannot be read"):
        run_to_end(score_cohort(cohort, [_checkpoint()]))
    with pytest.warns(InputWarning, match="sub-02 left out: .*sub-02_phase.nii.gz: image data cannot be read"):
        scores = run_to_end(score_cohort(cohort, [_checkpoint()], skip_unreadable=True))
    assert list(scores.unreadable) == ["sub-02"] and "truncated" in scores.unreadable["sub-02"]
    assert scores.subjects["subject"].tolist() == ["sub-01", "sub-03"]
    assert set(scores.lesions["subject"]) == {"sub-01", "sub-03"} and len(scores.lesions) == 6


@pytest.mark.filterwarnings("always::napari_deep_prl.base.errors.InputWarning")  # printed by the CLI
def test_cli_scores_the_readable_subjects_and_exits_1_naming_the_others(manifest, tmp_path, capsys):
    model = _checkpoint().save(tmp_path / "model.pt")
    cohort = read_manifest(manifest)
    _damage(cohort[0].mask)
    out = tmp_path / "scores.tsv"
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "warning: sub-01 left out: " in err and "1 of 3 subject(s) left out" in err and ": sub-01." in err
    assert pd.read_csv(out, sep="\t")["subject"].unique().tolist() == ["sub-02", "sub-03"]
    assert pd.read_csv(tmp_path / "scores_subjects.tsv", sep="\t")["subject"].tolist() == ["sub-02", "sub-03"]
    out.unlink()
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--stop-on-error",
                 "--quiet"]) == 2
    assert "sub-01_mask.nii.gz" in capsys.readouterr().err and not out.exists()
    for paths in cohort[1:]:
        _damage(paths.image("phase"))
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--quiet"]) == 2
    assert "no subject could be read (3 tried" in capsys.readouterr().err and not out.exists()


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")
def test_cli_says_roc_auc_is_undefined_for_a_subject_without_prls(write_subject, tmp_path, capsys):
    paths = write_subject("sub-09", prl_lesions=())
    model = _checkpoint().save(tmp_path / "model.pt")
    assert main(["score", "--phase", str(paths.image("phase")), "--mp2rage", str(paths.image("mp2rage")),
                 "--mask", str(paths.mask),
                 "--prl-mask", str(paths.prl_mask), "--model", str(model), "-o", str(tmp_path / "s.tsv"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "(0 PRLs of 3 labelled non-confluent lesions)" in err
    assert err.rstrip().endswith("ROC AUC n/a (needs PRLs and other lesions)")


@pytest.mark.slow
def test_cli_train_then_score(manifest, tmp_path, capsys):
    model = tmp_path / "model.pt"
    assert main(["train", str(manifest), "-o", str(model), "--epochs", "1", "--patch-size", "12",
                 "--samples-per-epoch", "8", "--batch-size", "8", "--device", "cpu", "--threads", "1",
                 "--phase-centre", "zero", "--models", "1", "--quiet"]) == 0
    assert (tmp_path / "model_history.tsv").exists()
    assert load_checkpoint(model).patch_config.phase_centre == "zero"  # replayed when scoring
    out = tmp_path / "scores.tsv"
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, sep="\t")
    assert tuple(table.columns) == (*SCORE_COLUMNS, "prl_truth") and len(table) == 9
    assert "against the ground truth (3 PRLs of 9 labelled" in capsys.readouterr().err
    # the model's threshold was chosen on its recorded views, so scoring averages them by default
    assert load_checkpoint(model).tta and table["uncertainty_sd"].notna().all() and (table["bald"] >= 0).all()
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--no-tta", "--quiet"]) == 0
    assert (open(out).read().count("n/a")) == 18  # one model, one view: neither uncertainty
    assert pd.read_csv(tmp_path / "scores_subjects.tsv", sep="\t")["lesions"].tolist() == [3, 3, 3]
    assert main(["score", str(manifest), "--model", str(model), "-o", str(out), "--threshold", "0",
                 "--quiet"]) == 0
    assert pd.read_csv(out, sep="\t")["prl"].tolist() == [1] * 9  # every lesion at threshold 0
    capsys.readouterr()
    # one epoch on one validation PRL cannot calibrate: the cohort's decision says so
    assert load_checkpoint(model).calibration is None
    assert main(["score", str(manifest), "--model", str(model), "--cohort-decision", "--quiet"]) == 2
    assert "the expected-F1 decision needs calibrated probabilities" in capsys.readouterr().err
    calibrated = replace(load_checkpoint(model), calibration=PlattFit(centre=0.0, scale=1.0, slope=2.0,
                                                                      intercept=-1.0)).save(tmp_path / "cal.pt")
    assert main(["score", str(manifest), "--model", str(calibrated), "-o", str(out), "--cohort-decision",
                 "--quiet"]) == 0
    decided = pd.read_csv(out, sep="\t")
    cut = expected_f1_threshold(decided["prl_probability"])[0]
    assert decided["prl"].tolist() == (decided["prl_probability"] >= cut).astype(int).tolist()
    assert f"cohort decision: {decided['prl'].sum()} of 9 lesions called PRL" in capsys.readouterr().err
    assert main(["score", str(manifest), "--model", str(model), "--threshold", "-0.1"]) == 2
    assert "threshold -0.1 is not a probability" in capsys.readouterr().err
    assert main(["score", str(manifest), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "no such model file" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*too large for the 8-voxel patch")  # the tiny model's patches
def test_cli_prints_undefined_metrics_as_na_with_the_reason(write_subject, tmp_path, capsys):
    """A cohort with ground truth but no PRL: sensitivity and F1 have nothing to find."""
    manifest = write_manifest([write_subject(f"sub-0{i}", prl_lesions=(), seed=i) for i in (1, 2)],
                              tmp_path / "manifest.csv")
    model = _checkpoint().save(tmp_path / "model.pt")
    assert main(["score", str(manifest), "--model", str(model), "--threshold", "1", "-o",
                 str(tmp_path / "scores.tsv"), "--quiet"]) == 0  # no lesion called PRL
    err = capsys.readouterr().err
    assert ("(0 PRLs of 6 labelled non-confluent lesions): F1 n/a (no PRL in the ground truth), sensitivity "
            "n/a (no PRL in the ground truth), specificity 1.000, PPV n/a (no lesion called PRL), ROC AUC "
            "n/a (needs PRLs and other lesions)") in err
    assert main(["score", str(manifest), "--model", str(model), "--threshold", "0", "--quiet"]) == 0
    err = capsys.readouterr().err  # every lesion called PRL: a PPV of 0, but still no F1
    assert "F1 n/a (no PRL in the ground truth)" in err and "specificity 0.000, PPV 0.000" in err

