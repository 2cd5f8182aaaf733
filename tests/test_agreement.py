"""Agreement statistics equal the reference implementations and handle ``unsure`` as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from napari_deep_prl.base.errors import InputError
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


def test_kappa_that_cannot_be_computed_is_nan_with_the_reason():
    subjects = ["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3
    same = ["not_prl"] * 9
    mixed = ["not_prl"] * 8 + ["prl"]
    varied = ["prl", "not_prl", "not_prl"] * 3
    varied_b = ["prl", "not_prl", "prl"] * 3
    current = _current({"a": same, "b": same, "c": mixed, "d": varied, "e": varied_b}, subjects)
    pairs = ag.pairwise_agreement(current, n_boot=50).set_index(["rater_a", "rater_b"])

    one_label = pairs.loc[("a", "b")]  # chance agreement 1: kappa undefined
    assert np.isnan(one_label[ag.KAPPA_COLUMNS].astype(float)).all()
    assert one_label.note == "only one label used"
    constant = pairs.loc[("a", "c")]  # 0 whatever the agreement: no interval
    assert constant.cohen_kappa == 0 == cohen_kappa_score(same, mixed)
    assert np.isnan([constant.cohen_kappa_ci_low, constant.cohen_kappa_ci_high]).all()
    assert constant.note == "a used only one label: kappa is 0 by construction"
    assert pairs.loc[("d", "e")].note == ""
    assert pairs.loc[("d", "e"), "cohen_kappa_ci_low"] <= pairs.loc[("d", "e"), "cohen_kappa"]

    two = _current({"d": varied[:6], "e": varied_b[:6]}, subjects[:6])
    row = ag.pairwise_agreement(two, n_boot=50).iloc[0]
    assert np.isfinite(row.cohen_kappa) and np.isnan(row.cohen_kappa_ci_low)
    assert row.note == "2 subjects: a CI needs at least 3"
    assert ag.describe_estimate(row.cohen_kappa, row.cohen_kappa_ci_low,
                                row.cohen_kappa_ci_high, row.note) == (
        f"{row.cohen_kappa:.2f}, CI n/a (2 subjects: a CI needs at least 3)")
    assert ag.describe_estimate(np.nan, note="only one label used") == "n/a (only one label used)"
    assert ag.describe_estimate(0.5, 0.25, 0.75) == "0.50 [0.25, 0.75]"


def test_fleiss_and_icc_say_why_they_are_nan():
    subjects = ["s1"] * 2 + ["s2"] * 2
    current = _current({"a": ["not_prl"] * 4, "b": ["not_prl"] * 4}, subjects)
    lesions = pd.DataFrame({"subject": subjects, "lesion": range(4)})
    overall = ag.agreement_table(current, n_boot=10).iloc[-1]
    assert np.isnan(overall.fleiss_kappa) and overall.note == "only one label used"
    per_subject = ag.per_subject_agreement(current, lesions)
    assert per_subject["note"].tolist() == ["only one label used"] * 2
    icc, n, note = ag.prl_count_icc(current, lesions)
    assert np.isnan(icc) and n == 2
    assert note == "the PRL counts vary neither between subjects nor between raters"
    icc, n, note = ag.prl_count_icc(current[current["subject"] == "s1"], lesions)
    assert np.isnan(icc) and note == "1 subject finished by every rater: the ICC needs at least 2"
    lone = ag.agreement_table(current[current["rater"] == "a"], n_boot=10).iloc[-1]
    assert lone.note == "needs at least 2 raters"


def test_raters_against_references():
    rng = np.random.default_rng(3)
    n = 60
    subjects = [f"s{i // 10}" for i in range(n)]
    truth = rng.choice(["prl", "not_prl"], n, p=[0.3, 0.7]).tolist()
    ann = [t if rng.random() < 0.8 else rng.choice(LABELS) for t in truth]
    ann[:5] = [None] * 5  # ann skipped five lesions
    expert = truth[:50] + ["unsure"] * 10
    raters = _current({"ann": ann}, subjects)
    references = _current({"truth": truth, "expert": expert}, subjects)
    table = ag.raters_vs_references(raters, references, n_boot=100).set_index("reference")
    row = table.loc["truth"]
    assert row.rater == "ann" and row.n == n - 5
    assert row.cohen_kappa == pytest.approx(cohen_kappa_score(ann[5:], truth[5:]))
    assert row.cohen_kappa_ci_low < row.cohen_kappa < row.cohen_kappa_ci_high
    pairs = list(zip(ann[5:], truth[5:]))
    tp = sum(a == "prl" and t == "prl" for a, t in pairs)
    fp = sum(a == "prl" and t == "not_prl" for a, t in pairs)
    assert (row.tp, row.fp) == (tp, fp) and row.ppv == pytest.approx(tp / (tp + fp))
    assert row.n_unsure == sum(a == "unsure" for a, _ in pairs)
    assert row.tp + row.fp + row.fn + row.tn + row.n_unsure == n - 5
    # The expert's unsure lesions count for kappa, not for sensitivity and specificity.
    expert_row = table.loc["expert"]
    assert expert_row.n == n - 5
    assert expert_row.tp + expert_row.fp + expert_row.fn + expert_row.tn + expert_row.n_unsure == 45
    excluded = ag.raters_vs_references(raters, references, unsure="exclude", n_boot=10)
    assert excluded.set_index("reference").loc["expert", "n"] == sum(
        a != "unsure" for a in ann[5:50])
    assert ag.raters_vs_references(raters, references.iloc[:0], n_boot=10).empty
