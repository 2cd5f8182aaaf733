"""Inter- and intra-rater agreement on lesion labels.

Every statistic is computed on the lesions the compared raters *all* rated (``n`` says how
many). ``unsure`` is handled explicitly, chosen by ``unsure=``:

* ``"category"`` (default): ``unsure`` is a third category. A rater who says ``unsure``
  where another says ``prl`` disagrees with them; kappa has three categories.
* ``"exclude"``: lesions where any compared rater said ``unsure`` are left out, giving the
  agreement on the definite labels only (``n`` drops accordingly).

Sensitivity and specificity against consensus use the lesions where both the rater and the
consensus are definite; the rater's ``unsure`` on such lesions is counted in ``n_unsure``.
PRL counts per subject count ``prl`` labels only, on subjects every rater finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from napari_deep_prl.errors import InputError
from napari_deep_prl.ratings.schema import LABELS

UNSURE_MODES = ("category", "exclude")


# -- the statistics on plain arrays ----------------------------------------------------------

def percent_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Fraction of items given the same label (NaN for no items)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.mean(a == b)) if len(a) else float("nan")


def confusion(a: Sequence[str], b: Sequence[str],
              categories: Sequence[str] = LABELS) -> np.ndarray:
    """Counts of (label of a, label of b) over ``categories`` x ``categories``."""
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros((len(categories), len(categories)), dtype=np.int64)
    np.add.at(out, ([index[x] for x in a], [index[y] for y in b]), 1)
    return out


def kappa_from_confusion(conf: np.ndarray) -> np.ndarray | float:
    """Cohen's kappa of one confusion matrix or a stack of them (``(..., k, k)``).

    NaN where chance agreement is 1 (e.g. both raters gave one label to every item), where
    kappa is undefined.
    """
    conf = np.asarray(conf, dtype=float)
    n = conf.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(conf, axis1=-2, axis2=-1) / n
        expected = np.sum(conf.sum(axis=-1) * conf.sum(axis=-2), axis=-1) / n**2
        kappa = np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
    return float(kappa) if kappa.ndim == 0 else kappa


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's (unweighted) kappa of two raters' labels of the same items."""
    labels = sorted(set(a) | set(b))
    return kappa_from_confusion(confusion(a, b, labels)) if len(a) else float("nan")


