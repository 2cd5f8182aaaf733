"""The reliability of a rating study, reported as a journal asks for it (GRRAS).

PRLs are a rare class (3-12 % of lesions): two raters who agree on nearly every lesion can get a
low Cohen's kappa because chance agreement on the common class is high (the kappa paradox). So
next to kappa this reports coefficients that stay readable at a low prevalence (Gwet's AC1,
PABAK with the prevalence and bias indices that explain the gap), Krippendorff's alpha for
designs where raters did not rate every lesion, each rater's sensitivity and specificity
against the consensus and the references, the ICC of per-patient PRL counts, and intra-rater
agreement from the unannounced repeats. Every CI is a percentile bootstrap that resamples
patients (:mod:`napari_deep_prl.ratings.coefficients`), seeded.

``unsure`` is handled as in :mod:`napari_deep_prl.ratings.agreement`: a third category
(``"category"``) or lesions any compared rater called unsure left out (``"exclude"``). The
categories the coefficients count (``q``) are PRL and not PRL, and unsure when it is a category
and some rater used it; they are the same for every pair and resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings import agreement
from napari_deep_prl.ratings.coefficients import (
    MIN_CI_SUBJECTS,
    Statistic,
    accuracy_coefficients,
    bootstrap_ci,
    group_totals,
    icc_agreement,
    icc_bootstrap_ci,
    multi_rater_coefficients,
    multi_rater_items,
    pair_coefficients,
)
from napari_deep_prl.ratings.schema import LABELS

#: The two-reading coefficients, in the tables' order.
PAIR_STATISTICS = ("percent_agreement", "cohen_kappa", "gwet_ac1", "pabak", "prevalence_index",
                   "bias_index", "krippendorff_alpha")
#: The several-rater coefficients, in the table's order.
OVERALL_STATISTICS = ("percent_agreement", "fleiss_kappa", "gwet_ac1", "pabak",
                      "krippendorff_alpha")
ACCURACY_STATISTICS = ("sensitivity", "specificity", "ppv")
#: What the report calls the ICC of the PRL counts.
ICC_FORM = "ICC(A,1) (McGraw & Wong; ICC(2,1) of Shrout & Fleiss)"


def with_ci(statistics: Sequence[str]) -> list[str]:
    """``s, s_ci_low, s_ci_high`` for each statistic."""
    return [column for s in statistics for column in (s, f"{s}_ci_low", f"{s}_ci_high")]


@dataclass(frozen=True)
class Settings:
    """How the statistics were computed (they go into the methods paragraph)."""

    unsure: str = "category"
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        agreement.check_unsure(self.unsure)
        if not isinstance(self.n_boot, int) or self.n_boot < 1:
            raise InputError(f"{self.n_boot} bootstrap resamples: give at least 1 (1000 or "
                             "more for a paper).")
        if not 0 < self.level < 1:
            raise InputError(f"confidence level {self.level} must lie between 0 and 1, e.g. "
                             "0.95.")


@dataclass(frozen=True)
class Reliability:
    """Every table of the reliability report, as DataFrames, and the study's design."""

    #: Per rater pair, on the lesions both rated: ``rater_a, rater_b, n, n_subjects``, each of
    #: :data:`PAIR_STATISTICS` with its CI, ``note``.
    pairs: pd.DataFrame
    #: One row over all raters: ``raters``, ``n`` (lesions with two ratings or more),
    #: ``n_complete`` (rated by every rater), ``n_subjects`` (patients resampled),
    #: :data:`OVERALL_STATISTICS` with CIs, ``note``.
    overall: pd.DataFrame
    #: Per rater and truth (``consensus`` or a reference): ``rater, truth, n, n_unsure,
    #: n_subjects, tp, fp, fn, tn``, sensitivity, specificity and PPV with CIs, ``note``.
    accuracy: pd.DataFrame
    #: One row: ``form, n_subjects, icc, icc_ci_low, icc_ci_high, note``.
    count_icc: pd.DataFrame
    #: Subjects x raters PRL counts, on the subjects every rater finished (the ICC's data).
    counts: pd.DataFrame
    #: Per rater, first reading against the unannounced repeat: ``rater`` and the columns of
    #: :attr:`pairs` after the rater ids.
    intra: pd.DataFrame
    settings: Settings = field(default_factory=Settings)
    #: Raters, references, patients, lesions, prevalence: what GRRAS asks to report.
    design: dict[str, object] = field(default_factory=dict)


