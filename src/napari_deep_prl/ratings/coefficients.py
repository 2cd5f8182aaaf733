"""Agreement coefficients computed from totals, and their patient bootstrap.

Every coefficient here is a function of totals over lesions: a confusion matrix for two
readings, category counts and coincidences for several raters, TP/FP/FN/TN for a rater against
a reference. The totals are summed per patient once; a bootstrap resample of patients is then a
vector of weights (how often each patient was drawn), and the totals of every resample are one
matrix product. Lesions of one patient are not independent (one reader's habit, one scan's
quality), so patients, not lesions, are resampled.

The coefficients, for ``q`` categories (see ``docs/ratings.md``):

* Cohen's kappa: chance agreement from each reader's own label frequencies;
* Gwet's AC1 (Gwet 2008): chance agreement ``sum(pi_k (1 - pi_k)) / (q - 1)`` from the pooled
  label frequencies ``pi_k``; it stays high when agreement is high and one class is rare;
* PABAK (Byrt 1993), ``(q p_o - 1) / (q - 1)``: Brennan & Prediger's coefficient, chance
  agreement ``1/q``; with several raters the same formula on Gwet's pairwise ``p_o``;
* the prevalence index ``(a - d) / n`` and bias index ``(b - c) / n`` of the 2 x 2 table PRL
  versus any other label (``a``: both PRL, ``d``: neither, ``b``: only the first reader PRL,
  ``c``: only the second), with which ``kappa = (PABAK - PI^2 + BI^2) / (1 - PI^2 + BI^2)`` for
  two categories;
* Krippendorff's alpha (nominal) from the coincidence matrix; lesions with fewer than two
  ratings carry no pair and drop out, so it takes designs where raters did not rate every lesion;
* Fleiss' kappa on lesions rated by every rater;
* ICC(A,1) of McGraw & Wong, which is Shrout & Fleiss' ICC(2,1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Fewest subjects for a subject-bootstrap CI: resampling one or two subjects gives at most
#: three distinct resamples, not an interval.
MIN_CI_SUBJECTS = 3

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def _ratio(num: np.ndarray, den: np.ndarray, ok: np.ndarray | bool = True) -> np.ndarray:
    """``num / den`` where ``den`` is not 0 and ``ok``, NaN elsewhere."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    where = (den != 0) & ok
    np.divide(num, den, out=out, where=where)
    return out


def _scalar(values: dict[str, np.ndarray]) -> dict[str, np.ndarray | float]:
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in values.items()}


def kappa_from_confusion(conf: np.ndarray) -> np.ndarray | float:
    """Cohen's kappa of one confusion matrix or a stack of them (``(..., k, k)``).

    NaN where chance agreement is 1 (e.g. both raters gave one label to every item), where
    kappa is undefined.
    """
    return pair_coefficients(conf)["cohen_kappa"]


def pair_coefficients(conf: np.ndarray, positive: int = 0) -> dict[str, np.ndarray | float]:
    """Every two-reader coefficient of a confusion matrix or a stack of them (``(..., q, q)``,
    rows the first reader); ``positive`` is the index of the PRL category.

    Keys: ``n, percent_agreement, cohen_kappa, gwet_ac1, pabak, prevalence_index,
    bias_index, krippendorff_alpha``. NaN where a coefficient is undefined (no items; chance
    agreement 1).
    """
    conf = np.asarray(conf, dtype=float)
    q = conf.shape[-1]
    n = conf.sum(axis=(-2, -1))
    rows, cols = conf.sum(axis=-1), conf.sum(axis=-2)
    agree = np.trace(conf, axis1=-2, axis2=-1)
    p_o = _ratio(agree, n)
    p_e = _ratio(np.sum(rows * cols, axis=-1), n**2)
    pooled = _ratio(rows + cols, 2 * n[..., None])
    p_e_ac1 = _ratio(np.sum(pooled * (1 - pooled), axis=-1), q - 1)
    a = conf[..., positive, positive]
    b, c = rows[..., positive] - a, cols[..., positive] - a
    d = n - a - b - c
    coincidence = conf + np.swapaxes(conf, -1, -2)
    values = coincidence.sum(axis=-1)
    pairable = 2 * n
    return _scalar({
        "n": n,
        "percent_agreement": p_o,
        "cohen_kappa": _ratio(p_o - p_e, 1 - p_e, p_e < 1),
        "gwet_ac1": _ratio(p_o - p_e_ac1, 1 - p_e_ac1),
        "pabak": _ratio(q * p_o - 1, q - 1),
        "prevalence_index": _ratio(a - d, n),
        "bias_index": _ratio(b - c, n),
        "krippendorff_alpha": _alpha(coincidence, values, pairable),
    })


