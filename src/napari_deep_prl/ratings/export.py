"""Tables out of the store: wide (one row per lesion), long (current ratings), history.

They are pandas DataFrames; :func:`napari_deep_prl.tables.write_table` writes them atomically
(CSV, or TSV for ``.tsv``).
"""

from __future__ import annotations

import pandas as pd

LONG_COLUMNS = ["subject", "lesion", "rater", "label", "repeat", "confidence", "reason",
                "comment", "created_at", "seconds", "session", "package_version",
                "queue_strategy", "queue_position", "model_version", "id"]
HISTORY_COLUMNS = LONG_COLUMNS[:3] + ["action", "retracts"] + LONG_COLUMNS[3:]


def wide_table(lesions: pd.DataFrame, current: pd.DataFrame,
               consensus: pd.DataFrame) -> pd.DataFrame:
    """``subject, lesion``, one column per rater id (current label), ``consensus, ...method``."""
    labels = current.pivot(index="lesion_key", columns="rater", values="label")
    labels = labels.reindex(columns=sorted(labels.columns))
    labels.columns.name = None
    table = lesions[["lesion_key", "subject", "lesion"]].join(labels, on="lesion_key")
    table = table.merge(consensus[["lesion_key", "consensus", "consensus_method"]],
                        on="lesion_key", how="left")
    return table.drop(columns="lesion_key").reset_index(drop=True)


def long_table(current: pd.DataFrame) -> pd.DataFrame:
    """One row per current rating (first presentations and repeats) with all its fields."""
    return current[LONG_COLUMNS].reset_index(drop=True)


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """Every row ever written, in order, undo rows (``action = undo``) included."""
    return history[HISTORY_COLUMNS].reset_index(drop=True)
