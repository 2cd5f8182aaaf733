"""Tables out of the store: wide (one row per lesion), long (current ratings), history, and
the consensus history.

They are pandas DataFrames; :func:`napari_deep_prl.base.tables.write_table` writes them atomically
(CSV, or TSV for ``.tsv``). In the wide table raters are ``rater_<id>`` columns and references
(ground truth, expert reads) ``reference_<id>`` columns after the consensus, so no id can pass
for the table's own columns: a rater named ``prl`` or ``consensus`` is never read as the truth
(:func:`napari_deep_prl.data.labels.read_prl_labels` reads ``consensus``). The long and history tables
say each row's ``kind`` (``rater`` or ``reference``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_deep_prl.ratings.consensus import labels_by_lesion
from napari_deep_prl.ratings.store import REFERENCE_PREFIX

if TYPE_CHECKING:
    import pandas as pd

LONG_COLUMNS = ["subject", "lesion", "rater", "kind", "label", "repeat", "confidence", "reason",
                "comment", "created_at", "seconds", "session", "package_version",
                "queue_strategy", "queue_position", "model_version", "id"]
HISTORY_COLUMNS = LONG_COLUMNS[:4] + ["action", "retracts"] + LONG_COLUMNS[4:]
#: Prefix of a rater's column in the wide table (a reference's is :data:`REFERENCE_PREFIX`).
RATER_PREFIX = "rater_"
CONSENSUS_HISTORY_COLUMNS = ["subject", "lesion", "action", "label", "method", "decided_by",
                             "note", "created_at", "retracts", "package_version", "id"]


def wide_table(lesions: pd.DataFrame, current: pd.DataFrame, consensus: pd.DataFrame,
               references: pd.DataFrame | None = None) -> pd.DataFrame:
    """``subject, lesion``, one ``rater_<id>`` column per rater (current label), ``consensus,
    consensus_method``, then one ``reference_<id>`` column per reference."""
    table = lesions[["lesion_key", "subject", "lesion"]].join(
        labels_by_lesion(current).add_prefix(RATER_PREFIX), on="lesion_key")
    table = table.merge(consensus[["lesion_key", "consensus", "consensus_method"]],
                        on="lesion_key", how="left")
    if references is not None and not references.empty:
        table = table.join(labels_by_lesion(references).add_prefix(REFERENCE_PREFIX),
                           on="lesion_key")
    return table.drop(columns="lesion_key").reset_index(drop=True)


def long_table(current: pd.DataFrame) -> pd.DataFrame:
    """One row per current rating (first presentations and repeats) with all its fields."""
    return current[LONG_COLUMNS].reset_index(drop=True)


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """Every row ever written, in order, undo rows (``action = undo``) included."""
    return history[HISTORY_COLUMNS].reset_index(drop=True)


def consensus_history_table(history: pd.DataFrame) -> pd.DataFrame:
    """Every consensus decision and retraction, in order (``action``: decide / retract)."""
    return history[CONSENSUS_HISTORY_COLUMNS].reset_index(drop=True)