def categories(labels: pd.Series, unsure: str) -> list[str]:
    """PRL and not PRL, and unsure when it is a category and some rater used it."""
    used_unsure = unsure == "category" and bool((labels == "unsure").any())
    return list(LABELS) if used_unsure else list(LABELS[:2])


def _ci_note(n: int, n_subjects: int) -> str:
    """Why a figure or its CI is n/a for lack of lesions or patients ('' when it is not)."""
    if n == 0:
        return "no lesion rated by both"
    if n_subjects < MIN_CI_SUBJECTS:
        return (f"{n_subjects} subject{'' if n_subjects == 1 else 's'}: a CI needs at least "
                f"{MIN_CI_SUBJECTS}")
    return ""


def _estimates(per_group: np.ndarray, statistic: Statistic, keys: Sequence[str],
               settings: Settings) -> dict[str, float]:
    """Point estimates of ``keys`` from the summed totals, and their patient-bootstrap CIs."""
    point = statistic(per_group.sum(axis=0))
    ci = bootstrap_ci(per_group, statistic, n_boot=settings.n_boot, seed=settings.seed,
                      level=settings.level)
    out: dict[str, float] = {}
    for key in keys:
        out[key] = float(point[key])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = ci[key]
    return out


def pair_statistics(a: Sequence[str], b: Sequence[str], subjects: Sequence[str],
                    cats: Sequence[str], settings: Settings = Settings()) -> dict[str, object]:
    """Every two-reading coefficient of labels ``a`` and ``b`` of the same lesions, with
    patient-bootstrap CIs (``subjects`` says whose lesion each is)."""
    a, b, subjects = list(a), list(b), np.asarray(list(subjects), dtype=object)
    index = {c: i for i, c in enumerate(cats)}
    cells = np.zeros((len(a), len(cats), len(cats)))
    cells[np.arange(len(a)), [index[x] for x in a], [index[y] for y in b]] = 1
    n_subjects = len(set(subjects))
    per_group = group_totals(cells, subjects) if len(a) else np.zeros((0, len(cats), len(cats)))
    estimates = _estimates(per_group, lambda conf: pair_coefficients(conf, index["prl"]),
                           PAIR_STATISTICS, settings)
    notes = [_ci_note(len(a), n_subjects)]
    if len(a) and not np.isfinite(estimates["cohen_kappa"]):
        notes.append(f"{agreement.ONE_LABEL}: kappa undefined")
    return {"n": len(a), "n_subjects": n_subjects, **estimates,
            "note": "; ".join(note for note in notes if note)}


PAIR_COLUMNS = ["n", "n_subjects", *with_ci(PAIR_STATISTICS), "note"]


def pair_table(current: pd.DataFrame, cats: Sequence[str],
               settings: Settings = Settings()) -> pd.DataFrame:
    """One row per rater pair, on the lesions both rated."""
    wide = agreement.wide_labels(current)
    raters = sorted(current["rater"].unique())
    rows = []
    for a, b in combinations(raters, 2):
        both = agreement.rated_by_all(wide, (a, b), settings.unsure)
        rows.append({"rater_a": a, "rater_b": b,
                     **pair_statistics(both[a], both[b], both["subject"], cats, settings)})
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", *PAIR_COLUMNS])


