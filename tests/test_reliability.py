"""Reliability statistics for a rare class equal the reference libraries and published values,
take designs with missing ratings, and get their CIs from a bootstrap of patients."""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from napari_deep_prl.ratings import coefficients as co
from napari_deep_prl.ratings import reliability as rl

#: Krippendorff (2011) / Gwet (2014, Handbook of Inter-Rater Reliability, 4th ed.): 4 raters,
#: 12 units, 5 categories, none of the raters rated every unit (irrCAC's ``raw_4raters``).
HANDBOOK = np.array([
    [1, 1, np.nan, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
    [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [np.nan, 5, 5, 5], [np.nan, np.nan, 1, 1],
    [np.nan, np.nan, 3, np.nan]])


def _counts(ratings: np.ndarray, categories) -> np.ndarray:
    """Units x categories counts of a units x raters table (NaN: not rated)."""
    return np.stack([(ratings == c).sum(axis=1) for c in categories], axis=1)


def test_several_raters_with_missing_ratings_equal_published_values_and_krippendorff():
    counts = _counts(HANDBOOK, range(1, 6))
    result = co.multi_rater_coefficients(co.multi_rater_items(counts, 4).sum(axis=0), 5)
    # Gwet's handbook (and irrCAC): AC1 0.7754, Brennan-Prediger 0.7727, alpha 0.7434.
    assert result["gwet_ac1"] == pytest.approx(0.77544, abs=5e-6)
    assert result["pabak"] == pytest.approx(0.77273, abs=5e-6)
    assert result["percent_agreement"] == pytest.approx(0.81818, abs=5e-6)
    assert result["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=HANDBOOK.T, level_of_measurement="nominal"), abs=1e-12)
    complete = ~np.isnan(HANDBOOK).any(axis=1)
    assert result["n"] == 11 and result["n_complete"] == complete.sum() == 8
    assert result["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(counts[complete]), abs=1e-12)


@pytest.mark.parametrize("seed, n_items, n_raters, q, missing", [
    (0, 40, 3, 2, 0.0), (1, 120, 5, 3, 0.3), (2, 25, 2, 2, 0.2), (3, 300, 4, 3, 0.5)])
def test_several_raters_match_krippendorff_and_statsmodels_on_random_designs(
        seed, n_items, n_raters, q, missing):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, q, n_items)
    votes = np.where(rng.random((n_items, n_raters)) < 0.7, truth[:, None],
                     rng.integers(0, q, (n_items, n_raters))).astype(float)
    votes[rng.random(votes.shape) < missing] = np.nan
    counts = _counts(votes, range(q))
    result = co.multi_rater_coefficients(co.multi_rater_items(counts, n_raters).sum(axis=0), q)
    assert result["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=votes.T, level_of_measurement="nominal",
                           value_domain=list(range(q))), abs=1e-10)
    complete = counts.sum(axis=1) == n_raters
    assert result["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(counts[complete]), abs=1e-10)


@pytest.mark.parametrize("seed, n, p_agree, q", [(0, 50, 0.9, 2), (1, 200, 0.5, 3),
                                                 (2, 30, 0.1, 2), (3, 500, 0.95, 3)])
def test_two_readers_match_statsmodels_sklearn_and_krippendorff(seed, n, p_agree, q):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, q, n)
    b = np.where(rng.random(n) < p_agree, a, rng.integers(0, q, n))
    conf = np.zeros((q, q))
    np.add.at(conf, (a, b), 1)
    result = co.pair_coefficients(conf)
    assert result["cohen_kappa"] == pytest.approx(sm_cohens_kappa(conf).kappa, abs=1e-12)
    assert result["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert result["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=np.stack([a, b]).astype(float),
                           level_of_measurement="nominal", value_domain=list(range(q))), abs=1e-12)
    # Two readers are the smallest case of several: both paths give the same coefficients.
    several = co.multi_rater_coefficients(
        co.multi_rater_items(_counts(np.stack([a, b], axis=1), range(q)), 2).sum(axis=0), q)
    for key in ("percent_agreement", "gwet_ac1", "pabak", "krippendorff_alpha"):
        assert result[key] == pytest.approx(several[key], abs=1e-12)
    assert several["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(_counts(
        np.stack([a, b], axis=1), range(q))), abs=1e-12)


