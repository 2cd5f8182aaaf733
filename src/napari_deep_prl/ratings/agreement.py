"""Inter- and intra-rater agreement on lesion labels.

Every statistic is computed on the lesions the compared raters *all* rated (``n`` says how
many). ``unsure`` is handled explicitly, chosen by ``unsure=``:

* ``"category"`` (default): ``unsure`` is a third category. A rater who says ``unsure``
  where another says ``prl`` disagrees with them; kappa has three categories.
* ``"exclude"``: lesions where any compared rater said ``unsure`` are left out, giving the
  agreement on the definite labels only (``n`` drops accordingly).

Sensitivity and specificity against consensus use the lesions where both the rater and the
consensus are definite; the rater's ``unsure`` on such lesions is counted in ``n_unsure``.
The same figures against a *reference* (ground truth, an expert read that never votes) come
with Cohen's kappa. PRL counts per subject count ``prl`` labels only, on subjects every rater
finished.

A statistic that cannot be computed is NaN, never a number that looks like a result, and its
row carries a ``note`` saying why (:func:`describe_estimate` turns both into the words the CLI
and the agreement panel show): kappa with one label used throughout is undefined (chance
agreement is 1); kappa against a rater who gave every lesion the same label is 0 whatever the
agreement, so it gets no interval; a subject-bootstrap interval needs
:data:`MIN_CI_SUBJECTS` subjects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import pandas as pd

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.coefficients import (
    MIN_CI_SUBJECTS,
    accuracy_coefficients,
    bootstrap_ci,
    group_totals,
    icc_agreement,
    kappa_from_confusion,
)
from napari_deep_prl.ratings.schema import LABELS, UNSURE_MODES

ONE_LABEL = "only one label used"


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


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's (unweighted) kappa of two raters' labels of the same items."""
    labels = sorted(set(a) | set(b))
    return kappa_from_confusion(confusion(a, b, labels)) if len(a) else float("nan")


def bootstrap_kappa_ci(a: Sequence[str], b: Sequence[str], groups: Sequence[str], *,
                       n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of Cohen's kappa, resampling whole ``groups`` (subjects).

    Lesions of one subject are not independent, so subjects, not lesions, are resampled.
    NaN with fewer than :data:`MIN_CI_SUBJECTS` subjects.
    """
    labels = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(labels)}
    cells = np.zeros((len(a), len(labels), len(labels)))
    cells[np.arange(len(a)), [index[x] for x in a], [index[y] for y in b]] = 1
    ci = bootstrap_ci(group_totals(cells, np.asarray(groups)),
                      lambda conf: {"kappa": kappa_from_confusion(conf)},
                      n_boot=n_boot, seed=seed, level=level)
    return ci["kappa"]


def kappa_with_ci(a: Sequence[str], b: Sequence[str], groups: Sequence[str] | None = None, *,
                  names: tuple[str, str] = ("a", "b"), n_boot: int = 1000,
                  seed: int = 0) -> dict[str, object]:
    """Cohen's kappa of two label sequences, its subject-bootstrap CI (when ``groups`` are
    given) and a ``note`` saying why any of them is NaN (empty when none is).

    ``names`` name the two sides in the note. Keys: ``cohen_kappa, cohen_kappa_ci_low,
    cohen_kappa_ci_high, note``.
    """
    a, b = list(a), list(b)
    result: dict[str, object] = {"cohen_kappa": np.nan, "cohen_kappa_ci_low": np.nan,
                                 "cohen_kappa_ci_high": np.nan, "note": ""}
    if not a:
        return {**result, "note": "no lesion labelled by both"}
    if len(set(a) | set(b)) == 1:
        return {**result, "note": ONE_LABEL}
    result["cohen_kappa"] = cohen_kappa(a, b)
    constant = [name for name, labels in zip(names, (a, b), strict=True) if len(set(labels)) == 1]
    if constant:
        return {**result, "note": f"{constant[0]} used only one label: kappa is 0 by "
                                  "construction"}
    if groups is None:
        return result
    n_groups = len(set(groups))
    if n_groups < MIN_CI_SUBJECTS:
        return {**result, "note": f"{n_groups} subject{'' if n_groups == 1 else 's'}: a CI "
                                  f"needs at least {MIN_CI_SUBJECTS}"}
    low, high = bootstrap_kappa_ci(a, b, groups, n_boot=n_boot, seed=seed)
    note = "" if np.isfinite(low) else "every bootstrap resample used only one label"
    return {**result, "cohen_kappa_ci_low": low, "cohen_kappa_ci_high": high, "note": note}


def describe_estimate(value: float, low: float = np.nan, high: float = np.nan,
                      note: str = "") -> str:
    """``0.62 [0.41, 0.80]``, ``0.62``, ``0.00, CI n/a (why)`` or ``n/a (why)``: an estimate
    as the CLI and the agreement panel print it, never a NaN dressed as a number."""
    if value is None or not np.isfinite(value):
        return f"n/a ({note})" if note else "n/a"
    if low is not None and np.isfinite(low) and high is not None and np.isfinite(high):
        return f"{value:.2f} [{low:.2f}, {high:.2f}]"
    return f"{value:.2f}, CI n/a ({note})" if note else f"{value:.2f}"


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories table of rating counts (same raters per item)."""
    counts = np.asarray(counts, dtype=float)
    n_items = counts.shape[0]
    raters = counts.sum(axis=1)
    if n_items == 0 or np.any(raters != raters[0]) or raters[0] < 2:
        raise InputError("Fleiss' kappa needs at least one item and the same number (>= 2) "
                         "of ratings for every item.")
    return float(_fleiss_by_group(counts, np.zeros(n_items))["fleiss_kappa"].iloc[0])


