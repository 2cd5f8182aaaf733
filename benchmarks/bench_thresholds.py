"""Decision rules compared on a finished cross-validation, without retraining.

A nested CV keeps every inner model's predictions on its own validation patients and on the
outer test patients (``folds/<method>/fold-<i>-inner.tsv``). This script replays, on those
files, several ways of turning them into decisions and prints the outer-test F1 of each, per
fold and pooled, so that a rule is chosen on evidence:

single inner model (each of the 3 x 5 inner models, tested on its outer fold; ``selected``:
only the inner model the cross-validation selected, as its ``METHOD`` rows)
    ``best F1``    the threshold with the best validation F1 (what training does)
    ``ties low``   as ``best F1``, the lowest of equally good cuts rather than the highest
    ``F2``         the threshold with the best validation F2 (recall weighted twice)
    ``0.5``        a fixed 0.5
    ``calibrated F*/2``  the model's probabilities calibrated on its validation patients (Platt,
                   as below), cut at half its best validation F1
ensemble of an outer fold's inner models
    ``pooled``     mean probability, cut at the best-F1 threshold of the pooled validation
                   predictions (what ``deep-prl cv --ensemble`` reports)
    ``mean thr``   mean probability, cut at the mean of the models' thresholds (``deep-prl
                   score`` with several checkpoints)
    ``margin``     mean over models of logit(p) - logit(own threshold), cut at 0: each model
                   judged against its own operating point
    ``vote 2/3``   at least two models call it PRL at their own thresholds
    ``pooled, ties low``  as ``pooled``, the lowest of equally good cuts
    ``pooled F2``  as ``pooled``, with the best-F2 threshold
    ``calibrated F*/2``  each model's probabilities calibrated on its own validation patients
                   (Platt: logistic regression on the logit), averaged; cut at half the best
                   validation F1, the F1-optimal cut of calibrated probabilities (Lipton et
                   al. 2014), which moves far less with a few validation lesions than an argmax
    ``pooled calibrated F*/2``  mean probability, cut where one Platt fit to the pooled
                   validation predictions reaches half their best F1: a single raw threshold,
                   as ``pooled``, so it needs no calibration at scoring time
    ``expected F1``  the same calibrated mean; the number of PRL calls that maximises the
                   F1 expected from the test lesions' own calibrated probabilities (no labels;
                   ``deep-prl score --cohort-decision``)
    ``calibrated, validation expected F1``  the same calibrated mean, cut where the F1
                   expected from the *validation* lesions' calibrated probabilities peaks: F*/2
                   with F* the model's own estimate rather than the labelled argmax, which a
                   few validation PRLs bias upwards (also for single models)
    ``best cut``   the best threshold on the test fold itself: an optimistic bound, not a rule
runs that kept each network's raw probability per test-time view (``raw_view_<i>``, since the
twentieth session) also replay, for single models and ensembles:
    ``raw flips: each calibrated, F*/2``  one Platt fit to every view, the views' calibrated
                   mean cut at half the best validation F1 (what training does since session 19)
    ``raw flips: mean calibrated, F*/2``  one Platt fit to the views' raw mean instead
                   (session 18's rule), cut the same way; ``expected F1`` as above
    ``raw flips: mean, best F1``  the raw mean at its best validation-F1 threshold (the paper's)

Models trained with the default ``calibrated`` rule save their calibrated outputs (each inner
model's own Platt fit is part of it); the calibrated rules then fit again, which is about the
identity, and ``pooled`` and ``mean thr`` already average calibrated models.

    python benchmarks/bench_thresholds.py REPORT_DIR [--method deep_prl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from napari_deep_prl.evaluation.methods import RAW_VIEW
from napari_deep_prl.model.metrics import (
    best_f1_threshold,
    best_threshold,
    calibrated_threshold,
    expected_f1_threshold,
    metrics_from_predictions,
    model_output,
    operating_point,
    platt_fit,
)

EPS = 1e-6


def f1(truth: pd.Series, decision: np.ndarray) -> float:
    """F1 of 0/1 decisions."""
    return metrics_from_predictions(truth, decision.astype(float), threshold=0.5)["f1"]


def counts(truth: pd.Series, decision: np.ndarray) -> tuple[int, int]:
    """False negatives and false positives."""
    truth = truth.to_numpy().astype(bool)
    return int((truth & ~decision).sum()), int((~truth & decision).sum())


def member_rules(validation: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Single-model decisions on ``test`` under each rule."""
    y, p = validation["prl_truth"].to_numpy(), validation["prl_probability"].to_numpy()
    t = test["prl_probability"].to_numpy()
    rules = {"best F1": t >= best_f1_threshold(y, p)[0],
             "best F1, ties low": t >= best_threshold(y, p, most_calls=True)[0],
             "F2": t >= best_threshold(y, p, beta=2.0)[0],
             "0.5": t >= 0.5,
             "calibrated F*/2": t >= calibrated_threshold(y, p)[0]}
    fit = platt(y, p)
    rules["calibrated, validation expected F1"] = fit(t) >= expected_f1_threshold(fit(p))[0]
    views, test_views = raw_views(validation), raw_views(test)
    if views is not None:
        point = operating_point(y, views, "calibrated")
        rules["raw flips: each calibrated, F*/2"] = model_output(test_views, point.calibration) >= point.threshold
        q_val, q = flip_mean_calibration(validation, test)
        rules["raw flips: mean calibrated, F*/2"] = q >= best_f1_threshold(y, q_val)[1] / 2
        rules["raw flips: mean, best F1"] = test_views.mean(0) >= best_f1_threshold(y, views.mean(0))[0]
    return rules


