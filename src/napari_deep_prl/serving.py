"""Several raters on one model-ordered queue: serve each the least recently served top lesion.

With a model order every rater's queue starts with the same lesions, so raters working at once
would all label the same few. A :class:`ServingLog` records which lesion was put on whose screen
and when; :func:`spread_among_raters` wraps a strategy so that, among its ``window`` top-ranked
lesions not yet rated by this rater, the one served longest ago (never served first) comes first.

The log is its own small SQLite file (``serving.sqlite`` in the project folder, WAL mode, safe
for concurrent writers): serving is not a rating, and the rating store's schema stays as it is.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd

from napari_deep_prl.project import Project
from napari_deep_prl.ratings.queue import QueueItem, RaterQueue, Strategy

LOG_NAME = "serving.sqlite"


class ServingLog:
    """When each lesion was last shown to any rater."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.touch()  # as open() would create it (SQLite: 0o644, never group-writable)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS served (lesion_key INTEGER NOT NULL, "
                           "rater TEXT NOT NULL, served_at REAL NOT NULL)")
        self._conn.execute("CREATE INDEX IF NOT EXISTS served_by_lesion ON served "
                           "(lesion_key, served_at)")

    @classmethod
    def for_project(cls, project: Project) -> ServingLog:
        return cls(project.root / LOG_NAME)

    def mark(self, rater: str, lesion_key: int, at: float | None = None) -> None:
        """Record that ``lesion_key`` is now on ``rater``'s screen."""
        with self._lock:
            self._conn.execute("INSERT INTO served VALUES (?, ?, ?)",
                               (int(lesion_key), rater, time.time() if at is None else at))

    def last_served(self) -> pd.Series:
        """Latest serving time per lesion key (lesions never served are absent)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT lesion_key, MAX(served_at) FROM served GROUP BY lesion_key").fetchall()
        return pd.Series({int(k): float(t) for k, t in rows}, dtype=float)

    def close(self) -> None:
        self._conn.close()


def spread_among_raters(strategy: Strategy, log: ServingLog, project: Project, rater: str, *,
                        window: int = 10) -> Strategy:
    """``strategy`` with its top ``window`` lesions (unrated by ``rater``) least-recently-served
    first; same name and model version, so ratings record the order that served them."""
    def rank(candidates: pd.DataFrame) -> list[int]:
        ranked = [int(k) for k in strategy.rank(candidates)]
        mine = set(project.store.current(rater=rater)["lesion_key"].astype(int))
        open_keys = [k for k in ranked if k not in mine]
        top, last = open_keys[:window], log.last_served()
        top.sort(key=lambda k: last.get(k, -1.0))  # stable: rank order among equals
        chosen = set(top)
        return top + [k for k in ranked if k not in chosen]

    return Strategy(strategy.name, rank, strategy.model_version)


def serve_next(queue: RaterQueue, log: ServingLog) -> QueueItem | None:
    """Re-rank (others may have been served meanwhile), take the next item, log it as served."""
    queue.refresh()
    item = queue.next()
    if item is not None:
        log.mark(queue.rater, item.lesion_key)
    return item
