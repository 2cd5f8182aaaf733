"""The second-read queue: which already-read lesions another rater should read, most useful first.

A lesion is a candidate when its voting raters' labels disagree, when one of them called it
``unsure``, or when it has a single read and the model's stored score disagrees strongly with
it (``prl`` with a probability of at most ``1 - model_gap``, ``not_prl`` with at least
``model_gap``). Lesions with a live adjudicated decision are settled and left out; lesions
nobody read belong to the raters' queues, not here.

The order is by the **expected change of the patient's PRL count** that one more read of the
lesion brings. Each lesion's chance of being a PRL is estimated from its reads, ``prl`` counting
1, ``not_prl`` 0 and ``unsure`` 1/2, plus one pseudo-read worth the model's probability (1/2
without a stored score)::

    p = (reads' sum + model probability) / (n + 1)

The patient's expected PRL count is the sum of its lesions' ``p``. One more read moves ``p`` to
``(sum + 1) / (n + 2)`` (a ``prl``, with chance ``p``) or to ``sum / (n + 2)`` (with chance
``1 - p``), so the expected absolute change is::

    expected_change = 2 p (1 - p) / (n + 2)

largest for lesions whose reads split evenly and which few raters have read, and shrinking as
reads agree or accumulate. Ties go in subject and lesion order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.consensus import ConsensusRule

if TYPE_CHECKING:
    import pandas as pd

#: How strongly a lone rater and the model must disagree (see the module docstring).
DEFAULT_MODEL_GAP = 0.7

#: Worth of each label as a read of "is a PRL".
_VALUE = {"prl": 1.0, "not_prl": 0.0, "unsure": 0.5}

COLUMNS = ["subject", "lesion", "n_reads", "n_prl", "n_not_prl", "n_unsure", "read_by",
           "model_probability", "p_prl", "expected_change", "why"]


def second_read_queue(lesions: pd.DataFrame, current: pd.DataFrame, decisions: pd.DataFrame,
                      predictions: pd.DataFrame, rule: ConsensusRule, *,
                      model_gap: float = DEFAULT_MODEL_GAP) -> pd.DataFrame:
    """Lesions worth another read, most useful first (columns :data:`COLUMNS`).

    ``current`` are the raters' current ratings (only ``rule.raters`` vote when set),
    ``decisions`` the live adjudicated decisions, ``predictions`` the stored model scores
    (the newest per lesion is used). ``why`` lists the reasons: ``disagree``, ``unsure``,
    ``model``.
    """
    import pandas as pd

    if not 0.5 < model_gap <= 1:
        raise InputError(f"model gap {model_gap} must lie in (0.5, 1]: it is the probability a "
                         "model must reach against a lone rater's label; e.g. 0.7.")
    votes = current if rule.raters is None else current[current["rater"].isin(rule.raters)]
    votes = votes[~votes["lesion_key"].isin(decisions["lesion_key"])]
    reads = votes.assign(value=votes["label"].map(_VALUE)).groupby("lesion_key").agg(
        n_reads=("label", "size"), n_prl=("label", lambda s: int((s == "prl").sum())),
        n_not_prl=("label", lambda s: int((s == "not_prl").sum())),
        n_unsure=("label", lambda s: int((s == "unsure").sum())),
        read_by=("rater", lambda s: ",".join(sorted(s))), total=("value", "sum"))
    newest = predictions.sort_values("created_at", kind="stable").groupby("lesion_key").last()
    table = lesions[["lesion_key", "subject", "lesion"]].join(reads, on="lesion_key", how="inner")
    table["model_probability"] = table["lesion_key"].map(newest["probability"])
    model = table["model_probability"].fillna(0.5).to_numpy(dtype=float)
    n = table["n_reads"].to_numpy(dtype=float)
    p = (table["total"].to_numpy(dtype=float) + model) / (n + 1)
    table["p_prl"] = p
    table["expected_change"] = 2 * p * (1 - p) / (n + 2)
    lone = table["n_reads"] == 1
    lone_value = table["total"]
    model_against = lone & table["model_probability"].notna() & (
        ((lone_value == 1) & (table["model_probability"] <= 1 - model_gap))
        | ((lone_value == 0) & (table["model_probability"] >= model_gap)))
    reasons = pd.DataFrame({
        "disagree": (table[["n_prl", "n_not_prl", "n_unsure"]] > 0).sum(axis=1) > 1,
        "unsure": table["n_unsure"] > 0,
        "model": model_against})
    table["why"] = reasons.apply(lambda row: ",".join(row.index[row.to_numpy()]), axis=1) \
        if len(table) else pd.Series(dtype=object)
    table = table[reasons.any(axis=1)]
    table = table.sort_values(["expected_change", "subject", "lesion"],
                              ascending=[False, True, True], kind="stable")
    return table[COLUMNS].reset_index(drop=True)