def outcomes(labels: Sequence[str], reference: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per lesion the rater labelled definitely, one-hot ``(tp, fp, fn, tn)`` of ``labels``
    against a definite ``reference`` (prl / not_prl), and which lesions those are (the
    rater's ``unsure`` is left out)."""
    labels, reference = np.asarray(labels, dtype=object), np.asarray(reference, dtype=object)
    definite = labels != "unsure"
    said, truth = labels[definite] == "prl", reference[definite] == "prl"
    cells = np.column_stack([said & truth, said & ~truth, ~said & truth, ~said & ~truth])
    return cells.astype(int).reshape(-1, 4), definite


def sensitivity_specificity(labels: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Counts and rates of ``labels`` against a definite ``reference`` (prl / not_prl)."""
    cells, definite = outcomes(labels, reference)
    tp, fp, fn, tn = (int(v) for v in cells.sum(axis=0))
    return {"n": int(definite.sum()), "n_unsure": int((~definite).sum()),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, **accuracy_coefficients(cells.sum(axis=0))}


# -- the statistics on the store's tables ----------------------------------------------------

def wide_labels(current: pd.DataFrame, raters: Sequence[str] | None = None) -> pd.DataFrame:
    """Lesions x raters table of current labels (``subject`` kept as a column)."""
    wide = current.pivot(index=["subject", "lesion"], columns="rater", values="label")
    if raters is not None:
        wide = wide.reindex(columns=list(raters))
    wide.columns.name = None
    return wide.reset_index()


def check_unsure(unsure: str) -> None:
    """Refuse an ``unsure`` handling that is not one of :data:`UNSURE_MODES`."""
    if unsure not in UNSURE_MODES:
        raise InputError(f"unsure handling '{unsure}' is not one of {', '.join(UNSURE_MODES)}.")


def rated_by_all(wide: pd.DataFrame, raters: Sequence[str], unsure: str) -> pd.DataFrame:
    """Rows where all ``raters`` rated (and, when excluding, none said unsure)."""
    check_unsure(unsure)
    values = wide[list(raters)]
    keep = values.notna().all(axis=1)
    if unsure == "exclude":
        keep &= ~(values == "unsure").any(axis=1)
    return wide[keep]


KAPPA_COLUMNS = ["cohen_kappa", "cohen_kappa_ci_low", "cohen_kappa_ci_high"]


def pairwise_agreement(current: pd.DataFrame, *, unsure: str = "category", n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """One row per rater pair: ``rater_a, rater_b, n, percent_agreement, cohen_kappa`` + CI,
    ``note`` (why a figure is n/a)."""
    wide = wide_labels(current)
    raters = sorted(current["rater"].unique())
    rows = []
    for a, b in combinations(raters, 2):
        both = rated_by_all(wide, (a, b), unsure)
        rows.append({"rater_a": a, "rater_b": b, "n": len(both),
                     "percent_agreement": percent_agreement(both[a], both[b]),
                     **kappa_with_ci(both[a], both[b], both["subject"], names=(a, b),
                                     n_boot=n_boot, seed=seed)})
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n", "percent_agreement",
                                       *KAPPA_COLUMNS, "note"])


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


def _fleiss_note(n_raters: int, n: int, kappa: float) -> str:
    """Why a Fleiss' kappa is NaN ('' when it is not)."""
    if n_raters < 2:
        return "needs at least 2 raters"
    if n == 0:
        return "no lesion labelled by every rater"
    return ONE_LABEL if not np.isfinite(kappa) else ""


def all_raters_agreement(current: pd.DataFrame, *, unsure: str = "category") -> dict[str, object]:
    """The all-raters row: lesions every rater rated, unanimous fraction, Fleiss' kappa."""
    raters = sorted(current["rater"].unique())
    complete = rated_by_all(wide_labels(current), raters, unsure)[raters]
    row: dict[str, object] = {"rater_a": "all", "rater_b": "all", "n": len(complete),
                              "percent_agreement": np.nan, "fleiss_kappa": np.nan}
    if len(complete) and len(raters) >= 2:
        stats = _fleiss_by_group(label_counts(complete), np.zeros(len(complete)))
        row.update(percent_agreement=float(stats["percent_agreement"].iloc[0]),
                   fleiss_kappa=float(stats["fleiss_kappa"].iloc[0]))
    row["note"] = _fleiss_note(len(raters), len(complete), row["fleiss_kappa"])
    return row


def agreement_table(current: pd.DataFrame, *, unsure: str = "category", n_boot: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Pairwise rows followed by the all-raters row (the ``ratings agreement`` output); the
    ``note`` of a pair is about its kappa, that of the ``all`` row about Fleiss' kappa."""
    pairs = pairwise_agreement(current, unsure=unsure, n_boot=n_boot, seed=seed)
    pairs.insert(len(pairs.columns) - 1, "fleiss_kappa", np.nan)
    overall = pd.DataFrame([all_raters_agreement(current, unsure=unsure)])
    return pd.concat([pairs, overall.reindex(columns=pairs.columns)], ignore_index=True)


def per_subject_agreement(current: pd.DataFrame, lesions: pd.DataFrame, *,
                          unsure: str = "category") -> pd.DataFrame:
    """Per subject: lesions, lesions all raters rated, unanimous fraction, Fleiss' kappa (with
    a ``note`` when it is n/a), and each rater's PRL count (``prl_count_<rater>``, on the
    lesions that rater rated)."""
    raters = sorted(current["rater"].unique())
    complete = rated_by_all(wide_labels(current, raters), raters, unsure)
    table = lesions.groupby("subject").size().rename("n_lesions").to_frame()
    if len(complete) and len(raters) >= 2:
        stats = _fleiss_by_group(label_counts(complete[raters]), complete["subject"].to_numpy())
        table = table.join(stats)
    table = table.reindex(columns=["n_lesions", "n", "percent_agreement", "fleiss_kappa"])
    table["n"] = table["n"].fillna(0).astype(int)
    table["note"] = [_fleiss_note(len(raters), n, kappa)
                     for n, kappa in zip(table["n"], table["fleiss_kappa"], strict=True)]
    prl = (current[current["label"] == "prl"].groupby(["subject", "rater"]).size()
           .unstack(fill_value=0).reindex(index=table.index, columns=raters, fill_value=0))
    table = table.join(prl.fillna(0).astype(int).add_prefix("prl_count_"))
    return table.rename_axis("subject").reset_index()


def finished_prl_counts(current: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Subjects x raters PRL counts (``prl`` labels), on the subjects every rater finished."""
    raters = sorted(current["rater"].unique())
    size = lesions.groupby("subject").size()
    rated = (current.groupby(["subject", "rater"]).size()
             .unstack(fill_value=0).reindex(columns=raters, fill_value=0))
    finished = rated.index[rated.ge(size.reindex(rated.index), axis=0).all(axis=1)]
    counts = (current[current["label"] == "prl"].groupby(["subject", "rater"]).size()
              .unstack().reindex(index=finished, columns=raters).fillna(0).astype(int))
    counts.columns.name = None
    return counts


def prl_count_icc(current: pd.DataFrame, lesions: pd.DataFrame) -> tuple[float, int, str]:
    """ICC(2,1) of per-subject PRL counts between raters, on subjects all raters finished:
    ``(icc, subjects, note)``, the note saying why the ICC is NaN ('' when it is not)."""
    raters = sorted(current["rater"].unique())
    counts = finished_prl_counts(current, lesions)
    finished = counts.index
    icc = icc_agreement(counts.to_numpy())
    if len(raters) < 2:
        note = "needs at least 2 raters"
    elif len(finished) < 2:
        note = f"{len(finished)} subject{'' if len(finished) == 1 else 's'} finished by every " \
               "rater: the ICC needs at least 2"
    else:
        note = "" if np.isfinite(icc) else "the PRL counts vary neither between subjects nor " \
                                           "between raters"
    return icc, len(finished), note


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
    rows = [{**dict(zip(keys, group if per_subject else (group,), strict=True)),
             **sensitivity_specificity(part["label"], part["consensus"])}
            for group, part in merged.groupby(keys if per_subject else "rater")]
    return pd.DataFrame(rows, columns=[*keys, *COUNT_COLUMNS])


#: The counts and rates of :func:`sensitivity_specificity`, as table columns.
COUNT_COLUMNS = ["n", "n_unsure", "tp", "fp", "fn", "tn", "sensitivity", "specificity", "ppv"]


def raters_vs_references(current: pd.DataFrame, references: pd.DataFrame, *,
                         unsure: str = "category", n_boot: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """Each rater against each reference (the store's current labels of both kinds).

    ``n``, percent agreement and Cohen's kappa (subject-bootstrap CI) are on the lesions both
    labelled (``unsure`` handled as in :func:`pairwise_agreement`); ``tp ... ppv`` on those the
    reference labelled definitely, the rater's ``unsure`` there counted in ``n_unsure``. A
    reference never voted, so unlike :func:`rater_vs_consensus` these are not optimistic.
    """
    check_unsure(unsure)
    rows = []
    for (rater, own), (reference, truth) in product(current.groupby("rater"),
                                                    references.groupby("rater")):
        both = own[["subject", "lesion", "label"]].merge(
            truth[["subject", "lesion", "label"]], on=["subject", "lesion"],
            suffixes=("", "_reference"))
        if unsure == "exclude":
            both = both[(both["label"] != "unsure") & (both["label_reference"] != "unsure")]
        definite = both[both["label_reference"].isin(LABELS[:2])]
        counts = sensitivity_specificity(definite["label"], definite["label_reference"])
        rows.append({"rater": rater, "reference": reference, "n": len(both),
                     "percent_agreement": percent_agreement(both["label"],
                                                            both["label_reference"]),
                     **kappa_with_ci(both["label"], both["label_reference"], both["subject"],
                                     names=(rater, reference), n_boot=n_boot, seed=seed),
                     **{k: counts[k] for k in COUNT_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=["rater", "reference", "n", "percent_agreement",
                                       *KAPPA_COLUMNS, *COUNT_COLUMNS[1:], "note"])


def repeat_pairs(first: pd.DataFrame, repeat: pd.DataFrame,
                 unsure: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """Per rater, each repeated lesion's first label (``label``) beside the repeat's
    (``label_repeat``); with ``unsure="exclude"`` without the pairs where either is unsure."""
    check_unsure(unsure)
    pairs = first.merge(repeat, on=["rater", "subject", "lesion"], suffixes=("", "_repeat"))
    for rater, part in pairs.groupby("rater"):
        if unsure == "exclude":
            part = part[(part["label"] != "unsure") & (part["label_repeat"] != "unsure")]
        yield str(rater), part


def intra_rater_agreement(first: pd.DataFrame, repeat: pd.DataFrame, *,
                          unsure: str = "category") -> pd.DataFrame:
    """Per rater: agreement between the first and the repeated presentation of a lesion."""
    rows = []
    for rater, part in repeat_pairs(first, repeat, unsure):
        kappa = kappa_with_ci(part["label"], part["label_repeat"],
                              names=("the first reading", "the repeat"))
        rows.append({"rater": rater, "n": len(part),
                     "percent_agreement": percent_agreement(part["label"], part["label_repeat"]),
                     "cohen_kappa": kappa["cohen_kappa"], "note": kappa["note"]})
    return pd.DataFrame(rows, columns=["rater", "n", "percent_agreement", "cohen_kappa", "note"])


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
    #: Why the ICC is NaN ('' when it is not).
    prl_count_icc_note: str
    #: :func:`raters_vs_references` (empty without references).
    vs_reference: pd.DataFrame
