"""Classification metrics of the Deep-PRL report, from counts or from per-lesion predictions.

The paper reports, per outer fold, the confusion counts (TP, FP, FN, TN), F1, specificity,
sensitivity, PPV and ROC AUC, then their mean and *sample* standard deviation (``ddof=1``) across
folds. These functions compute exactly those numbers so that every method of the harness
(:mod:`napari_deep_prl.evaluation.crossval`) is scored the same way.

Undefined metrics are ``nan``, never a number that reads like a result: sensitivity and F1 of
lesions without any PRL in the ground truth (there is nothing to find, and F1 is the harmonic
mean of PPV and sensitivity), specificity without any non-PRL, PPV when no lesion is called PRL,
ROC AUC when the lesions are all of one class (:data:`UNDEFINED_BECAUSE` says why, for
messages). Reports print them ``n/a`` and tables leave them empty. ``zero_division=0.0`` gives
scikit-learn's convention (0 instead) where a caller needs a number.

The rest of the evaluation lives beside this module: patient-level stratified folds in
:mod:`napari_deep_prl.data.splits`, the nested cross-validation harness in
:mod:`napari_deep_prl.evaluation.crossval`, the compared methods in :mod:`napari_deep_prl.evaluation.methods` and
:mod:`napari_deep_prl.evaluation.baselines`, the paper-layout report in :mod:`napari_deep_prl.evaluation.report`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, roc_auc_score

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.lesions import LESION_KINDS

#: Probabilities are clipped this far from 0 and 1 before taking logits.
_EPS = 1e-6
#: Count keys, in the report's row order.
COUNT_KEYS = ("tp", "fp", "fn", "tn")
#: Every key of :func:`metrics_from_predictions`, in the paper's row order.
REPORT_KEYS = ("tp", "fp", "fn", "tn", "f1", "specificity", "sensitivity", "ppv", "roc_auc")
#: Why each metric can be undefined (``nan``), for messages.
UNDEFINED_BECAUSE = {"f1": "no PRL in the ground truth", "sensitivity": "no PRL in the ground truth",
                     "specificity": "no non-PRL lesion in the ground truth", "ppv": "no lesion called PRL",
                     "roc_auc": "needs PRLs and other lesions"}


def _ratio(num: float, den: float, zero_division: float) -> float:
    return float(num) / float(den) if den else float(zero_division)


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int, *,
                        zero_division: float = float("nan")) -> dict[str, float]:
    """F1, sensitivity (recall), specificity and PPV (precision) of one confusion matrix.

    A rate whose denominator is zero is ``zero_division`` (undefined, see the module docstring),
    and so is F1 without any PRL in the truth; F1 is computed as ``2 TP / (2 TP + FP + FN)``,
    which equals the harmonic mean of PPV and sensitivity whenever both are defined.
    """
    counts = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise InputError(f"confusion count {name}={value!r} must be a non-negative integer")
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, zero_division) if tp + fn else float(zero_division),
        "sensitivity": _ratio(tp, tp + fn, zero_division),
        "specificity": _ratio(tn, tn + fp, zero_division),
        "ppv": _ratio(tp, tp + fp, zero_division),
    }


def metrics_from_predictions(y_true: Sequence[int] | np.ndarray,
                             probability: Sequence[float] | np.ndarray, *,
                             threshold: float = 0.5,
                             zero_division: float = float("nan")) -> dict[str, float]:
    """All report metrics (:data:`REPORT_KEYS`) of per-lesion truth and PRL probabilities.

    A lesion is called PRL when its probability is at least ``threshold``. Counts are ints in
    the same flat dict, so one fold's result serialises to JSON as it is.
    """
    truth = np.asarray(y_true).astype(bool).ravel()
    prob = np.asarray(probability, dtype=float).ravel()
    if truth.shape != prob.shape:
        raise InputError(f"{truth.size} labels but {prob.size} probabilities: they must pair up")
    if not np.isfinite(prob).all():
        raise InputError("probabilities contain NaN or infinity; check the model's output")
    (tn, fp), (fn, tp) = confusion_matrix(truth, prob >= threshold, labels=[False, True])
    out: dict[str, float] = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}
    out.update(metrics_from_counts(int(tp), int(fp), int(fn), int(tn),
                                   zero_division=zero_division))
    out["roc_auc"] = roc_auc(truth, prob)
    return out


def format_metric(metrics: Mapping[str, float], key: str) -> str:
    """A metric to three decimals, or ``n/a`` and why it is undefined."""
    value = float(metrics[key])
    return f"n/a ({UNDEFINED_BECAUSE[key]})" if math.isnan(value) else f"{value:.3f}"


def roc_auc(y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray) -> float:
    """ROC AUC (scikit-learn), ``nan`` when only one class is present."""
    truth = np.asarray(y_true).astype(bool).ravel()
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, np.asarray(probability, dtype=float).ravel()))


def best_f1_threshold(y_true: Sequence[int] | np.ndarray,
                      probability: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Decision threshold maximising F1 on validation data, and that F1 (see
    :func:`best_threshold`)."""
    return best_threshold(y_true, probability)