def test_pabak_prevalence_and_bias_explain_kappa_for_two_categories():
    # Byrt, Bishop & Carlin (1993): kappa = (PABAK - PI^2 + BI^2) / (1 - PI^2 + BI^2).
    conf = np.array([[3.0, 7.0], [2.0, 88.0]])  # rows: reader a says PRL / not PRL
    r = co.pair_coefficients(conf)
    assert r["pabak"] == pytest.approx(2 * 0.91 - 1)
    assert r["prevalence_index"] == pytest.approx((3 - 88) / 100)
    assert r["bias_index"] == pytest.approx((7 - 2) / 100)  # a calls PRL more often than b
    pi, bi = r["prevalence_index"], r["bias_index"]
    assert r["cohen_kappa"] == pytest.approx((r["pabak"] - pi**2 + bi**2) / (1 - pi**2 + bi**2))


def _study(labels: dict[str, list[str | None]], subjects: list[str]) -> pd.DataFrame:
    """Current ratings: ``labels[rater][i]`` is the label of lesion i (None: not rated)."""
    return pd.DataFrame([{"rater": rater, "subject": subjects[i], "lesion": i, "label": label}
                         for rater, values in labels.items() for i, label in enumerate(values)
                         if label is not None])


def _rare_pair() -> tuple[list[str], list[str], list[str]]:
    """100 lesions of 10 patients: 2 PRLs both raters see, 4 they disagree on, 94 both call
    not PRL (agreement 0.96, PRL prevalence about 4 %)."""
    a = ["prl", "prl", "prl", "prl", "not_prl", "not_prl"] + ["not_prl"] * 94
    b = ["prl", "prl", "not_prl", "not_prl", "prl", "prl"] + ["not_prl"] * 94
    order = np.random.default_rng(0).permutation(100)
    subjects = [f"sub-{i % 10:02d}" for i in range(100)]
    return [a[i] for i in order], [b[i] for i in order], subjects


def test_the_kappa_paradox_low_kappa_at_high_agreement_with_a_rare_class():
    a, b, subjects = _rare_pair()
    row = rl.pair_statistics(a, b, subjects, ["prl", "not_prl"], rl.Settings(n_boot=200))
    assert row["percent_agreement"] == pytest.approx(0.96)
    assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b)) and row["cohen_kappa"] < 0.5
    assert row["gwet_ac1"] > 0.95 and row["pabak"] == pytest.approx(0.92)
    assert row["prevalence_index"] == pytest.approx((2 - 94) / 100)
    assert row["bias_index"] == 0
    for key in rl.PAIR_STATISTICS:
        assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"], key
    assert row["note"] == ""


def test_the_bootstrap_resamples_patients_is_seeded_and_sized_by_n_boot():
    a, b, subjects = _rare_pair()
    cats = ["prl", "not_prl"]
    first = rl.pair_statistics(a, b, subjects, cats, rl.Settings(n_boot=300, seed=4))
    assert first == rl.pair_statistics(a, b, subjects, cats, rl.Settings(n_boot=300, seed=4))
    other = rl.pair_statistics(a, b, subjects, cats, rl.Settings(n_boot=300, seed=5))
    assert other != first  # another seed, other resamples
    # 100 lesions of 2 patients: resampling lesions would give an interval, patients do not.
    two = rl.pair_statistics(a, b, ["s1"] * 50 + ["s2"] * 50, cats, rl.Settings(n_boot=300))
    assert np.isfinite(two["cohen_kappa"]) and np.isnan(two["cohen_kappa_ci_low"])
    assert two["note"] == "2 subjects: a CI needs at least 3"
    weights = co.bootstrap_weights(7, 50, seed=1)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    # The totals of a resample are those of its patients: a patient drawn twice counts twice.
    per_group = np.arange(14, dtype=float).reshape(7, 2)
    seen = []
    co.bootstrap_ci(per_group, lambda t: seen.append(t) or {"x": t[..., 0]}, n_boot=50, seed=1)
    assert np.array_equal(seen[-1], weights @ per_group)