def platt(y: np.ndarray, p: np.ndarray):
    """A map from raw to calibrated probability, fitted on validation predictions."""
    fit = platt_fit(y, p)
    if fit is None:
        raise SystemExit("an inner model's validation predictions cannot be calibrated")
    return fit.calibrate


def raw_views(frame: pd.DataFrame) -> np.ndarray | None:
    """The network's raw probability of each test-time view (views x lesions), where kept."""
    columns = [c for c in frame if c.startswith(RAW_VIEW)]
    return frame[columns].to_numpy().T if columns else None


def flip_mean_calibration(validation: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated outputs on validation and test when one Platt fit maps the raw flips' mean
    (session 18's rule) instead of each flip (the default since session 19)."""
    mean = raw_views(validation).mean(0)
    fit = platt(validation["prl_truth"].to_numpy(), mean)
    return fit(mean), fit(raw_views(test).mean(0))


def ensemble_rules(members: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Ensemble decisions on the outer test lesions under each rule."""
    validation = members[members["part"] == "validation"]
    test = members[members["part"] == "test"]
    thresholds = {i: best_f1_threshold(v["prl_truth"], v["prl_probability"])[0]
                  for i, v in validation.groupby("inner")}
    wide = test.pivot_table(index=["subject", "lesion"], columns="inner",
                            values="prl_probability")
    truth = test.groupby(["subject", "lesion"])["prl_truth"].first().loc[wide.index]
    prob = wide.to_numpy()
    own = np.array([thresholds[i] for i in wide.columns])
    mean = prob.mean(axis=1)
    y, p = validation["prl_truth"].to_numpy(), validation["prl_probability"].to_numpy()
    margin = (logit(np.clip(prob, EPS, 1 - EPS)) - logit(np.clip(own, EPS, 1 - EPS))).mean(1)
    calibrators = {i: platt(v["prl_truth"].to_numpy(), v["prl_probability"].to_numpy())
                   for i, v in validation.groupby("inner")}
    calibrated = np.column_stack([calibrators[i](wide[i].to_numpy()) for i in wide.columns])
    q_val = np.concatenate([calibrators[i](v["prl_probability"].to_numpy())
                            for i, v in validation.groupby("inner")])
    y_val = np.concatenate([v["prl_truth"].to_numpy() for _, v in validation.groupby("inner")])
    q = calibrated.mean(axis=1)
    rules = {
        "pooled": mean >= best_f1_threshold(y, p)[0],
        "calibrated F*/2": q >= best_f1_threshold(y_val, q_val)[1] / 2,
        "pooled calibrated F*/2": mean >= calibrated_threshold(y, p)[0],
        "expected F1": q >= expected_f1_threshold(q)[0],
        "calibrated, validation expected F1": q >= expected_f1_threshold(q_val)[0],
        "mean thr": mean >= own.mean(),
        "margin": margin >= 0,
        "vote 2/3": (prob >= own).sum(axis=1) >= 2,
        "pooled, ties low": mean >= best_threshold(y, p, most_calls=True)[0],
        "pooled F2": mean >= best_threshold(y, p, beta=2.0)[0],
        "best cut": mean >= best_f1_threshold(truth, mean)[0],
    }
    if raw_views(validation) is not None:
        by_model = {i: flip_mean_calibration(v, test[test["inner"] == i].set_index(["subject", "lesion"])
                                             .loc[wide.index].reset_index())
                    for i, v in validation.groupby("inner")}
        q_flip_val = np.concatenate([by_model[i][0] for i, _ in validation.groupby("inner")])
        q_flip = np.mean([by_model[i][1] for i in wide.columns], axis=0)
        rules["raw flips: mean calibrated, F*/2"] = q_flip >= best_f1_threshold(y_val, q_flip_val)[1] / 2
        rules["raw flips: mean calibrated, expected F1"] = q_flip >= expected_f1_threshold(q_flip)[0]
    return truth.reset_index(), rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--method", default="deep_prl")
    args = parser.parse_args()
    files = sorted((args.report / "folds" / args.method).glob("fold-*-inner.tsv"))
    if not files:
        raise SystemExit(f"no fold-*-inner.tsv under {args.report / 'folds' / args.method}")
    per_fold, pooled = {}, {}
    for path in files:
        fold = int(path.name.split("-")[1])
        members = pd.read_csv(path, sep="\t", dtype={"subject": str})
        selected = json.loads(path.with_name(f"fold-{fold}.json").read_text())["selected_inner"]
        for inner, own in members.groupby("inner"):
            validation, test = own[own["part"] == "validation"], own[own["part"] == "test"]
            for rule, decision in member_rules(validation, test).items():
                for key in ["one model", "selected"] if inner == selected else ["one model"]:
                    per_fold.setdefault(f"{key}: {rule}", {}).setdefault(fold, []).append(
                        f1(test["prl_truth"], decision))
                    pooled.setdefault(f"{key}: {rule}", []).append((test["prl_truth"], decision))
        truth, rules = ensemble_rules(members)
        for rule, decision in rules.items():
            key = f"ensemble: {rule}"
            per_fold.setdefault(key, {})[fold] = [f1(truth["prl_truth"], decision)]
            pooled.setdefault(key, []).append((truth["prl_truth"], decision))
    folds = sorted({f for by_fold in per_fold.values() for f in by_fold})
    rows = []
    for key, by_fold in per_fold.items():
        means = [np.mean(by_fold[f]) for f in folds]
        fn, fp = map(sum, zip(*(counts(t, d) for t, d in pooled[key])))
        truth = pd.concat([t for t, _ in pooled[key]])
        decision = np.concatenate([d for _, d in pooled[key]])
        rows.append({"rule": key, **{f"fold {f}": m for f, m in zip(folds, means)},
                     "mean": np.mean(means), "SD": np.std(means, ddof=1) if len(means) > 1
                     else np.nan, "pooled F1": f1(truth, decision), "FN": fn, "FP": fp})
    print(f"{args.report} / {args.method}: outer-test F1 by decision rule "
          "(one model: mean over the fold's inner models; FN/FP summed over every model)\n")
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
