"""The APRL-like radiomics baseline: features per lesion and patient-grouped CV AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.data.cohort import read_manifest
from napari_deep_prl.data.images import Subject
from napari_deep_prl.data.lesions import find_lesions
from napari_deep_prl.evaluation.radiomics import (
    cohort_features,
    feature_names,
    grouped_cv_auc,
    radiomics_features,
)
from napari_deep_prl.simulate import simulate_cohort


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
    assert list(table.columns) == ["subject", "lesion", *feature_names()]
    assert list(table["lesion"]) == list(lesions.table["lesion"])
    assert not table.isna().any().any()
    rimmed, plain = table.iloc[0], table.iloc[1]
    assert rimmed["rim_mean"] < plain["rim_mean"] - 1.0  # in units of the subject's phase scale
    assert rimmed["rim_minus_shell"] < -1.0 < plain["rim_minus_shell"]
    assert rimmed["core_minus_rim"] > 1.0
    assert rimmed["t1_lesion_ratio"] == pytest.approx(0.5 / 0.8, rel=1e-3)


def _toy_features(n_subjects: int, separation: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(n_subjects):
        for lesion in range(1, 21):
            prl = rng.random() < 0.2
            row = {"subject": f"sub-{s}", "lesion": lesion}
            row.update({name: rng.normal() for name in feature_names()})
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