def overall_table(current: pd.DataFrame, cats: Sequence[str],
                  settings: Settings = Settings()) -> pd.DataFrame:
    """One row over all raters; lesions rated by some raters only count where two or more
    did (Fleiss' kappa: lesions rated by every rater)."""
    raters = sorted(current["rater"].unique())
    wide = agreement.wide_labels(current, raters)
    values = wide[raters]
    if settings.unsure == "exclude":
        keep = ~(values == "unsure").any(axis=1)
        wide, values = wide[keep], values[keep]
    counts = (values.to_numpy()[:, :, None] == np.asarray(cats, dtype=object)).sum(axis=1)
    items = multi_rater_items(counts, len(raters))
    subjects = wide["subject"].to_numpy(dtype=object)
    paired = counts.sum(axis=1) >= 2
    n_subjects = len(set(subjects))  # those resampled: a lone rating counts in AC1's chance term
    per_group = group_totals(items, subjects) if len(items) else np.zeros((0, items.shape[1]))
    estimates = _estimates(per_group, lambda t: multi_rater_coefficients(t, len(cats)),
                           OVERALL_STATISTICS, settings)
    n, n_complete = int(paired.sum()), int((counts.sum(axis=1) == len(raters)).sum())
    note = "needs at least 2 raters" if len(raters) < 2 else _ci_note(n, n_subjects)
    if not note and not np.isfinite(estimates["fleiss_kappa"]):
        note = ("no lesion rated by every rater: no Fleiss' kappa" if not n_complete
                else f"{agreement.ONE_LABEL}: Fleiss' kappa undefined")
    row = {"raters": len(raters), "n": n, "n_complete": n_complete,
           "n_subjects": n_subjects, **estimates, "note": note.replace("by both", "by two raters")}
    return pd.DataFrame([row], columns=["raters", "n", "n_complete", "n_subjects",
                                        *with_ci(OVERALL_STATISTICS), "note"])


def truths(consensus: pd.DataFrame, references: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The definite truths raters are compared with: ``consensus`` and each reference, each
    as ``subject, lesion, truth``."""
    out = {"consensus": consensus.loc[consensus["consensus"].isin(LABELS[:2]),
                                      ["subject", "lesion", "consensus"]]
           .rename(columns={"consensus": "truth"})}
    for name, part in references.groupby("rater"):
        definite = part[part["label"].isin(LABELS[:2])]
        out[str(name)] = definite[["subject", "lesion", "label"]].rename(columns={"label": "truth"})
    return out


def accuracy_table(current: pd.DataFrame, truth_tables: dict[str, pd.DataFrame],
                   settings: Settings = Settings()) -> pd.DataFrame:
    """Each rater against each truth, on the lesions the truth labelled definitely; the
    rater's unsure there is counted in ``n_unsure`` and left out of the counts."""
    rows = []
    for truth_name, truth in truth_tables.items():
        for rater, own in current.groupby("rater"):
            both = own[["subject", "lesion", "label"]].merge(truth, on=["subject", "lesion"])
            cells, definite = agreement.outcomes(both["label"], both["truth"])
            subjects = both["subject"].to_numpy(dtype=object)[definite]
            per_group = group_totals(cells, subjects) if len(cells) else np.zeros((0, 4))
            tp, fp, fn, tn = (int(v) for v in cells.sum(axis=0))
            n_subjects = len(set(subjects))
            rows.append({"rater": rater, "truth": truth_name, "n": len(cells),
                         "n_unsure": int((~definite).sum()), "n_subjects": n_subjects,
                         "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                         **_estimates(per_group, accuracy_coefficients, ACCURACY_STATISTICS,
                                      settings),
                         "note": _ci_note(len(cells), n_subjects)})
    return pd.DataFrame(rows, columns=["rater", "truth", "n", "n_unsure", "n_subjects", "tp",
                                       "fp", "fn", "tn", *with_ci(ACCURACY_STATISTICS), "note"])