def test_icc_of_counts_matches_pingouin_with_a_patient_bootstrap_ci():
    rng = np.random.default_rng(2)
    true = rng.poisson(3, 25)
    counts = np.stack([true + rng.integers(-1, 2, 25), true + rng.integers(0, 3, 25),
                       true + rng.integers(-1, 1, 25)], axis=1).clip(0)
    long = pd.DataFrame([{"subject": s, "rater": r, "count": counts[s, r]}
                         for s in range(25) for r in range(3)])
    with warnings.catch_warnings():  # pingouin's own use of pandas
        warnings.simplefilter("ignore")
        reference = pingouin.intraclass_corr(long, targets="subject", raters="rater",
                                             ratings="count").set_index("Type")
    assert co.icc_agreement(counts) == pytest.approx(reference.loc["ICC(A,1)", "ICC"], abs=1e-10)
    table = rl.count_icc_table(pd.DataFrame(counts), "", rl.Settings(n_boot=500)).iloc[0]
    assert table["icc_ci_low"] < table["icc"] < table["icc_ci_high"]
    assert table["n_subjects"] == 25 and "ICC(A,1)" in table["form"]
    stacked = co.icc_agreement(np.stack([counts, counts[::-1]]))
    assert stacked == pytest.approx([table["icc"]] * 2)


def test_study_tables_with_missing_ratings_references_and_repeats():
    rng = np.random.default_rng(7)
    n = 90
    subjects = [f"sub-{i // 9:02d}" for i in range(n)]
    truth = rng.choice(["prl", "not_prl"], n, p=[0.1, 0.9])

    def reader(skip: float) -> list[str | None]:
        read = [t if rng.random() < 0.9 else rng.choice(["prl", "not_prl", "unsure"])
                for t in truth]
        return [None if rng.random() < skip else x for x in read]

    current = _study({"ann": reader(0.0), "ben": reader(0.3), "cid": reader(0.5)}, subjects)
    lesions = pd.DataFrame({"subject": subjects, "lesion": range(n)})
    consensus = pd.DataFrame({"subject": subjects, "lesion": range(n), "consensus": truth,
                              "consensus_method": "majority"})
    references = _study({"expert": list(truth)}, subjects)
    first = current[current["rater"] == "ann"].head(20)
    repeats = first.assign(label=[x if i % 5 else "prl" for i, x in enumerate(first["label"])])
    rel = rl.reliability(current, lesions, consensus, references, repeats, rl.Settings(n_boot=100))

    wide = current.pivot(index="lesion", columns="rater", values="label").reindex(range(n))
    coded = wide.replace({"prl": 0, "not_prl": 1, "unsure": 2}).astype(float).to_numpy()
    overall = rel.overall.iloc[0]
    assert overall["krippendorff_alpha"] == pytest.approx(krippendorff.alpha(
        reliability_data=coded.T, level_of_measurement="nominal", value_domain=[0, 1, 2]))
    assert overall["n"] == (wide.notna().sum(axis=1) >= 2).sum()
    assert overall["n_complete"] == wide.notna().all(axis=1).sum()
    pair = rel.pairs.set_index(["rater_a", "rater_b"]).loc[("ann", "ben")]
    both = wide[["ann", "ben"]].dropna()
    assert pair["n"] == len(both)
    assert pair["cohen_kappa"] == pytest.approx(cohen_kappa_score(both["ann"], both["ben"]))

    accuracy = rel.accuracy.set_index(["rater", "truth"])
    assert set(accuracy.index) == {(r, t) for r in ("ann", "ben", "cid")
                                   for t in ("consensus", "expert")}
    ann = accuracy.loc[("ann", "expert")]
    said = wide["ann"].to_numpy()
    assert ann["tp"] == ((said == "prl") & (truth == "prl")).sum()
    assert ann["n_unsure"] == (said == "unsure").sum()
    assert ann["sensitivity"] == pytest.approx(ann["tp"] / (ann["tp"] + ann["fn"]))
    assert ann["sensitivity_ci_low"] <= ann["sensitivity"] <= ann["sensitivity_ci_high"]

    intra = rel.intra.set_index("rater").loc["ann"]
    assert intra["n"] == 20
    assert intra["percent_agreement"] == pytest.approx(np.mean(first["label"].to_numpy()
                                                               == repeats["label"].to_numpy()))
    assert rel.design["raters"] == ["ann", "ben", "cid"] and not rel.design["fully_crossed"]
    assert rel.design["consensus_prevalence"] == pytest.approx(np.mean(truth == "prl"))
    assert rel.count_icc.iloc[0]["n_subjects"] == 0  # nobody but ann finished a patient