def _alpha(coincidence: np.ndarray, values: np.ndarray, pairable: np.ndarray) -> np.ndarray:
    """Nominal Krippendorff's alpha from coincidences (``(..., q, q)``), their row sums and
    their total: ``1 - (n - 1) * observed disagreements / expected ones``."""
    observed = pairable - np.trace(coincidence, axis1=-2, axis2=-1)
    expected = pairable**2 - np.sum(values**2, axis=-1)
    return 1 - _ratio((pairable - 1) * observed, expected, pairable > 1)


def multi_rater_items(counts: np.ndarray, n_raters: int) -> np.ndarray:
    """Per lesion, the totals :func:`multi_rater_coefficients` sums: ``counts`` is lesions x
    categories (how many raters gave each label; fewer than ``n_raters`` where some did not
    rate the lesion)."""
    counts = np.asarray(counts, dtype=float)
    q = counts.shape[1]
    m = counts.sum(axis=1)
    rated, paired = m >= 1, m >= 2
    complete = m == n_raters
    pair_agree = _ratio(np.sum(counts * (counts - 1), axis=1), m * (m - 1), paired)
    share = _ratio(counts, m[:, None], rated[:, None])
    coincidence = (counts[:, :, None] * counts[:, None, :]
                   - np.eye(q)[None] * counts[:, :, None]) / np.where(paired, m - 1, 1)[:, None, None]
    return np.column_stack([
        rated, paired, np.where(paired, pair_agree, 0), np.where(rated[:, None], share, 0),
        (coincidence * paired[:, None, None]).reshape(len(counts), q * q),
        complete, np.where(complete, pair_agree, 0), counts * complete[:, None] / n_raters,
    ])


def multi_rater_coefficients(totals: np.ndarray, q: int) -> dict[str, np.ndarray | float]:
    """Several raters' coefficients from summed :func:`multi_rater_items` (``(..., F)``).

    Keys: ``n`` (lesions with two ratings or more), ``n_complete`` (rated by every rater),
    ``percent_agreement`` (Gwet's pairwise agreement), ``gwet_ac1``, ``pabak``,
    ``krippendorff_alpha`` (all on lesions with two ratings or more, missing ratings allowed)
    and ``fleiss_kappa`` (lesions rated by every rater).
    """
    totals = np.asarray(totals, dtype=float)
    n_rated, n_paired, agree_sum = totals[..., 0], totals[..., 1], totals[..., 2]
    share = totals[..., 3:3 + q]
    coincidence = totals[..., 3 + q:3 + q + q * q].reshape(*totals.shape[:-1], q, q)
    n_complete = totals[..., 3 + q + q * q]
    complete_agree = totals[..., 4 + q + q * q]
    complete_share = totals[..., 5 + q + q * q:]
    p_a = _ratio(agree_sum, n_paired)
    pooled = _ratio(share, n_rated[..., None])
    p_e_ac1 = _ratio(np.sum(pooled * (1 - pooled), axis=-1), q - 1)
    p_fleiss = _ratio(complete_share, n_complete[..., None])
    p_e_fleiss = np.sum(p_fleiss**2, axis=-1)
    values = coincidence.sum(axis=-1)
    return _scalar({
        "n": n_paired, "n_complete": n_complete, "percent_agreement": p_a,
        "gwet_ac1": _ratio(p_a - p_e_ac1, 1 - p_e_ac1),
        "pabak": _ratio(q * p_a - 1, q - 1),
        "krippendorff_alpha": _alpha(coincidence, values, values.sum(axis=-1)),
        "fleiss_kappa": _ratio(_ratio(complete_agree, n_complete) - p_e_fleiss, 1 - p_e_fleiss,
                               p_e_fleiss < 1),
    })


