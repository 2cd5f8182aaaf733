"""Consensus: automatic where the raters agree enough, adjudicated everywhere else.

Automatic consensus is computed from the current ratings every time it is asked for, so it
follows the raters' latest labels; only adjudicated decisions are stored (append-only, the
latest per lesion wins) and they take precedence over the automatic rule. A retracted decision
gives the lesion back to the automatic rule. References never vote: the store's current
ratings, which this module is given, are the raters' only.

``unsure`` never becomes consensus automatically: under ``unanimous`` any ``unsure`` sends
the lesion to adjudication; under ``majority`` an ``unsure`` counts as a rating that does not
vote for either label (it is in the denominator, not in the numerator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings.schema import LABELS

if TYPE_CHECKING:
    import pandas as pd

RULES = ("unanimous", "majority")


@dataclass(frozen=True)
class ConsensusRule:
    """How many raters must agree, and how, before a label is consensus without adjudication.

    ``raters`` limits the vote to those rater ids (e.g. to leave out an imported reference);
    ``None`` lets every rater vote.
    """

    method: str = "unanimous"
    min_raters: int = 2
    raters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.raters is not None:
            object.__setattr__(self, "raters", tuple(self.raters))
        if self.method not in RULES:
            raise InputError(f"consensus method '{self.method}' is not one of "
                             f"{', '.join(RULES)}; fix it in the project config.")
        if self.min_raters < 1:
            raise InputError(f"consensus min_raters must be at least 1, not {self.min_raters}; "
                             "fix it in the project config.")

    def decide(self, labels: Sequence[str]) -> str | None:
        """The automatic consensus label of one lesion's ratings, or ``None``."""
        counts = np.array([[list(labels).count(label) for label in LABELS]])
        return self.decide_counts(counts)[0]

    def decide_counts(self, counts: np.ndarray) -> np.ndarray:
        """Automatic consensus of many lesions from their label counts (columns: LABELS)."""
        counts = np.asarray(counts)
        n = counts.sum(axis=1)
        votes = counts.max(axis=1)
        label = np.asarray(LABELS, dtype=object)[counts.argmax(axis=1)]
        agreed = votes == n if self.method == "unanimous" else 2 * votes > n
        return np.where(agreed & (n >= self.min_raters) & (label != "unsure"), label, None)


def consensus_table(lesions: pd.DataFrame, current: pd.DataFrame, decisions: pd.DataFrame,
                    rule: ConsensusRule) -> pd.DataFrame:
    """One row per lesion: ``subject, lesion, n_ratings, consensus, consensus_method,
    decided_by, note, adjudicated, pending``.

    ``consensus`` is the adjudicated label when there is a live decision (``adjudicated``),
    else the rule's automatic label; lesions with neither have ``consensus`` ``None`` and
    ``pending`` ``True`` when they have at least ``min_raters`` ratings (they are in the
    adjudication queue).
    """
    import pandas as pd

    votes = current if rule.raters is None else current[current["rater"].isin(rule.raters)]
    counts = (votes.groupby(["lesion_key", "label"]).size().unstack(fill_value=0)
              .reindex(index=lesions["lesion_key"], columns=list(LABELS), fill_value=0)
              .to_numpy())
    table = lesions[["lesion_key", "subject", "lesion"]].copy()
    table["n_ratings"] = counts.sum(axis=1)
    auto = rule.decide_counts(counts)
    table["consensus"] = auto
    unanimous = counts.max(axis=1) == table["n_ratings"].to_numpy()
    table["consensus_method"] = np.where(pd.isna(auto), None,
                                         np.where(unanimous, "unanimous", "majority"))
    table["decided_by"] = None
    table["note"] = None
    adjudicated = decisions.set_index("lesion_key")
    table["adjudicated"] = table["lesion_key"].isin(adjudicated.index)
    if not decisions.empty:
        hit = table["adjudicated"]
        keys = table.loc[hit, "lesion_key"]
        table.loc[hit, "consensus"] = keys.map(adjudicated["label"]).to_numpy()
        table.loc[hit, "consensus_method"] = keys.map(adjudicated["method"]).to_numpy()
        table.loc[hit, "decided_by"] = keys.map(adjudicated["decided_by"]).to_numpy()
        table.loc[hit, "note"] = keys.map(adjudicated["note"]).to_numpy()
    table["pending"] = table["consensus"].isna() & (table["n_ratings"] >= rule.min_raters)
    return table.reset_index(drop=True)


def labels_by_lesion(current: pd.DataFrame) -> pd.DataFrame:
    """Lesion keys x ids (in sorted order) of the current labels of ``current``."""
    labels = current.pivot(index="lesion_key", columns="rater", values="label")
    labels = labels.reindex(columns=sorted(labels.columns))
    labels.columns.name = None
    return labels


#: Columns of the adjudication queue after the raters' (whose columns are named by rater id).
QUEUE_DECISION_COLUMNS = ["consensus", "decided_by", "note", "pending"]


def adjudication_queue(table: pd.DataFrame, current: pd.DataFrame, *,
                       decided: bool = False) -> pd.DataFrame:
    """Pending lesions (with ``decided``, also those with a live adjudicated decision, to
    revise or retract it), every rater's label side by side, in subject and lesion order.

    Columns: ``lesion_key, subject, lesion, n_ratings``, one per rater id (its current
    label), then :data:`QUEUE_DECISION_COLUMNS`.
    """
    keep = table["pending"] | (table["adjudicated"] & decided)
    rows = table[keep].sort_values(["subject", "lesion"])
    queue = rows[["lesion_key", "subject", "lesion", "n_ratings"]].join(labels_by_lesion(current),
                                                                        on="lesion_key")
    queue[QUEUE_DECISION_COLUMNS] = rows[QUEUE_DECISION_COLUMNS]
    return queue.reset_index(drop=True)
