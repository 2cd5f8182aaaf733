"""Patient-level folds for nested cross-validation, stratified by the patient's PRL count.

Lesions of one patient share anatomy, scanner and noise, so folds split *patients*, never
lesions: a patient is in exactly one outer test fold, and within an outer fold's training
patients in exactly one inner validation fold. Folds are stratified by the patient's PRL-count
group of the paper (0, 1–3, 4–7, >7 PRLs) with scikit-learn's :class:`StratifiedKFold`, so each
fold sees patients without PRLs and patients with many.

Small cohorts: a group with fewer patients than folds cannot be spread over every fold, so it
is merged into its lower neighbour (the 0 group into its upper one) until each group has at
least ``k`` patients. The merge is recorded in the ``stratum`` column of the split table.

The split depends only on the subjects, their PRL counts, ``k`` and the seed, so a job that runs
one outer fold on a cluster computes the same split as a job that runs them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from napari_deep_prl.base.errors import InputError

#: Lower bounds of the PRL-count groups: 0, 1–3, 4–7, >7.
GROUP_EDGES = (0, 1, 4, 8)
GROUP_NAMES = ("0", "1-3", "4-7", ">7")


def prl_count_group(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Index (0–3) of each patient's PRL-count group: 0, 1–3, 4–7, >7 PRLs."""
    counts = np.asarray(counts)
    if (counts < 0).any():
        raise InputError("PRL counts must be non-negative")
    return np.searchsorted(GROUP_EDGES, counts, side="right") - 1


def merged_strata(groups: np.ndarray, k: int) -> np.ndarray:
    """Merge groups smaller than ``k`` into a neighbour (see the module docstring)."""
    strata = np.asarray(groups).copy()
    while True:
        labels, sizes = np.unique(strata, return_counts=True)
        small = labels[sizes < k]
        if small.size == 0 or labels.size == 1:
            return strata
        label = small[-1] if small[-1] != labels[0] else small[0]
        position = int(np.flatnonzero(labels == label)[0])
        target = labels[position - 1] if position > 0 else labels[1]
        strata[strata == label] = target


def assign_folds(prl_counts: Sequence[int] | np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each patient, stratified by PRL-count group."""
    counts = np.asarray(prl_counts)
    if k < 2:
        raise InputError(f"{k} folds: cross-validation needs at least 2")
    if counts.size < k:
        raise InputError(f"{counts.size} patients cannot fill {k} folds; "
                         "use fewer folds or add patients")
    strata = merged_strata(prl_count_group(counts), k)
    folds = np.empty(counts.size, dtype=int)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(counts.size), strata)):
        folds[test] = fold
    return folds


def validation_shares(prl_counts: Mapping[str, int], networks: int, val_fraction: float,
                      seed: int) -> list[list[str]]:
    """The subjects each network is validated on, as training splits them (at least 2 subjects).

    One network holds out fold 0 of ``round(1 / val_fraction)`` folds (at least 2, at most one
    per subject); ``networks`` > 1 cross-fitted networks are validated network ``i`` on fold ``i``
    modulo ``min(networks, subjects)``. ``prl_counts`` maps each subject to its PRL count, in the
    order training sees the subjects. Fine-tuning checks these shares before any work starts.
    """
    subjects, counts = list(prl_counts), list(prl_counts.values())
    k = min(max(2, round(1 / val_fraction)) if networks == 1 else networks, len(subjects))
    folds = assign_folds(counts, k, seed)
    shares = [[s for s, fold in zip(subjects, folds) if fold == i] for i in range(k)]
    return [shares[i % k] for i in range(networks)]


def nested_splits(subjects: Sequence[str], prl_counts: Sequence[int] | np.ndarray, *,
                  outer: int = 5, inner: int = 3, seed: int = 0) -> pd.DataFrame:
    """Outer and inner fold of every patient, as a table written next to the report.

    Columns: ``subject, prl_lesions, group`` (PRL-count group name), ``outer`` (1-based outer
    test fold) and ``inner_1 .. inner_<outer>``: the inner validation fold (1-based) of the
    patient when outer fold *i* is held out, 0 for the held-out patients themselves.
    """
    subjects = [str(s) for s in subjects]
    counts = np.asarray(prl_counts, dtype=int)
    if len(set(subjects)) != len(subjects):
        raise InputError("subject ids must be unique to split by patient")
    if counts.shape != (len(subjects),):
        raise InputError(f"{len(subjects)} subjects but {counts.size} PRL counts")
    table = pd.DataFrame({
        "subject": subjects,
        "prl_lesions": counts,
        "group": np.asarray(GROUP_NAMES)[prl_count_group(counts)],
        "outer": assign_folds(counts, outer, seed) + 1,
    })
    for fold in range(1, outer + 1):
        train = (table["outer"] != fold).to_numpy()
        column = np.zeros(len(table), dtype=int)
        column[train] = assign_folds(counts[train], inner, seed + fold) + 1
        table[f"inner_{fold}"] = column
    return table


def fold_subjects(splits: pd.DataFrame, fold: int, inner_fold: int | None = None
                  ) -> tuple[list[str], list[str]]:
    """(training, held-out) subjects of outer fold ``fold``, or of one of its inner folds."""
    if inner_fold is None:
        test = splits["outer"] == fold
        return splits.loc[~test, "subject"].tolist(), splits.loc[test, "subject"].tolist()
    column = splits[f"inner_{fold}"]
    held = column == inner_fold
    return (splits.loc[(column > 0) & ~held, "subject"].tolist(),
            splits.loc[held, "subject"].tolist())