@dataclass(frozen=True)
class PlattFit:
    """Platt scaling: calibrated probability = sigmoid of a line in the standardised logit."""

    centre: float
    scale: float
    slope: float
    intercept: float

    def __post_init__(self) -> None:
        values = (self.centre, self.scale, self.slope, self.intercept)
        if not (np.isfinite(values).all() and self.scale > 0 and self.slope > 0):
            raise ValueError(f"not an increasing calibration: {self}")

    def calibrate(self, probability: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ``probability`` (any shape, kept)."""
        raw = np.asarray(probability, dtype=float)
        score = (_logit(raw).reshape(raw.shape) - self.centre) / self.scale
        return expit(self.slope * score + self.intercept)

    def raw_at(self, calibrated: float) -> float:
        """The raw probability that calibrates to ``calibrated``."""
        return float(expit(self.centre + self.scale * (logit(calibrated) - self.intercept) / self.slope))


def platt_fit(y_true: Sequence[int] | np.ndarray,
              probability: Sequence[float] | np.ndarray) -> PlattFit | None:
    """A Platt calibration of validation probabilities (logistic regression on their logit), or
    ``None`` when it is degenerate: one class, no spread, or probability not rising with truth."""
    truth = np.asarray(y_true).astype(bool).ravel()
    score = _logit(probability)
    centre, scale = float(score.mean()), float(score.std())
    if truth.all() or not truth.any() or not scale > 0:
        return None
    # standardised, so the fit's weak penalty is the same on any spread of scores
    fit = LogisticRegression(C=1e4).fit(((score - centre) / scale).reshape(-1, 1), truth)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    return PlattFit(centre, scale, slope, intercept) if slope > 0 else None


def calibrated_threshold(y_true: Sequence[int] | np.ndarray,
                         probability: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Decision threshold from a calibration of the validation data, and the best F1 there.

    For calibrated probabilities the F1-optimal threshold is half the best F1 (Lipton, Elkan and
    Naryanaswamy, 2014). A :func:`platt_fit` calibrates the validation probabilities; the
    threshold returned is the raw probability it maps to half the best F1. All validation
    lesions place that cut, where the argmax of :func:`best_f1_threshold` is set by the one or
    two lesions at the edge of a flat F1 plateau, so it moves far less with a few validation
    PRLs. Falls back to :func:`best_f1_threshold`'s cut when the fit is degenerate.
    """
    cut, f1 = best_f1_threshold(y_true, probability)
    fit = platt_fit(y_true, probability) if f1 > 0 else None
    return (cut, f1) if fit is None else (fit.raw_at(f1 / 2), f1)


def _logit(probability: Sequence[float] | np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(probability, dtype=float).ravel(), _EPS, 1 - _EPS))


#: Ways to choose a decision threshold on validation data, by name (``TrainConfig.threshold_rule``).
THRESHOLD_RULES = {"calibrated": calibrated_threshold, "best_f1": best_f1_threshold}


@dataclass(frozen=True)
class OperatingPoint:
    """How a trained model's output becomes a decision, chosen on its validation lesions."""

    #: Cut of the model's output: its calibrated probability when :attr:`calibration` is set.
    threshold: float
    #: Best validation F1 of that output.
    f1: float
    #: Map from the network's raw probability to the output; ``None``: the output is raw.
    calibration: PlattFit | None = None