def test_unsure_is_a_category_only_when_used_or_left_out():
    subjects = ["s1", "s1", "s2", "s2", "s3", "s3"]
    current = _study({"a": ["prl", "not_prl", "unsure", "not_prl", "prl", "not_prl"],
                      "b": ["prl", "not_prl", "prl", "not_prl", "prl", "not_prl"]}, subjects)
    assert rl.categories(current["label"], "category") == ["prl", "not_prl", "unsure"]
    assert rl.categories(current["label"], "exclude") == ["prl", "not_prl"]
    assert rl.categories(current["label"].replace("unsure", "prl"), "category") == ["prl", "not_prl"]
    kept = rl.pair_table(current, ["prl", "not_prl", "unsure"], rl.Settings(n_boot=10)).iloc[0]
    left = rl.pair_table(current, ["prl", "not_prl"], rl.Settings(unsure="exclude",
                                                                  n_boot=10)).iloc[0]
    assert (kept["n"], left["n"]) == (6, 5)
    assert left["percent_agreement"] == 1.0 and kept["percent_agreement"] == pytest.approx(5 / 6)
    assert kept["pabak"] == pytest.approx((3 * 5 / 6 - 1) / 2)


def test_a_figure_that_cannot_be_computed_says_why():
    subjects = [f"s{i % 4}" for i in range(12)]
    same = _study({"a": ["not_prl"] * 12, "b": ["not_prl"] * 12}, subjects)
    pair = rl.pair_table(same, ["prl", "not_prl"], rl.Settings(n_boot=20)).iloc[0]
    assert np.isnan(pair["cohen_kappa"]) and pair["note"] == "only one label used: kappa undefined"
    assert pair["gwet_ac1"] == 1 and pair["percent_agreement"] == 1
    overall = rl.overall_table(same, ["prl", "not_prl"], rl.Settings(n_boot=20)).iloc[0]
    assert overall["note"] == "only one label used: Fleiss' kappa undefined"
    split = _study({"a": ["prl", "not_prl"] * 3 + [None] * 6,
                    "b": [None] * 6 + ["prl", "not_prl", "prl"] + [None] * 3,
                    "c": ["not_prl"] * 12}, subjects)
    overall = rl.overall_table(split, ["prl", "not_prl"], rl.Settings(n_boot=20)).iloc[0]
    assert overall["n_complete"] == 0 and np.isfinite(overall["krippendorff_alpha"])
    assert overall["note"] == "no lesion rated by every rater: no Fleiss' kappa"
    apart = rl.pair_table(split, ["prl", "not_prl"], rl.Settings(n_boot=20)).iloc[0]
    assert (apart["rater_a"], apart["rater_b"], apart["n"]) == ("a", "b", 0)
    assert np.isnan(apart["gwet_ac1"]) and apart["note"] == "no lesion rated by both"
    lesions = pd.DataFrame({"subject": subjects + ["s9"], "lesion": [*range(12), 0]})
    empty = pd.DataFrame(columns=["subject", "lesion", "rater", "label", "consensus",
                                  "consensus_method"])
    crossed = rl.design(same, lesions, empty, empty, empty, ["prl", "not_prl"])
    assert crossed["fully_crossed"] and crossed["n_lesions_rated"] == 12
    assert crossed["n_lesions"] == 13 and np.isnan(crossed["consensus_prevalence"])
    assert not rl.design(split, lesions, empty, empty, empty, ["prl", "not_prl"])["fully_crossed"]
    alone = rl.overall_table(same[same["rater"] == "a"], ["prl", "not_prl"]).iloc[0]
    assert alone["note"] == "needs at least 2 raters" and np.isnan(alone["gwet_ac1"])
