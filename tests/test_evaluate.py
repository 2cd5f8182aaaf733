"""Metrics against hand-computed counts and scikit-learn."""

import math

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import (
    f1_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.model.metrics import (
    OperatingPoint,
    PlattFit,
    best_f1_threshold,
    best_threshold,
    calibrated_threshold,
    expected_f1_threshold,
    format_metric,
    metrics_from_counts,
    metrics_from_predictions,
    operating_point,
    summarise,
)


def test_metrics_from_counts_by_hand():
    m = metrics_from_counts(tp=8, fp=2, fn=1, tn=89)
    assert set(m) == {"f1", "sensitivity", "specificity", "ppv"}
    assert m["sensitivity"] == pytest.approx(8 / 9)
    assert m["specificity"] == pytest.approx(89 / 91)
    assert m["ppv"] == pytest.approx(8 / 10)
    assert m["f1"] == pytest.approx(2 * (0.8 * 8 / 9) / (0.8 + 8 / 9))


def test_undefined_metrics_are_nan_by_default_or_zero_on_request():
    none_to_find = metrics_from_counts(tp=0, fp=2, fn=0, tn=5)  # no PRL in the truth
    assert math.isnan(none_to_find["f1"]) and math.isnan(none_to_find["sensitivity"])
    assert none_to_find["ppv"] == 0.0 and none_to_find["specificity"] == pytest.approx(5 / 7)
    none_called = metrics_from_counts(tp=0, fp=0, fn=3, tn=5)
    assert math.isnan(none_called["ppv"]) and none_called["f1"] == 0.0  # PRLs there, none found
    assert all(math.isnan(v) for v in metrics_from_counts(0, 0, 0, 0).values())
    assert metrics_from_counts(0, 0, 0, 10, zero_division=0.0) == {  # scikit-learn's convention
        "f1": 0.0, "sensitivity": 0.0, "specificity": 1.0, "ppv": 0.0}
    assert format_metric(none_to_find, "f1") == "n/a (no PRL in the ground truth)"
    assert format_metric(none_called, "ppv") == "n/a (no lesion called PRL)"
    assert format_metric(none_to_find, "specificity") == "0.714"


@pytest.mark.parametrize("bad", [(-1, 0, 0, 0), (1.5, 0, 0, 0)])
def test_bad_counts_are_input_errors(bad):
    with pytest.raises(InputError, match="non-negative integer"):
        metrics_from_counts(*bad)


def test_metrics_from_predictions_match_scikit_learn():
    rng = np.random.default_rng(3)
    truth = rng.random(200) < 0.1
    prob = np.clip(truth * 0.5 + rng.random(200) * 0.6, 0, 1)
    m = metrics_from_predictions(truth, prob, threshold=0.5)
    pred = prob >= 0.5
    assert m["tp"] == int((pred & truth).sum()) and m["tn"] == int((~pred & ~truth).sum())
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == 200
    assert m["f1"] == pytest.approx(f1_score(truth, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(truth, pred))
    assert m["specificity"] == pytest.approx(recall_score(~truth, ~pred))
    assert m["ppv"] == pytest.approx(precision_score(truth, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(truth, prob))


def test_auc_of_one_class_is_nan_and_lengths_must_match():
    assert math.isnan(metrics_from_predictions([0, 0], [0.1, 0.9])["roc_auc"])
    with pytest.raises(InputError, match="pair up"):
        metrics_from_predictions([0, 1], [0.5])


def test_best_f1_threshold_separates_and_sits_between_lesions():
    threshold, f1 = best_f1_threshold([0, 0, 1, 1, 0], [0.1, 0.3, 0.7, 0.9, 0.5])
    assert f1 == 1.0 and threshold == pytest.approx(0.6)
    assert best_f1_threshold([0, 0], [0.2, 0.4]) == (0.5, 0.0)


def test_best_threshold_breaks_ties_either_way_and_weighs_recall_with_beta():
    # F1 is 2/3 both when only 0.9 is called and when 0.9, 0.8, 0.7 and 0.6 are
    truth, prob = [1, 0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.2]
    assert best_threshold(truth, prob) == pytest.approx((0.85, 2 / 3))
    assert best_threshold(truth, prob, most_calls=True) == pytest.approx((0.4, 2 / 3))
    threshold, f2 = best_threshold(truth, prob, beta=2.0)
    assert threshold == pytest.approx(0.4)
    assert f2 == pytest.approx(fbeta_score(truth, np.array(prob) >= threshold, beta=2.0))


def test_summary_uses_sample_standard_deviation():
    folds = [{"f1": v} for v in (0.8, 0.9, 1.0)]
    s = summarise(folds, keys=["f1"])
    assert s["f1"]["mean"] == pytest.approx(0.9)
    assert s["f1"]["std"] == pytest.approx(np.std([0.8, 0.9, 1.0], ddof=1)) == pytest.approx(0.1)
    assert math.isnan(summarise([{"f1": 1.0}], keys=["f1"])["f1"]["std"])


def _platt_family(seed: int, n: int, slope: float, intercept: float):
    """Truth drawn from calibrated probabilities, reported through a Platt-family distortion."""
    rng = np.random.default_rng(seed)
    calibrated = expit(rng.normal(-2.5, 2.0, n))
    truth = rng.random(n) < calibrated
    return truth, expit(slope * logit(calibrated) + intercept)


def test_calibrated_threshold_undoes_a_platt_distortion_and_cuts_at_half_the_best_f1():
    slope, intercept = 2.0, 1.0
    truth, raw = _platt_family(0, 20000, slope, intercept)
    threshold, f1 = calibrated_threshold(truth, raw)
    assert f1 == pytest.approx(best_f1_threshold(truth, raw)[1])
    assert threshold == pytest.approx(expit(slope * logit(f1 / 2) + intercept), rel=0.1)


def test_calibrated_threshold_aims_where_the_best_f1_cut_does_but_moves_less():
    # 100 validation sets of 200 lesions, about 30 PRLs each: a validation split's size
    argmax, calibrated = [], []
    for seed in range(100):
        truth, raw = _platt_family(seed, 200, 1.0, 0.0)
        argmax.append(best_f1_threshold(truth, raw)[0])
        calibrated.append(calibrated_threshold(truth, raw)[0])
    assert np.mean(calibrated) == pytest.approx(np.mean(argmax), abs=0.03)
    assert np.std(calibrated) < 0.7 * np.std(argmax)


def test_calibrated_threshold_falls_back_to_the_best_f1_cut_when_it_cannot_fit():
    assert calibrated_threshold([0, 0], [0.2, 0.4]) == (0.5, 0.0)
    assert calibrated_threshold([1, 1], [0.2, 0.4]) == best_f1_threshold([1, 1], [0.2, 0.4])
    anti = [1, 1, 0, 0, 0, 0], [0.1, 0.2, 0.6, 0.7, 0.8, 0.9]  # a score that falls with truth
    assert calibrated_threshold(*anti) == best_f1_threshold(*anti)


@pytest.mark.parametrize("gap", [0.3, 0.003])
def test_calibrated_threshold_separates_separable_classes_however_close(gap):
    truth = np.r_[np.zeros(50, bool), np.ones(3, bool)]
    prob = np.r_[np.linspace(0.2, 0.35, 50), 0.35 + gap * np.array([1.0, 1.5, 2.0])]
    threshold, f1 = calibrated_threshold(truth, prob)
    assert f1 == 1.0 and 0.35 < threshold < 0.35 + gap


def test_an_operating_point_calibrates_views_and_cuts_the_calibrated_output_at_half_the_best_f1():
    slope, intercept = 2.0, 1.0
    truth, raw = _platt_family(1, 20000, slope, intercept)
    # one view: the same decisions as the raw cut of calibrated_threshold
    point = operating_point(truth, raw)
    assert point.threshold == pytest.approx(point.f1 / 2)
    assert np.array_equal(point.calibration.calibrate(raw) >= point.threshold,
                          raw >= calibrated_threshold(truth, raw)[0])
    # two views of each lesion through the same distortion: one fit of both undoes it
    views = np.stack([raw, expit(logit(raw) + np.random.default_rng(2).normal(0, 0.2, raw.size))])
    point = operating_point(truth, views)
    assert point.calibration.slope / point.calibration.scale == pytest.approx(1 / slope, rel=0.1)
    assert point.f1 == pytest.approx(best_f1_threshold(truth, point.calibration.calibrate(views).mean(0))[1])


def test_calibrated_outputs_pooled_from_several_models_need_no_second_fit():
    # two models, each calibrated on its own validation set: the pooled outputs' own Platt fit is
    # the identity, so the pooled calibrated cut is half the pooled best F1
    outputs, truths = [], []
    for seed, (slope, intercept) in enumerate([(2.0, 1.0), (0.7, -0.5)]):
        truth, raw = _platt_family(seed, 400, slope, intercept)
        outputs.append(operating_point(truth, raw).calibration.calibrate(raw))
        truths.append(truth)
    truth, output = np.concatenate(truths), np.concatenate(outputs)
    threshold, f1 = calibrated_threshold(truth, output)
    assert threshold == pytest.approx(f1 / 2, abs=0.01)


def test_the_best_f1_rule_and_degenerate_fits_leave_the_output_raw():
    truth, raw = _platt_family(3, 300, 2.0, 1.0)
    assert operating_point(truth, raw, "best_f1") == OperatingPoint(*best_f1_threshold(truth, raw))
    anti = [1, 1, 0, 0, 0, 0], [0.1, 0.2, 0.6, 0.7, 0.8, 0.9]
    assert operating_point(*anti).calibration is None
    with pytest.raises(InputError, match="threshold rule"):
        operating_point(truth, raw, "youden")
    with pytest.raises(ValueError, match="increasing"):
        PlattFit(0.0, 1.0, -1.0, 0.0)


def test_expected_f1_cut_by_hand_and_against_cohorts_drawn_from_the_probabilities():
    # 2 calls: 2 (0.9 + 0.8) / (2 + 1.85) beats 1 call (0.63) and 3 calls (0.74)
    cut, expected = expected_f1_threshold([0.9, 0.8, 0.1, 0.05, 0.0])
    assert cut == pytest.approx(0.45) and expected == pytest.approx(3.4 / 3.85)
    assert expected_f1_threshold([0.0, 0.0]) == (0.5, 0.0)  # no chance of a PRL: no call
    with pytest.raises(InputError, match="probabilities from 0 to 1"):
        expected_f1_threshold([0.2, 1.3])
    rng = np.random.default_rng(0)
    q = rng.beta(0.3, 3.0, 2000)  # calibrated probabilities, about 9 % PRLs
    cut, expected = expected_f1_threshold(q)
    labels = rng.random((300, q.size)) < q  # cohorts whose truth these probabilities describe

    def mean_f1(threshold):
        calls = q >= threshold
        return np.mean(2 * (labels & calls).sum(1) / (calls.sum() + labels.sum(1)))

    assert mean_f1(cut) == pytest.approx(expected, abs=0.01)
    assert mean_f1(cut) > max(mean_f1(cut * 0.6), mean_f1(min(cut * 1.5, 0.99)), mean_f1(0.5))
