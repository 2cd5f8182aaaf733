"""Helpers shared by the rating tests: a store with synthetic lesions (no images needed)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

from napari_deep_prl.ratings import exchange
from napari_deep_prl.ratings.store import RatingStore


def lesion_rows(n: int) -> pd.DataFrame:
    """``n`` lesions with plausible centres and volumes."""
    ids = range(1, n + 1)
    return pd.DataFrame({"lesion": list(ids), "x": [float(i) for i in ids],
                         "y": [2.0 * i for i in ids], "z": [3.0] * n,
                         "volume_voxels": [10 + i for i in ids],
                         "volume_mm3": [15.0 + i for i in ids], "confluent": [i == 2 for i in ids]})


def register_legacy_ids(path: Path, ids: list[str], kind: str = "rater") -> None:
    """Register ``ids`` straight into the store file at ``path``, as a store made before ids
    were checked may hold them (new ids outside the id alphabet are refused)."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany("INSERT INTO raters (rater, created_at, kind) VALUES (?, '2025-01-01', ?)",
                         [(name, kind) for name in ids])


def make_store(path: Path, subjects: int = 3, lesions: int = 4, **kwargs) -> RatingStore:
    """A new store at ``path`` with ``subjects`` x ``lesions`` registered lesions."""
    store = RatingStore.open(path, create=True, **kwargs)
    for s in range(subjects):
        store.register_subject(f"sub-{s:02d}", f"fingerprint-{s}", lesion_rows(lesions))
    return store


def store_content(store) -> dict[str, list]:
    """What a store records, without its own ids: each table's rows (a retraction names the row
    it retracts by content) in a canonical order."""
    tables = exchange.read_history(store)
    for name in ("ratings", "consensus"):
        by_id = {row["id"]: row for row in tables[name]}
        for row in tables[name]:
            if row["retracts"] is not None:
                row["retracts"] = {k: v for k, v in by_id[row["retracts"]].items() if k != "id"}
        for row in tables[name]:
            del row["id"]
    return {name: sorted(tables[name], key=lambda r: json.dumps(r, sort_keys=True))
            for name in ("raters", "ratings", "consensus", "predictions", "lesions")}