def accuracy_coefficients(totals: np.ndarray) -> dict[str, np.ndarray | float]:
    """Sensitivity, specificity and PPV of summed ``(tp, fp, fn, tn)`` (``(..., 4)``)."""
    tp, fp, fn, tn = np.moveaxis(np.asarray(totals, dtype=float), -1, 0)
    return _scalar({"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                    "ppv": _ratio(tp, tp + fp)})


def icc_agreement(scores: np.ndarray) -> np.ndarray | float:
    """ICC(A,1) (McGraw & Wong) = ICC(2,1) (Shrout & Fleiss): two-way random effects, absolute
    agreement, one rater, of subjects x raters ``scores`` (or a stack, ``(..., n, k)``).

    Absolute agreement because a rater who counts systematically more PRLs than another does
    not agree with them. NaN with fewer than 2 subjects or raters, or no variation at all.
    """
    scores = np.asarray(scores, dtype=float)
    n, k = scores.shape[-2:]
    if n < 2 or k < 2:
        return float("nan") if scores.ndim == 2 else np.full(scores.shape[:-2], np.nan)
    grand = scores.mean(axis=(-2, -1), keepdims=True)
    row_means, col_means = scores.mean(axis=-1, keepdims=True), scores.mean(axis=-2, keepdims=True)
    ms_rows = k * np.sum((row_means - grand) ** 2, axis=(-2, -1)) / (n - 1)
    ms_cols = n * np.sum((col_means - grand) ** 2, axis=(-2, -1)) / (k - 1)
    ms_error = np.sum((scores - row_means - col_means + grand) ** 2, axis=(-2, -1)) / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    icc = _ratio(ms_rows - ms_error, denominator, denominator > 0)
    return float(icc) if icc.ndim == 0 else icc


# -- the patient bootstrap ---------------------------------------------------------------------

def group_totals(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sum the rows of ``values`` (items x ...) per group: groups x ..., in sorted group order."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    values = np.asarray(values, dtype=float)
    out = np.zeros((inverse.max(initial=-1) + 1, *values.shape[1:]))
    np.add.at(out, inverse, values)
    return out


def bootstrap_weights(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n_groups`` groups is drawn in each of ``n_boot`` resamples with
    replacement (``n_boot x n_groups``; seeded)."""
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    offsets = (np.arange(n_boot)[:, None] * n_groups + draws).ravel()
    return np.bincount(offsets, minlength=n_boot * n_groups).reshape(n_boot, n_groups)


def percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values``, resamples where the statistic is undefined
    left out; NaN when all are."""
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(per_group: np.ndarray, statistic: Statistic, *, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile CI of every value of ``statistic`` over resamples of the groups (patients).

    ``per_group`` holds each group's totals (groups x ...); ``statistic`` maps summed totals
    (resamples x ...) to named arrays. NaN intervals with fewer than
    :data:`MIN_CI_SUBJECTS` groups.
    """
    per_group = np.asarray(per_group, dtype=float)
    n_groups = len(per_group)
    if n_groups < MIN_CI_SUBJECTS:
        return {key: (float("nan"), float("nan"))
                for key in statistic(per_group.sum(axis=0, keepdims=True))}
    weights = bootstrap_weights(n_groups, n_boot, seed).astype(float)
    totals = (weights @ per_group.reshape(n_groups, -1)).reshape(n_boot, *per_group.shape[1:])
    return {key: percentile_ci(values, level) for key, values in statistic(totals).items()}


def icc_bootstrap_ci(scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of :func:`icc_agreement`, resampling subjects (rows of ``scores``)."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < MIN_CI_SUBJECTS:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(scores), size=(n_boot, len(scores)))
    return percentile_ci(icc_agreement(scores[draws]), level)