def bootstrap_kappa_ci(a: Sequence[str], b: Sequence[str], groups: Sequence[str], *,
                       n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of Cohen's kappa, resampling whole ``groups`` (subjects).

    Lesions of one subject are not independent, so subjects, not lesions, are resampled.
    """
    labels = sorted(set(a) | set(b))
    group_ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(group_ids) < 2:
        return float("nan"), float("nan")
    per_group = np.zeros((len(group_ids), len(labels), len(labels)), dtype=np.int64)
    index = {c: i for i, c in enumerate(labels)}
    np.add.at(per_group, (inverse, [index[x] for x in a], [index[y] for y in b]), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(group_ids), size=(n_boot, len(group_ids)))
    weights = np.stack([np.bincount(d, minlength=len(group_ids)) for d in draws])
    stacked = weights @ per_group.reshape(len(group_ids), -1)
    kappas = kappa_from_confusion(stacked.reshape(n_boot, len(labels), len(labels)))
    if np.all(np.isnan(kappas)):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(kappas, [tail, 100 - tail])
    return float(low), float(high)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories table of rating counts (same raters per item)."""
    counts = np.asarray(counts, dtype=float)
    n_items = counts.shape[0]
    raters = counts.sum(axis=1)
    if n_items == 0 or np.any(raters != raters[0]) or raters[0] < 2:
        raise InputError("Fleiss' kappa needs at least one item and the same number (>= 2) "
                         "of ratings for every item.")
    return float(_fleiss_by_group(counts, np.zeros(n_items))["fleiss_kappa"].iloc[0])


def icc_agreement(scores: np.ndarray) -> float:
    """ICC(2,1) (Shrout & Fleiss): two-way random effects, absolute agreement, one rater.

    ``scores`` is subjects x raters. Absolute agreement because a rater who counts
    systematically more PRLs than another does not agree with them.
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = scores.mean()
    ms_rows = k * np.sum((scores.mean(axis=1) - grand) ** 2) / (n - 1)
    ms_cols = n * np.sum((scores.mean(axis=0) - grand) ** 2) / (k - 1)
    residual = scores - scores.mean(axis=1, keepdims=True) - scores.mean(axis=0) + grand
    ms_error = np.sum(residual**2) / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    return float((ms_rows - ms_error) / denominator) if denominator > 0 else float("nan")


def sensitivity_specificity(labels: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Counts and rates of ``labels`` against a definite ``reference`` (prl / not_prl)."""
    labels, reference = np.asarray(labels, dtype=object), np.asarray(reference, dtype=object)
    definite = labels != "unsure"
    positive, truth = labels[definite] == "prl", reference[definite] == "prl"
    tp, fn = int(np.sum(positive & truth)), int(np.sum(~positive & truth))
    fp, tn = int(np.sum(positive & ~truth)), int(np.sum(~positive & ~truth))
    return {"n": int(definite.sum()), "n_unsure": int((~definite).sum()),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


# -- the statistics on the store's tables ----------------------------------------------------

def wide_labels(current: pd.DataFrame, raters: Sequence[str] | None = None) -> pd.DataFrame:
    """Lesions x raters table of current labels (``subject`` kept as a column)."""
    wide = current.pivot(index=["subject", "lesion"], columns="rater", values="label")
    if raters is not None:
        wide = wide.reindex(columns=list(raters))
    wide.columns.name = None
    return wide.reset_index()


def _complete(wide: pd.DataFrame, raters: Sequence[str], unsure: str) -> pd.DataFrame:
    """Rows where all ``raters`` rated (and, when excluding, none said unsure)."""
    if unsure not in UNSURE_MODES:
        raise InputError(f"unsure handling '{unsure}' is not one of {', '.join(UNSURE_MODES)}.")
    values = wide[list(raters)]
    keep = values.notna().all(axis=1)
    if unsure == "exclude":
        keep &= ~(values == "unsure").any(axis=1)
    return wide[keep]


def pairwise_agreement(current: pd.DataFrame, *, unsure: str = "category", n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """One row per rater pair: ``rater_a, rater_b, n, percent_agreement, cohen_kappa`` + CI."""
    wide = wide_labels(current)
    raters = sorted(current["rater"].unique())
    rows = []
    for a, b in combinations(raters, 2):
        both = _complete(wide, (a, b), unsure)
        low, high = bootstrap_kappa_ci(both[a], both[b], both["subject"], n_boot=n_boot,
                                       seed=seed) if len(both) else (np.nan, np.nan)
        rows.append({"rater_a": a, "rater_b": b, "n": len(both),
                     "percent_agreement": percent_agreement(both[a], both[b]),
                     "cohen_kappa": cohen_kappa(both[a].tolist(), both[b].tolist()),
                     "cohen_kappa_ci_low": low, "cohen_kappa_ci_high": high})
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n", "percent_agreement",
                                       "cohen_kappa", "cohen_kappa_ci_low",
                                       "cohen_kappa_ci_high"])


def label_counts(values: pd.DataFrame) -> np.ndarray:
    """Lesions x LABELS counts of a lesions x raters table of labels."""
    return (values.to_numpy()[:, :, None] == np.asarray(LABELS)).sum(axis=1)


def _fleiss_by_group(counts: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Fleiss' kappa and unanimous fraction per group, vectorised (same raters per row)."""
    m = counts.sum(axis=1)
    columns = [f"p{j}" for j in range(counts.shape[1])]
    frame = pd.DataFrame(counts / m[:, None], columns=columns)
    frame["p_item"] = (np.sum(counts**2, axis=1) - m) / (m * (m - 1))
    frame["unanimous"] = counts.max(axis=1) == m
    frame["group"] = groups
    means = frame.groupby("group", sort=False).mean()
    expected = np.sum(means[columns].to_numpy() ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(expected < 1, (means["p_item"] - expected) / (1 - expected), np.nan)
    return pd.DataFrame({"n": frame.groupby("group", sort=False).size(),
                         "percent_agreement": means["unanimous"].astype(float),
                         "fleiss_kappa": kappa}, index=means.index)


def all_raters_agreement(current: pd.DataFrame, *, unsure: str = "category") -> dict[str, object]:
    """The all-raters row: lesions every rater rated, unanimous fraction, Fleiss' kappa."""
    raters = sorted(current["rater"].unique())
    complete = _complete(wide_labels(current), raters, unsure)[raters]
    row: dict[str, object] = {"rater_a": "all", "rater_b": "all", "n": len(complete),
                              "percent_agreement": np.nan, "fleiss_kappa": np.nan}
    if len(complete) and len(raters) >= 2:
        stats = _fleiss_by_group(label_counts(complete), np.zeros(len(complete)))
        row.update(percent_agreement=float(stats["percent_agreement"].iloc[0]),
                   fleiss_kappa=float(stats["fleiss_kappa"].iloc[0]))
    return row


def agreement_table(current: pd.DataFrame, *, unsure: str = "category", n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Pairwise rows followed by the all-raters row (the ``ratings agreement`` output)."""
    pairs = pairwise_agreement(current, unsure=unsure, n_boot=n_boot, seed=seed)
    pairs["fleiss_kappa"] = np.nan
    overall = pd.DataFrame([all_raters_agreement(current, unsure=unsure)])
    return pd.concat([pairs, overall.reindex(columns=pairs.columns)], ignore_index=True)


def per_subject_agreement(current: pd.DataFrame, lesions: pd.DataFrame, *,
                          unsure: str = "category") -> pd.DataFrame:
    """Per subject: lesions, lesions all raters rated, unanimous fraction, Fleiss' kappa,
    and each rater's PRL count (``prl_count_<rater>``, on the lesions that rater rated)."""
    raters = sorted(current["rater"].unique())
    complete = _complete(wide_labels(current, raters), raters, unsure)
    table = lesions.groupby("subject").size().rename("n_lesions").to_frame()
    if len(complete) and len(raters) >= 2:
        stats = _fleiss_by_group(label_counts(complete[raters]), complete["subject"].to_numpy())
        table = table.join(stats)
    table = table.reindex(columns=["n_lesions", "n", "percent_agreement", "fleiss_kappa"])
    table["n"] = table["n"].fillna(0).astype(int)
    prl = (current[current["label"] == "prl"].groupby(["subject", "rater"]).size()
           .unstack(fill_value=0).reindex(index=table.index, columns=raters, fill_value=0))
    table = table.join(prl.fillna(0).astype(int).add_prefix("prl_count_"))
    return table.rename_axis("subject").reset_index()


def prl_count_icc(current: pd.DataFrame, lesions: pd.DataFrame) -> tuple[float, int]:
    """ICC(2,1) of per-subject PRL counts between raters, on subjects all raters finished."""
    raters = sorted(current["rater"].unique())
    size = lesions.groupby("subject").size()
    rated = (current.groupby(["subject", "rater"]).size()
             .unstack(fill_value=0).reindex(columns=raters, fill_value=0))
    finished = rated.index[rated.ge(size.reindex(rated.index), axis=0).all(axis=1)]
    counts = (current[current["label"] == "prl"].groupby(["subject", "rater"]).size()
              .unstack().reindex(index=finished, columns=raters).fillna(0))
    return icc_agreement(counts.to_numpy()), len(finished)


def rater_vs_consensus(current: pd.DataFrame, consensus: pd.DataFrame, *,
                       per_subject: bool = False) -> pd.DataFrame:
    """Each rater's counts, sensitivity and specificity against definite consensus labels
    (overall, or per rater and subject).

    The rater's own label contributed to the consensus, so these figures are optimistic;
    they are meant to spot a rater who diverges, not to rate the raters.
    """
    keys = ["rater", "subject"] if per_subject else ["rater"]
    definite = consensus[consensus["consensus"].isin(["prl", "not_prl"])]
    merged = current.merge(definite[["subject", "lesion", "consensus"]], on=["subject", "lesion"])
    rows = [{**dict(zip(keys, group if per_subject else (group,))),
             **sensitivity_specificity(part["label"], part["consensus"])}
            for group, part in merged.groupby(keys if per_subject else "rater")]
    return pd.DataFrame(rows, columns=[*keys, "n", "n_unsure", "tp", "fp", "fn", "tn",
                                       "sensitivity", "specificity"])


def intra_rater_agreement(first: pd.DataFrame, repeat: pd.DataFrame, *,
                          unsure: str = "category") -> pd.DataFrame:
    """Per rater: agreement between the first and the repeated presentation of a lesion."""
    pairs = first.merge(repeat, on=["rater", "subject", "lesion"], suffixes=("", "_repeat"))
    rows = []
    for rater, part in pairs.groupby("rater"):
        if unsure == "exclude":
            part = part[(part["label"] != "unsure") & (part["label_repeat"] != "unsure")]
        rows.append({"rater": rater, "n": len(part),
                     "percent_agreement": percent_agreement(part["label"], part["label_repeat"]),
                     "cohen_kappa": cohen_kappa(part["label"].tolist(),
                                                part["label_repeat"].tolist())})
    return pd.DataFrame(rows, columns=["rater", "n", "percent_agreement", "cohen_kappa"])


@dataclass(frozen=True)
class AgreementSummary:
    """Everything the adjudicator's statistics view shows, as DataFrames."""

    pairs: pd.DataFrame
    per_subject: pd.DataFrame
    vs_consensus: pd.DataFrame
    vs_consensus_per_subject: pd.DataFrame
    intra_rater: pd.DataFrame
    prl_count_icc: float
    prl_count_icc_n: int