def operating_point(y_true: Sequence[int] | np.ndarray, views: Sequence[float] | np.ndarray,
                    rule: str = "calibrated") -> OperatingPoint:
    """The decision rule of a model whose probabilities on the validation lesions are ``views``.

    ``views`` is one probability per lesion or several (views × lesions, e.g. test-time flips),
    the model's output being their mean. Under ``"best_f1"`` the output is the raw mean, cut
    where validation F1 peaks. Under ``"calibrated"`` every view goes through one
    :func:`platt_fit` of all of them, the output is the mean of the calibrated views, and it is
    cut at half its best F1 — for one view, the same decisions as :func:`calibrated_threshold`.
    The output is then a probability in the calibrated sense, so several such models average
    on one scale, and their pooled validation outputs need no further fit (the fit of a union
    of calibrated sets is the identity). A degenerate fit falls back to the raw mean and its
    best-F1 cut.
    """
    if rule not in THRESHOLD_RULES:
        raise InputError(f"unknown threshold rule '{rule}'; use one of {', '.join(THRESHOLD_RULES)}")
    views = np.atleast_2d(np.asarray(views, dtype=float))
    truth = np.asarray(y_true).astype(bool).ravel()
    cut, f1 = best_f1_threshold(truth, model_output(views))
    fit = platt_fit(np.tile(truth, len(views)), views) if rule == "calibrated" and f1 > 0 else None
    if fit is None:
        return OperatingPoint(cut, f1)
    f1 = best_f1_threshold(truth, model_output(views, fit))[1]
    return OperatingPoint(f1 / 2, f1, fit)


def model_output(views: Sequence[float] | np.ndarray, calibration: PlattFit | None = None) -> np.ndarray:
    """A model's output per lesion: the mean of its views (views × lesions, or one per lesion),
    each calibrated first when the model has a ``calibration``."""
    views = np.atleast_2d(np.asarray(views, dtype=float))
    return (views if calibration is None else calibration.calibrate(views)).mean(0)


def best_threshold(y_true: Sequence[int] | np.ndarray, probability: Sequence[float] | np.ndarray,
                   *, beta: float = 1.0, most_calls: bool = False) -> tuple[float, float]:
    """Decision threshold maximising the F-beta score on validation data, and that score.

    Only cuts between distinct predicted probabilities change the decisions, so each candidate
    is such a cut; the threshold returned is the midpoint between the lowest probability called
    PRL and the next lower one, so that it does not sit on a validation lesion. Ties keep the
    fewest PRL calls (``most_calls``: the most). ``beta`` > 1 weighs recall more. Without any
    positive lesion the score is 0 and the threshold 0.5.
    """
    truth = np.asarray(y_true).astype(bool).ravel()
    prob = np.asarray(probability, dtype=float).ravel()
    if not truth.any():
        return 0.5, 0.0
    order = np.argsort(-prob, kind="stable")
    prob_sorted, truth_sorted = prob[order], truth[order]
    tp = np.cumsum(truth_sorted)
    fp = np.cumsum(~truth_sorted)
    last_of_value = np.r_[prob_sorted[1:] != prob_sorted[:-1], True]
    tp, fp, cuts = tp[last_of_value], fp[last_of_value], prob_sorted[last_of_value]
    b2 = beta ** 2
    score = (1 + b2) * tp / ((1 + b2) * tp + fp + b2 * (truth.sum() - tp))
    # cuts descend, so the first maximum calls the fewest PRLs and the last the most
    best = score.size - 1 - int(np.argmax(score[::-1])) if most_calls else int(np.argmax(score))
    lower = cuts[best + 1] if best + 1 < cuts.size else cuts[best]
    return float((cuts[best] + lower) / 2), float(score[best])


