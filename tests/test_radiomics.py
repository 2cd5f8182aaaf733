"""The APRL-like radiomics baseline: features per lesion and patient-grouped CV AUC."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.evaluation.radiomics import (
    cohort_features,
    feature_names,
    grouped_cv_auc,
    radiomics_features,
)
from napari_deep_prl.simulate import ClinicalSite, simulate_cohort

RESEARCH = ("mp2rage", "phase")


def _two_lesion_subject() -> Subject:
    """Lesion 1 with a dark band along its edge, lesion 2 without; noise elsewhere."""
    shape = (48, 32, 32)
    grid = np.indices(shape)
    rng = np.random.default_rng(0)
    phase = rng.normal(0, 0.1, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    for cx in (12, 36):
        r = np.sqrt((grid[0] - cx) ** 2 + (grid[1] - 16) ** 2 + (grid[2] - 16) ** 2)
        mask[r <= 5] = 1
        if cx == 12:
            phase[(r <= 5) & (r > 3.5)] -= 1.0
    mp2rage = np.where(mask > 0, 0.5, 0.8).astype(np.float32)
    return Subject("sub-t", {"phase": phase, "mp2rage": mp2rage}, mask, np.eye(4))


def test_features_are_one_row_per_lesion_and_see_the_rim():
    subject = _two_lesion_subject()
    lesions = find_lesions(subject)
    table = radiomics_features(subject, lesions)
    assert list(table.columns) == ["subject", "lesion", *feature_names(RESEARCH)]
    assert list(table["lesion"]) == list(lesions.table["lesion"])
    assert not table.isna().any().any()
    rimmed, plain = table.iloc[0], table.iloc[1]
    assert rimmed["rim_mean"] < plain["rim_mean"] - 1.0  # in units of the subject's phase scale
    assert rimmed["rim_minus_shell"] < -1.0 < plain["rim_minus_shell"]
    assert rimmed["core_minus_rim"] > 1.0
    assert rimmed["mp2rage_lesion_ratio"] == pytest.approx(0.5 / 0.8, rel=1e-3)


def test_a_qsm_and_other_structural_contrasts_give_the_same_susceptibility_features():
    """A QSM is paramagnetic-bright: its rim enters negated, as in patches, so the features of a
    QSM equal those of the phase it mirrors; each structural contrast gives its own ratios."""
    research = _two_lesion_subject()
    phase, mp2rage = research.images["phase"], research.images["mp2rage"]
    flair = np.where(research.mask > 0, 1.6, 0.8).astype(np.float32)
    clinical = Subject("sub-t", {"qsm": -phase, "t1w": mp2rage, "flair": flair}, research.mask, np.eye(4))
    table = radiomics_features(clinical, find_lesions(clinical))
    assert feature_names(("t1w", "flair", "qsm")) == list(table.columns[2:])
    assert [c for c in table.columns if "ratio" in c] == ["t1w_lesion_ratio", "t1w_rim_ratio",
                                                           "flair_lesion_ratio", "flair_rim_ratio"]
    expected = radiomics_features(research, find_lesions(research))
    shared = [c for c in expected.columns if not c.startswith("mp2rage")]
    pd.testing.assert_frame_equal(table[shared], expected[shared])
    assert (table["t1w_lesion_ratio"] == expected["mp2rage_lesion_ratio"]).all()
    assert table["flair_lesion_ratio"].tolist() == pytest.approx([2.0, 2.0], rel=1e-3)
    only_flair = radiomics_features(clinical, find_lesions(clinical), contrasts=("flair", "qsm"))
    assert not any(c.startswith("t1w") for c in only_flair.columns)
    with pytest.raises(InputError, match="features needs the contrasts mp2rage, phase.*sub-t has no mp2rage or"):
        radiomics_features(clinical, find_lesions(clinical), contrasts=RESEARCH)


def _toy_features(n_subjects: int, separation: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(n_subjects):
        for lesion in range(1, 21):
            prl = rng.random() < 0.2
            row = {"subject": f"sub-{s}", "lesion": lesion}
            row.update({name: rng.normal() for name in feature_names(RESEARCH)})
            row["rim_mean"] -= separation * prl
            rows.append(row)
            labels.append(prl)
    return pd.DataFrame(rows), np.array(labels)


def test_grouped_cv_auc_finds_signal_and_only_signal():
    features, labels = _toy_features(15, separation=3.0)
    features["kind"] = "text columns are ignored"
    strong = grouped_cv_auc(features, labels)
    assert strong.auc > 0.9 and len(strong.scores) == len(labels)
    assert all(a > 0.8 for a in strong.fold_aucs)
    features, labels = _toy_features(15, separation=0.0, seed=1)
    assert 0.3 < grouped_cv_auc(features, labels).auc < 0.7


def test_grouped_cv_auc_refuses_too_few_positives():
    features, labels = _toy_features(6, separation=1.0)
    labels[:] = False
    labels[:3] = True
    with pytest.raises(InputError, match="cannot cross-validate"):
        grouped_cv_auc(features, labels)


def test_cohort_features_read_a_simulated_cohort(tmp_path):
    manifest = run_to_end(simulate_cohort(tmp_path, 1, 3, prl_fraction=0.5, contrasts=(),
                                          fov_mm=(64.0, 80.0, 64.0), voxel_size=(1.5, 1.5, 1.5)))
    table = run_to_end(cohort_features(read_manifest(manifest)))
    truth = pd.read_csv(tmp_path / "lesions_truth.tsv", sep="\t")
    assert len(table) == len(truth) > 0 and truth["prl"].any()
    assert list(table["prl"]) == list(truth["prl"])


@pytest.mark.slow
def test_cv_runs_the_radiomics_baseline_on_a_clinical_cohort(tmp_path, capsys):
    """A site's QSM, T1w and FLAIR on their own grids: ``deep-prl cv`` fits the baseline on the
    cohort's contrasts, records them, and draws its error galleries."""
    manifest = run_to_end(simulate_cohort(tmp_path / "site", 6, 1, prl_fraction=0.3, fov_mm=(80.0, 96.0, 80.0),
                                          site=ClinicalSite(susceptibility="qsm")))
    report = tmp_path / "report"
    assert main(["cv", str(manifest), "-o", str(report), "--methods", "radiomics", "--outer", "2", "--inner",
                 "2", "--quiet"]) == 0, capsys.readouterr().err
    predictions = pd.read_csv(report / "radiomics" / "predictions.tsv", sep="\t")
    truth = pd.read_csv(tmp_path / "site" / "lesions_truth.tsv", sep="\t")
    assert set(predictions["subject"]) == set(truth["subject"]) and predictions["prl_truth"].any()
    assert predictions["prl_probability"].between(0, 1).all()
    options = json.loads((report / "radiomics" / "metrics.json").read_text())
    assert "flair_rim_ratio" in json.dumps(options) and "mp2rage" not in json.dumps(options)
    assert (report / "radiomics" / "missed.png").stat().st_size > 1000
