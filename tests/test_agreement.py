"""Agreement statistics equal the reference implementations and handle ``unsure`` as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from napari_deep_prl.errors import InputError
from napari_deep_prl.ratings import agreement as ag

LABELS = ["prl", "not_prl", "unsure"]


def _random_pair(seed: int, n: int, p_agree: float, categories: list[str]):
    rng = np.random.default_rng(seed)
    a = rng.choice(categories, size=n, p=None)
    flip = rng.random(n) > p_agree
    b = np.where(flip, rng.choice(categories, size=n), a)
    return a.tolist(), b.tolist()


@pytest.mark.parametrize("seed, n, p_agree, categories", [
    (0, 50, 0.9, LABELS[:2]),
    (1, 200, 0.5, LABELS),
    (2, 30, 0.0, LABELS[:2]),
    (3, 500, 0.95, LABELS),
    (4, 7, 0.7, LABELS),
])
def test_cohen_kappa_matches_sklearn(seed, n, p_agree, categories):
    a, b = _random_pair(seed, n, p_agree, categories)
    assert ag.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_known_values():
    # Perfect agreement, and systematic disagreement (kappa -1 for balanced binary labels).
    assert ag.cohen_kappa(["prl", "not_prl"] * 5, ["prl", "not_prl"] * 5) == 1.0
    assert ag.cohen_kappa(["prl", "not_prl"] * 5, ["not_prl", "prl"] * 5) == pytest.approx(-1.0)
    assert np.isnan(ag.cohen_kappa(["prl"] * 4, ["prl"] * 4))  # chance agreement 1: undefined


@pytest.mark.parametrize("seed, n_items, n_raters, k", [(0, 40, 3, 2), (1, 100, 5, 3),
                                                       (2, 15, 2, 3), (3, 60, 4, 2)])
def test_fleiss_kappa_matches_statsmodels(seed, n_items, n_raters, k):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n_items)
    votes = np.where(rng.random((n_items, n_raters)) < 0.7, truth[:, None],
                     rng.integers(0, k, (n_items, n_raters)))
    counts = np.stack([(votes == c).sum(axis=1) for c in range(k)], axis=1)
    assert ag.fleiss_kappa(counts) == pytest.approx(sm_fleiss_kappa(counts), abs=1e-12)


def test_fleiss_kappa_refuses_unequal_raters():
    with pytest.raises(InputError, match="same number"):
        ag.fleiss_kappa(np.array([[2, 1], [1, 1]]))


def test_icc_matches_shrout_fleiss_example():
    # Shrout & Fleiss (1979), table 2: ICC(2,1) = 0.29.
    scores = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
                       [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert ag.icc_agreement(scores) == pytest.approx(0.2898, abs=1e-3)
    assert ag.icc_agreement(np.tile(np.arange(5.0)[:, None], (1, 3))) == pytest.approx(1.0)


def _current(labels: dict[str, list[str]], subjects: list[str]) -> pd.DataFrame:
    """A current-ratings table: ``labels[rater][i]`` for lesion i of ``subjects[i]``."""
    rows = []
    for rater, values in labels.items():
        for i, (label, subject) in enumerate(zip(values, subjects)):
            if label is not None:
                rows.append({"rater": rater, "subject": subject, "lesion": i, "label": label})
    return pd.DataFrame(rows)


def test_pairwise_table_uses_shared_lesions_and_reports_ci():
    rng = np.random.default_rng(5)
    n = 120
    subjects = [f"s{i // 6}" for i in range(n)]
    a = rng.choice(LABELS[:2], n, p=[0.3, 0.7]).tolist()
    b = [x if rng.random() < 0.85 else "unsure" for x in a]
    c = [x if rng.random() < 0.8 else ("prl" if x == "not_prl" else "not_prl") for x in a]
    c[:10] = [None] * 10  # rater c skipped ten lesions
    table = ag.pairwise_agreement(_current({"a": a, "b": b, "c": c}, subjects), n_boot=300)
    ac = table[(table.rater_a == "a") & (table.rater_b == "c")].iloc[0]
    assert ac.n == n - 10
    assert ac.cohen_kappa == pytest.approx(cohen_kappa_score(a[10:], c[10:]))
    assert ac.percent_agreement == pytest.approx(np.mean(np.array(a[10:]) == np.array(c[10:])))
    assert ac.cohen_kappa_ci_low < ac.cohen_kappa < ac.cohen_kappa_ci_high
    again = ag.pairwise_agreement(_current({"a": a, "b": b, "c": c}, subjects), n_boot=300)
    pd.testing.assert_frame_equal(table, again)  # seeded bootstrap


def test_unsure_modes():
    subjects = ["s1"] * 4 + ["s2"] * 4
    a = ["prl", "prl", "not_prl", "not_prl", "prl", "not_prl", "not_prl", "not_prl"]
    b = ["prl", "unsure", "not_prl", "prl", "prl", "not_prl", "unsure", "not_prl"]
    current = _current({"a": a, "b": b}, subjects)
    as_category = ag.pairwise_agreement(current, n_boot=10).iloc[0]
    assert as_category.n == 8
    assert as_category.cohen_kappa == pytest.approx(cohen_kappa_score(a, b))
    excluded = ag.pairwise_agreement(current, unsure="exclude", n_boot=10).iloc[0]
    keep = [i for i in range(8) if b[i] != "unsure"]
    assert excluded.n == 6
    assert excluded.cohen_kappa == pytest.approx(
        cohen_kappa_score([a[i] for i in keep], [b[i] for i in keep]))
    with pytest.raises(InputError, match="unsure handling"):
        ag.pairwise_agreement(current, unsure="ignore")


def test_all_raters_row_matches_statsmodels():
    rng = np.random.default_rng(8)
    n = 40
    truth = rng.choice(LABELS, n)
    labels = {r: [t if rng.random() < 0.75 else rng.choice(LABELS) for t in truth]
              for r in ("a", "b", "c")}
    table = ag.agreement_table(_current(labels, ["s"] * n), n_boot=10)
    row = table[table.rater_a == "all"].iloc[0]
    counts = np.stack([[sum(labels[r][i] == c for r in labels) for c in LABELS]
                       for i in range(n)])
    assert row.fleiss_kappa == pytest.approx(sm_fleiss_kappa(counts))
    assert row.n == n
    assert list(table.columns) == ["rater_a", "rater_b", "n", "percent_agreement", "cohen_kappa",
                                   "cohen_kappa_ci_low", "cohen_kappa_ci_high", "fleiss_kappa",
                                   "note"]
    assert row.note == ""  # Fleiss' kappa is defined; the pairs' CIs are not (one subject)
    assert (table["note"].iloc[:3] == "1 subject: a CI needs at least 3").all()


def test_sensitivity_specificity_counts_unsure_apart():
    result = ag.sensitivity_specificity(["prl", "prl", "not_prl", "unsure", "not_prl"],
                                        ["prl", "not_prl", "prl", "prl", "not_prl"])
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (1, 1, 1, 1)
    assert result["n_unsure"] == 1 and result["n"] == 4
    assert result["sensitivity"] == 0.5 and result["specificity"] == 0.5


def test_prl_count_icc_only_on_finished_subjects():
    lesions = pd.DataFrame({"subject": ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3,
                            "lesion": [0, 1, 2] * 3})
    rows = []
    for subject, a, b in [("s1", "PPN", "PPN"), ("s2", "PNN", "PNN"), ("s3", "NNN", "NN")]:
        for rater, labels in (("a", a), ("b", b)):
            rows += [{"rater": rater, "subject": subject, "lesion": i,
                      "label": "prl" if x == "P" else "not_prl"} for i, x in enumerate(labels)]
    icc, n, note = ag.prl_count_icc(pd.DataFrame(rows), lesions)
    assert n == 2  # s3 unfinished by b
    assert icc == pytest.approx(1.0) and note == ""


def test_intra_rater_agreement_from_repeats():
    first = _current({"a": ["prl", "not_prl", "prl", "not_prl"]}, ["s"] * 4)
    repeat = _current({"a": ["prl", "not_prl", "not_prl", None]}, ["s"] * 4)
    row = ag.intra_rater_agreement(first, repeat).iloc[0]
    assert row.n == 3
    assert row.cohen_kappa == pytest.approx(cohen_kappa_score(["prl", "not_prl", "prl"],
                                                              ["prl", "not_prl", "not_prl"]))


def test_per_subject_fleiss_matches_statsmodels():
    rng = np.random.default_rng(9)
    subjects = [f"s{i % 4}" for i in range(80)]
    truth = rng.choice(LABELS, 80, p=[0.2, 0.7, 0.1])
    labels = {r: [t if rng.random() < 0.7 else rng.choice(LABELS) for t in truth]
              for r in ("a", "b", "c", "d")}
    lesions = pd.DataFrame({"subject": subjects, "lesion": range(80)})
    table = ag.per_subject_agreement(_current(labels, subjects), lesions).set_index("subject")
    for subject in ("s0", "s3"):
        rows = [i for i in range(80) if subjects[i] == subject]
        counts = np.array([[sum(labels[r][i] == c for r in labels) for c in LABELS]
                           for i in rows])
        assert table.loc[subject, "fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(counts))
        assert table.loc[subject, "n"] == table.loc[subject, "n_lesions"] == 20
        assert table.loc[subject, "prl_count_b"] == sum(labels["b"][i] == "prl" for i in rows)


def test_rater_vs_consensus_overall_and_per_subject():
    current = _current({"a": ["prl", "not_prl", "prl", "unsure"],
                        "b": ["prl", "prl", "not_prl", "not_prl"]}, ["s1", "s1", "s2", "s2"])
    consensus = pd.DataFrame({"subject": ["s1", "s1", "s2", "s2"], "lesion": [0, 1, 2, 3],
                              "consensus": ["prl", "not_prl", "prl", "not_prl"]})
    overall = ag.rater_vs_consensus(current, consensus).set_index("rater")
    assert overall.loc["a", ["tp", "fp", "fn", "tn", "n_unsure"]].tolist() == [2, 0, 0, 1, 1]
    assert overall.loc["b", "sensitivity"] == 0.5 and overall.loc["b", "specificity"] == 0.5
    per = ag.rater_vs_consensus(current, consensus, per_subject=True).set_index(
        ["rater", "subject"])
    assert per.loc[("b", "s2"), ["tp", "fp", "fn", "tn"]].tolist() == [0, 0, 1, 1]
    assert per["n"].sum() == overall["n"].sum()