def expected_f1_threshold(probability: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The cut on calibrated probabilities that maximises the F1 expected of the decisions of
    this very set of lesions, and that expected F1; no labels needed.

    Each lesion is taken to be a PRL with its own probability, so calling the ``k`` most probable
    expects their probabilities' sum of true positives among ``k`` calls and the sum of all
    probabilities of PRLs: F1 about ``2 sum(top k) / (k + sum(all))``, the plug-in estimate,
    accurate for many lesions (Nan et al., ICML 2012). The best ``k`` follows the set: many
    likely PRLs call more. Meaningful only for calibrated probabilities. As in
    :func:`best_threshold`, the cut lies midway between the lowest called probability and the
    next lower one; a set without any chance of a PRL calls none (cut 0.5).
    """
    prob = np.asarray(probability, dtype=float).ravel()
    if np.any(~np.isfinite(prob)) or np.any((prob < 0) | (prob > 1)):
        raise InputError("expected F1 needs probabilities from 0 to 1")
    if prob.sum() <= 0:
        return 0.5, 0.0
    ordered = np.sort(prob)[::-1]
    last_of_value = np.r_[ordered[1:] != ordered[:-1], True]
    calls = np.arange(1, prob.size + 1)[last_of_value]
    expected = 2 * np.cumsum(ordered)[last_of_value] / (prob.sum() + calls)
    cuts = ordered[last_of_value]
    best = int(np.argmax(expected))
    lower = cuts[best + 1] if best + 1 < cuts.size else cuts[best]
    return float((cuts[best] + lower) / 2), float(expected[best])


#: Rows of :func:`metrics_by_kind`: each lesion kind, then every lesion.
KIND_ROWS = (*LESION_KINDS, "all")
#: Columns of :func:`metrics_by_kind`: counts of lesions, PRLs (truth) and lesions scored, then
#: :data:`REPORT_KEYS`.
KIND_COLUMNS = ("lesions", "prls", "scored", *REPORT_KEYS)


def metrics_by_kind(lesions: pd.DataFrame) -> pd.DataFrame:
    """The report metrics of each lesion kind (:data:`KIND_ROWS` × :data:`KIND_COLUMNS`), so
    that confluent lesions found and non-confluent results read off one table.

    ``lesions``: one row per labelled lesion, with ``kind``
    (:data:`~napari_deep_prl.data.lesions.LESION_KINDS`), ``prl_truth`` (0/1), ``prl`` (the
    decision, 1 for a PRL call) and ``prl_probability``, empty for a lesion left unscored (as the
    paper left confluent lesions): it counts as not called, so a PRL among them is missed
    (sensitivity is over every PRL of the kind) and the ROC AUC is over the scored lesions only.
    """
    unknown = sorted(set(lesions["kind"]) - set(LESION_KINDS))
    if unknown:
        raise InputError(f"unknown lesion kind '{unknown[0]}'; kinds are {', '.join(LESION_KINDS)}")
    rows = []
    for kind in KIND_ROWS:
        these = lesions if kind == "all" else lesions[lesions["kind"] == kind]
        truth = these["prl_truth"].to_numpy(bool)
        probability = these["prl_probability"].to_numpy(float)
        scored = ~np.isnan(probability)
        called = scored & (these["prl"].fillna(0).to_numpy(float) > 0)
        counts = {"tp": int((truth & called).sum()), "fp": int((~truth & called).sum()),
                  "fn": int((truth & ~called).sum()), "tn": int((~truth & ~called).sum())}
        rows.append({"lesions": len(these), "prls": int(truth.sum()), "scored": int(scored.sum()), **counts,
                     **metrics_from_counts(**counts), "roc_auc": roc_auc(truth[scored], probability[scored])})
    return pd.DataFrame(rows, index=pd.Index(KIND_ROWS, name="kind"), columns=list(KIND_COLUMNS))


def summarise(folds: Sequence[Mapping[str, float]],
              keys: Sequence[str] = REPORT_KEYS) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (``ddof=1``) of each metric across folds.

    Returns ``{key: {"mean": m, "std": s}}``; the SD of a single fold is ``nan``. A fold whose
    metric is ``nan`` makes the mean ``nan`` too: an undefined fold is shown, not hidden.
    """
    if not folds:
        raise InputError("no fold results to summarise; run at least one fold first")
    out = {}
    for key in keys:
        values = np.array([float(fold[key]) for fold in folds])
        std = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
        out[key] = {"mean": float(np.mean(values)), "std": std}
    return out