def count_icc_table(counts: pd.DataFrame, note: str,
                    settings: Settings = Settings()) -> pd.DataFrame:
    """The ICC of the subjects x raters PRL counts with its subject-bootstrap CI."""
    scores = counts.to_numpy(dtype=float)
    icc = icc_agreement(scores) if scores.size else float("nan")
    low, high = (icc_bootstrap_ci(scores, n_boot=settings.n_boot, seed=settings.seed,
                                  level=settings.level)
                 if np.isfinite(icc) else (float("nan"), float("nan")))
    if not note and np.isfinite(icc) and not np.isfinite(low):
        note = _ci_note(len(scores), len(scores))
    return pd.DataFrame([{"form": ICC_FORM, "n_subjects": len(scores), "icc": icc,
                          "icc_ci_low": low, "icc_ci_high": high, "note": note}])


def intra_table(first: pd.DataFrame, repeat: pd.DataFrame, cats: Sequence[str],
                settings: Settings = Settings()) -> pd.DataFrame:
    """Per rater: the first reading of a lesion against its unannounced repeat."""
    rows = []
    for rater, part in agreement.repeat_pairs(first, repeat, settings.unsure):
        rows.append({"rater": rater, **pair_statistics(part["label"], part["label_repeat"],
                                                       part["subject"], cats, settings)})
    return pd.DataFrame(rows, columns=["rater", *PAIR_COLUMNS])


def design(current: pd.DataFrame, lesions: pd.DataFrame, consensus: pd.DataFrame,
           references: pd.DataFrame, repeats: pd.DataFrame, cats: Sequence[str]) -> dict[str, object]:
    """What GRRAS asks a report to say about the study: raters, patients, lesions, how many
    ratings each lesion got, the prevalence of PRLs."""
    per_lesion = current.groupby(["subject", "lesion"]).size()
    definite = consensus[consensus["consensus"].isin(LABELS[:2])]
    raters = sorted(current["rater"].unique())
    return {
        "raters": raters,
        "references": sorted(references["rater"].unique()),
        "n_subjects": int(lesions["subject"].nunique()),
        "n_lesions": int(len(lesions)),
        "n_subjects_rated": int(current["subject"].nunique()),
        "n_lesions_rated": int(len(per_lesion)),
        "n_ratings": int(len(current)),
        "ratings_per_lesion": {int(k): int(v) for k, v in per_lesion.value_counts().sort_index().items()},
        # every lesion anyone rated was rated by every rater
        "fully_crossed": bool(len(per_lesion) and (per_lesion == len(raters)).all()),
        "rated_by_rater": {str(r): int(n) for r, n in current.groupby("rater").size().items()},
        "prl_fraction_by_rater": {str(r): float((part["label"] == "prl").mean())
                                  for r, part in current.groupby("rater")},
        "n_consensus": int(len(definite)),
        "consensus_methods": {str(k): int(v) for k, v in
                              definite["consensus_method"].value_counts().sort_index().items()},
        "consensus_prevalence": (float((definite["consensus"] == "prl").mean())
                                 if len(definite) else float("nan")),
        "n_repeats": int(len(repeats)),
        "categories": list(cats),
        "package_version": __version__,
    }


def reliability(current: pd.DataFrame, lesions: pd.DataFrame, consensus: pd.DataFrame,
                references: pd.DataFrame, repeats: pd.DataFrame,
                settings: Settings = Settings()) -> Reliability:
    """Every table of the report from the store's tables: the raters' ``current`` labels, the
    project's ``lesions``, the ``consensus`` table, the references' labels and the raters'
    unannounced ``repeats``."""
    cats = categories(pd.concat([current["label"], repeats["label"]]), settings.unsure)
    _, _, icc_note = agreement.prl_count_icc(current, lesions)
    counts = agreement.finished_prl_counts(current, lesions)
    return Reliability(
        pairs=pair_table(current, cats, settings),
        overall=overall_table(current, cats, settings),
        accuracy=accuracy_table(current, truths(consensus, references), settings),
        count_icc=count_icc_table(counts, icc_note, settings),
        counts=counts,
        intra=intra_table(current, repeats, cats, settings),
        settings=settings,
        design=design(current, lesions, consensus, references, repeats, cats))
