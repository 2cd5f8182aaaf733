"""Patient-level nested splits: no patient in two places, strata kept."""

import numpy as np
import pytest

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.data.splits import (
    assign_folds,
    fold_subjects,
    merged_strata,
    nested_splits,
    prl_count_group,
)


def _cohort(n=40, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.concatenate([np.zeros(n // 4, int), rng.integers(1, 4, n // 4),
                             rng.integers(4, 8, n // 4), rng.integers(8, 15, n - 3 * (n // 4))])
    return [f"sub-{i:02d}" for i in range(n)], counts


def test_groups_follow_the_paper():
    assert prl_count_group([0, 1, 3, 4, 7, 8, 30]).tolist() == [0, 1, 1, 2, 2, 3, 3]


def test_outer_and_inner_folds_never_share_a_patient():
    subjects, counts = _cohort()
    splits = nested_splits(subjects, counts, outer=5, inner=3, seed=1)
    tests = [set(fold_subjects(splits, f)[1]) for f in range(1, 6)]
    assert set().union(*tests) == set(subjects) and sum(map(len, tests)) == len(subjects)
    for fold in range(1, 6):
        train, test = fold_subjects(splits, fold)
        assert not set(train) & set(test)
        vals = []
        for inner in (1, 2, 3):
            inner_train, val = fold_subjects(splits, fold, inner)
            assert not set(inner_train) & set(val)
            assert set(inner_train) | set(val) == set(train)
            vals.append(set(val))
        assert set().union(*vals) == set(train) and sum(map(len, vals)) == len(train)


def test_every_stratum_is_spread_over_the_folds():
    subjects, counts = _cohort()
    splits = nested_splits(subjects, counts, outer=5, inner=3, seed=2)
    per_fold = splits.groupby(["group", "outer"]).size().unstack(fill_value=0)
    assert per_fold.shape == (4, 5)
    assert (per_fold.max(axis=1) - per_fold.min(axis=1)).max() <= 1
    for fold in range(1, 6):
        inner = splits[splits[f"inner_{fold}"] > 0]
        per_inner = inner.groupby(["group", f"inner_{fold}"]).size().unstack(fill_value=0)
        assert (per_inner.max(axis=1) - per_inner.min(axis=1)).max() <= 1


def test_same_seed_same_split_other_seed_other_split():
    subjects, counts = _cohort()
    a = nested_splits(subjects, counts, seed=7)
    assert a.equals(nested_splits(subjects, counts, seed=7))
    assert not a["outer"].equals(nested_splits(subjects, counts, seed=8)["outer"])


def test_small_strata_are_merged_not_dropped(recwarn):
    counts = np.array([0] * 9 + [2] * 3 + [5] * 1 + [12] * 1)
    assert len(set(merged_strata(prl_count_group(counts), 5))) == 2
    folds = assign_folds(counts, 5, seed=0)
    assert sorted(np.bincount(folds)) == [2, 3, 3, 3, 3]
    assert not [w for w in recwarn if "least populated" in str(w.message)]


def test_too_few_patients_is_an_input_error():
    with pytest.raises(InputError, match="cannot fill 5 folds"):
        assign_folds([0, 1, 2], 5, seed=0)
    with pytest.raises(InputError, match="unique"):
        nested_splits(["a", "a", "b", "c", "d"], [0] * 5)
