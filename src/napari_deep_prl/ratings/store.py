"""The rating store: one project's raters, ratings, consensus and predictions, durable and shared.

Why it is built this way:

* **One store, two engines.** The store is addressed by a path (an embedded SQLite file, the
  default) or a ``postgresql://`` URL (a server shared by the raters of several sites). This
  module holds the store's logic once; an engine (:mod:`.engine`; :mod:`.sqlite_file`,
  :mod:`.postgres`) supplies what differs: connecting, the schema's DDL, the write lock,
  durability settings and its errors.
* **Durable before return.** Every write is one transaction committed durably (SQLite: WAL with
  ``synchronous=FULL``; PostgreSQL: ``synchronous_commit=on``) before :meth:`RatingStore.add_rating`
  returns, so a kill or power cut after the call never loses the label.
* **Several writers.** Each write holds the engine's write lock; a store busy with another
  writer is waited for and the whole transaction retried with back-off until
  :attr:`.engine.Engine.busy_deadline_s`; only then does the caller see a :class:`StoreError`.
* **Never damage a store we do not own.** A corrupt, foreign or too-new store raises
  :class:`StoreError` before anything is written, and is left untouched.
* **Errors that say what is wrong.** A full disk, missing permissions, a server that is down or
  refuses the login are named as such, never as corruption. Reading (``open(readonly=True)``:
  exports, statistics) reads a snapshot and needs no write access.
* **Append-only history.** Ratings and consensus decisions are never updated or deleted: a
  changed label is a new row, an undo is a row retracting an earlier one, and so is a retracted
  consensus decision (see :mod:`.schema`).
* **Raters and references apart.** An id is a *rater* (a person whose labels vote) or a
  *reference* (ground truth, an expert read: compared with the raters, never voting); the
  reads that consensus and kappa use see raters only, and an id is never used as the other kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import (
    InputError,
    StoreError,
)
from napari_deep_prl.base.filenames import check_id, id_problem
from napari_deep_prl.ratings import postgres, schema
from napari_deep_prl.ratings.engine import Connection, Engine
from napari_deep_prl.ratings.sqlite_file import SQLiteEngine

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

#: Ratings inserted by one statement: 14 parameters each, within the 999 of older SQLite builds.
_ROWS_PER_INSERT = 70

_LESION_COLUMNS = ("lesion", "x", "y", "z", "volume_voxels", "volume_mm3", "confluent")


def utc_now() -> str:
    """Timestamp stored with every row: UTC, ISO 8601, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Provenance:
    """Where a rating came from: the queue that served the lesion and the model behind it."""

    strategy: str | None = None
    position: int | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class Rating:
    """One rater's judgement of one lesion, as handed to :meth:`RatingStore.add_ratings`."""

    rater: str
    subject: str
    lesion: int
    label: str
    confidence: int | None = None
    reason: str | None = None
    comment: str | None = None
    seconds: float | None = None
    session: str | None = None
    provenance: Provenance = Provenance()
    repeat: bool = False


class RatingStore:
    """Read and append ratings, consensus decisions and predictions of one project."""

    def __init__(self, engine: Engine, exclusion_reasons: Sequence[str]) -> None:
        self.engine = engine
        #: Where the store is (a file path, or a URL without password): named in every message.
        self.address = engine.address
        self._keys: dict[tuple[str, int], int] = {}
        self.exclusion_reasons = tuple(exclusion_reasons)

    @property
    def readonly(self) -> bool:
        """A snapshot opened with ``readonly``: writing through it raises StoreError."""
        return self.engine.readonly

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, address: str | Path, *, create: bool = False, readonly: bool = False,
             exclusion_reasons: Sequence[str] = schema.DEFAULT_EXCLUSION_REASONS,
             busy_timeout_s: float = 5.0) -> RatingStore:
        """Open (or with ``create`` make) a rating store, migrating an older schema.

        ``address`` is a SQLite file's path or a ``postgresql://`` URL (without password: see
        :mod:`.postgres`). The store is inspected before anything is written: a missing (unless
        ``create``), corrupt, foreign or too-new store raises :class:`StoreError` and is left
        untouched. ``readonly`` (exports, statistics) reads a snapshot taken now, so a project
        this account may not write can still be read; writing through it is refused.
        """
        if readonly and create:
            raise ValueError("a rating database cannot be created read-only")
        if postgres.is_url(address):
            engine: Engine = postgres.PostgresEngine.open(
                str(address), create=create, readonly=readonly, busy_timeout_s=busy_timeout_s)
        else:
            engine = SQLiteEngine.open(Path(address), create=create, readonly=readonly,
                                       busy_timeout_s=busy_timeout_s)
        return cls(engine, exclusion_reasons)

    def close(self) -> None:
        """Close the connection (every committed row is already durable)."""
        self.engine.close()

    def __enter__(self) -> RatingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one durable write transaction (see :meth:`.engine.Engine.write`)."""
        return self.engine.write(fn)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of a query (no pandas: recording a rating needs none)."""
        def run(conn: Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
            cursor = conn.execute(sql, params)
            return [d[0] for d in cursor.description], [tuple(row) for row in cursor.fetchall()]

        return self.engine.read(run)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd

        columns, rows = self._rows(sql, params)
        return pd.DataFrame.from_records(rows, columns=columns)

    # -- raters and lesions --------------------------------------------------------------

    def add_rater(self, rater: str, display_name: str | None = None) -> None:
        """Register a rater (a no-op when known; a given display name replaces the old one).

        A reference's id is refused (:class:`InputError`): its labels must never vote.
        """
        self._add_id(rater, "rater", display_name)

    def add_reference(self, reference: str, display_name: str | None = None) -> None:
        """Register a reference (ground truth, an expert read): compared with, never voting.

        A rater's id is refused; :meth:`make_reference` turns a rater into a reference.
        """
        self._add_id(reference, "reference", display_name)

    def _add_id(self, name: str, kind: str, display_name: str | None) -> None:
        _check_id(name, kind)

        def insert(conn: Connection) -> None:
            self._ensure_kind(conn, [name], kind)
            if display_name is not None:
                conn.execute("UPDATE raters SET display_name = ? WHERE rater = ?",
                             (display_name, name))
        self._write(insert)

    def check_kind(self, names: Iterable[str], kind: str) -> None:
        """Refuse (:class:`InputError`) ids registered as the other kind, or new ids that are
        invalid or reserved, before a long job would fail on them; registers nothing."""
        self.engine.read(lambda conn: self._known_kinds(conn, names, kind))

    def _ensure_kind(self, conn: Connection, names: Iterable[str], kind: str) -> None:
        """Register unknown ids as ``kind`` (inside a write); refuse ids of the other kind."""
        names = set(names)
        known = self._known_kinds(conn, names, kind)
        conn.executemany("INSERT INTO raters (rater, created_at, kind) VALUES (?, ?, ?) "
                         "ON CONFLICT DO NOTHING",
                         [(name, utc_now(), kind) for name in set(names) - set(known)])

    def _known_kinds(self, conn: Connection, names: Iterable[str],
                     kind: str) -> dict[str, str]:
        """The registered kind of each of ``names``; refuses conflicts and invalid or reserved
        new ids."""
        if kind not in schema.KINDS:
            raise InputError(f"kind '{kind}' is not one of {', '.join(schema.KINDS)}.")
        names = sorted(set(names))
        marks = ", ".join("?" * len(names))
        known = dict(conn.execute(f"SELECT rater, kind FROM raters WHERE rater IN ({marks})",
                                  names).fetchall())
        for name in names:
            if name in known and known[name] != kind:
                raise self._wrong_kind(name, known[name])
            if name not in known:
                _check_new_id(name, kind)
        return known

    def _wrong_kind(self, name: str, known: str) -> InputError:
        if known == "reference":
            return InputError(f"{self.address}: '{name}' is a reference, not a rater; choose another "
                              "rater id (a reference's labels are compared with the raters' and "
                              "never vote).")
        return InputError(f"{self.address}: '{name}' is a rater, not a reference; choose another "
                          "reference id, or turn the rater into a reference with `deep-prl "
                          f"ratings reference PROJECT --rater {name}`.")

    def raters(self) -> pd.DataFrame:
        """Registered raters (references left out): ``rater, display_name, created_at``."""
        return self._query("SELECT rater, display_name, created_at FROM raters "
                           "WHERE kind = 'rater' ORDER BY rater")

    def references(self) -> pd.DataFrame:
        """Registered references: ``reference, display_name, created_at``."""
        return self._query("SELECT rater AS reference, display_name, created_at FROM raters "
                           "WHERE kind = 'reference' ORDER BY rater")

    def make_reference(self, rater: str, *, keep_decisions: bool = False) -> None:
        """Turn a rater into a reference: its labels stay, but stop voting from now on.

        For projects that imported a ground truth as a rater. Adjudicated decisions on lesions
        the rater labelled were made with its label shown as a rater's; unless
        ``keep_decisions``, such decisions make this refuse (nothing changes) so that the
        adjudicator retracts them first, or keeps them knowingly.
        """
        def change(conn: Connection) -> None:
            row = conn.execute("SELECT kind FROM raters WHERE rater = ?", (rater,)).fetchone()
            if row is None:
                names = [n for (n,) in conn.execute(
                    "SELECT rater FROM raters WHERE kind = 'rater' ORDER BY rater")]
                raise InputError(f"{self.address}: no rater '{rater}' in this project (raters: "
                                 f"{', '.join(names) or 'none'}). Check the id.")
            if row[0] == "reference":
                raise InputError(f"{self.address}: '{rater}' is already a reference; nothing to do.")
            if not keep_decisions:
                decided = conn.execute(
                    "SELECT l.subject, l.lesion FROM live_consensus c JOIN lesions l "
                    "USING (lesion_key) WHERE c.lesion_key IN (SELECT lesion_key FROM "
                    "live_ratings WHERE rater = ?) ORDER BY l.subject, l.lesion",
                    (rater,)).fetchall()
                if decided:
                    shown = ", ".join(f"{s} lesion {n}" for s, n in decided[:3])
                    raise InputError(
                        f"{self.address}: {len(decided)} adjudicated decision(s) ({shown}"
                        f"{', ...' if len(decided) > 3 else ''}) concern lesions '{rater}' "
                        "labelled, and were made with its label shown as a rater's; nothing was "
                        "changed. Retract them first (`deep-prl ratings consensus ... --retract`),"
                        " or keep them with --keep-decisions (and revise them afterwards).")
            conn.execute("UPDATE raters SET kind = 'reference' WHERE rater = ?", (rater,))
        self._write(change)

    def register_subject(self, subject: str, fingerprint: str, lesions: pd.DataFrame) -> bool:
        """Record a subject's lesions once; ``False`` when already registered unchanged.

        A subject registered with a different mask fingerprint raises :class:`StoreError`:
        its ratings would otherwise be matched to the wrong lesions.
        """
        rows = [(subject, *map(_plain, row))
                for row in lesions[list(_LESION_COLUMNS)].itertuples(index=False)]

        def insert(conn: Connection) -> bool:
            known = conn.execute("SELECT mask_fingerprint FROM subjects WHERE subject = ?",
                                 (subject,)).fetchone()
            if known is not None:
                if known[0] != fingerprint:
                    raise self.mask_changed(subject)
                return False
            conn.execute("INSERT INTO subjects VALUES (?, ?, ?, ?)",
                         (subject, fingerprint, len(rows), utc_now()))
            conn.executemany(
                "INSERT INTO lesions (subject, lesion, x, y, z, volume_voxels, volume_mm3, "
                "confluent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return True
        return self._write(insert)

    def mask_changed(self, subject: str) -> StoreError:
        """The error for a subject whose mask no longer matches the registered lesions."""
        return StoreError(
            f"{self.address}: the lesion mask of subject '{subject}' differs from the one its "
            "lesions were registered with, so ratings could be matched to the wrong lesions. "
            "Restore the original mask, or start a new project for the new mask.")

    def fingerprints(self) -> dict[str, str]:
        """Mask fingerprint of every registered subject."""
        frame = self._query("SELECT subject, mask_fingerprint FROM subjects")
        return dict(zip(frame["subject"], frame["mask_fingerprint"], strict=True))

    def lesions(self) -> pd.DataFrame:
        """Registered lesions: ``lesion_key, subject, lesion, x, y, z, volume_voxels, ...``."""
        frame = self._query("SELECT * FROM lesions ORDER BY subject, lesion")
        frame["confluent"] = frame["confluent"].astype(bool)
        return frame

    def lesion_key(self, subject: str, lesion: int) -> int:
        """Internal key of a lesion; :class:`InputError` naming what is unknown."""
        key = self._keys.get((subject, int(lesion)))
        if key is None:
            _, rows = self._rows("SELECT lesion_key, subject, lesion FROM lesions")
            self._keys = {(s, int(n)): int(k) for k, s, n in rows}
            key = self._keys.get((subject, int(lesion)))
        if key is None:
            subjects = sorted({s for s, _ in self._keys})
            if subject not in subjects:
                shown = ", ".join(subjects[:5]) + (", ..." if len(subjects) > 5 else "")
                raise InputError(f"{self.address}: subject '{subject}' is not in this project "
                                 f"(known: {shown or 'none'}). Check the subject id.")
            ids = sorted(n for s, n in self._keys if s == subject)
            raise InputError(f"{self.address}: subject '{subject}' has no lesion {lesion} (ids "
                             f"{ids[0]}..{ids[-1]}). Check the lesion id.")
        return key

    # -- ratings -------------------------------------------------------------------------

    def add_rating(self, rater: str, subject: str, lesion: int, label: str,
                   **fields: Any) -> int:
        """Append one rating and return its row id once it is durable on disk.

        ``fields`` are the optional :class:`Rating` fields (confidence, reason, comment,
        seconds, session, provenance, repeat). A new rater id is registered on first use.
        """
        return self.add_ratings([Rating(rater, subject, lesion, label, **fields)])[0]

    def add_ratings(self, ratings: Iterable[Rating], *, kind: str = "rater",
                    where: Sequence[str] | None = None) -> list[int]:
        """Append many ratings in one transaction (all or none); return their row ids.

        ``kind="reference"`` stores a reference's labels (``Rating.rater`` is its id); an id
        already registered as the other kind is refused and nothing is written. ``where[i]``
        says where rating ``i`` comes from (e.g. a table's line) in the refusal of a bad one.
        """
        rows = []
        for i, rating in enumerate(ratings):
            try:
                rows.append(self._rating_row(rating, kind))
            except InputError as err:
                if where is None:
                    raise
                raise InputError(f"{where[i]}: {err}") from err
        now = utc_now()

        def insert(conn: Connection) -> list[int]:
            if rows:
                self._ensure_kind(conn, [row[0] for row in rows], kind)
            ids = []
            for start in range(0, len(rows), _ROWS_PER_INSERT):  # a statement per chunk of rows
                chunk = rows[start:start + _ROWS_PER_INSERT]
                values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                cursor = conn.execute(
                    "INSERT INTO ratings (rater, lesion_key, label, confidence, reason, "
                    "comment, seconds, session, queue_strategy, queue_position, "
                    f"model_version, repeat, package_version, created_at) VALUES {values} "
                    "RETURNING id", [v for row in chunk for v in (*row, __version__, now)])
                # ids ascend in the order of the rows (one writer at a time holds the lock)
                ids += sorted(int(found[0]) for found in cursor.fetchall())
            return ids
        return self._write(insert)

    def _rating_row(self, r: Rating, kind: str) -> tuple[Any, ...]:
        _check_id(r.rater, kind)
        if r.label not in schema.LABELS:
            raise InputError(f"label '{r.label}' of rater '{r.rater}' on {r.subject} lesion "
                             f"{r.lesion} is not one of {', '.join(schema.LABELS)}.")
        if r.confidence is not None and r.confidence not in range(1, 6):
            raise InputError(f"confidence {r.confidence} of rater '{r.rater}' on {r.subject} "
                             f"lesion {r.lesion} must be an integer from 1 to 5.")
        if r.reason is not None and r.reason not in self.exclusion_reasons:
            raise InputError(f"exclusion reason '{r.reason}' is not in this project's list "
                             f"({', '.join(self.exclusion_reasons)}); pick one of those or "
                             "add it to exclusion_reasons in the project config.")
        p = r.provenance
        return tuple(map(_plain, (
            r.rater, self.lesion_key(r.subject, r.lesion), r.label,
            None if r.confidence is None else int(r.confidence), r.reason, r.comment,
            r.seconds, r.session, p.strategy, p.position, p.model_version, int(r.repeat))))

    def undo(self, rater: str, subject: str, lesion: int, *, repeat: bool = False,
             session: str | None = None) -> int | None:
        """Retract the rater's current rating of a lesion; return the retracted row id.

        The rater's previous live rating of that lesion (if any) becomes current again, so
        repeated undos walk back through the history. ``None`` when there is nothing to undo.
        """
        key = self.lesion_key(subject, lesion)
        return self._retract(
            "SELECT id FROM live_ratings WHERE rater = ? AND lesion_key = ? AND repeat = ? "
            "ORDER BY id DESC LIMIT 1", (rater, key, int(repeat)), rater, session)

    def undo_last(self, rater: str, *, session: str | None = None) -> int | None:
        """Retract the rater's most recent live rating (of any lesion; within ``session``)."""
        where, params = "rater = ?", [rater]
        if session is not None:
            where, params = where + " AND session = ?", [rater, session]
        return self._retract(f"SELECT id FROM live_ratings WHERE {where} "
                             "ORDER BY id DESC LIMIT 1", params, rater, session)

    def _retract(self, select: str, params: Sequence[Any], rater: str,
                 session: str | None) -> int | None:
        def insert(conn: Connection) -> int | None:
            row = conn.execute(select, params).fetchone()
            if row is None:
                return None
            conn.execute(
                "INSERT INTO ratings (rater, lesion_key, action, retracts, repeat, session, "
                "package_version, created_at) SELECT rater, lesion_key, 'undo', id, repeat, "
                "?, ?, ? FROM ratings WHERE id = ?", (session, __version__, utc_now(), row[0]))
            return int(row[0])
        return self._write(insert)

    def rating(self, rating_id: int) -> dict[str, Any]:
        """One row of the history by id (e.g. the one :meth:`undo_last` retracted)."""
        frame = self._query(_JOINED.format(source="ratings") + " WHERE r.id = ?", (rating_id,))
        if frame.empty:
            raise InputError(f"{self.address}: no rating with id {rating_id}.")
        return frame.iloc[0].to_dict()

    def current(self, *, repeat: bool | None = False, rater: str | None = None,
                kind: str | None = "rater") -> pd.DataFrame:
        """Each rater's current rating per lesion (what consensus and agreement read).

        ``repeat`` selects first presentations (``False``), the unannounced repeats (``True``)
        or both (``None``); ``rater`` keeps one id's rows; ``kind`` keeps raters (default),
        references (``"reference"``) or both (``None``).
        """
        if kind is not None and kind not in schema.KINDS:
            raise InputError(f"kind '{kind}' is not one of {', '.join(schema.KINDS)}.")
        conditions = {"r.repeat = ?": None if repeat is None else int(repeat), "r.rater = ?": rater,
                      "k.kind = ?": kind}
        kept = {k: v for k, v in conditions.items() if v is not None}
        where = " WHERE " + " AND ".join(kept) if kept else ""
        return self._query(_JOINED.format(source="current_ratings") + where
                           + " ORDER BY l.subject, l.lesion, r.rater", tuple(kept.values()))

    def history(self) -> pd.DataFrame:
        """Every row ever written (raters' and references'), undo rows included, in order."""
        return self._query(_JOINED.format(source="ratings") + " ORDER BY r.id")

    # -- consensus and predictions --------------------------------------------------------

    def record_consensus(self, subject: str, lesion: int, label: str, *, by: str,
                         note: str | None = None, method: str = "adjudicated") -> int:
        """Append a consensus decision (the latest per lesion wins); durable on return.

        Deciding again revises the decision; the earlier rows stay in the history.
        """
        self._check_adjudicator(by)
        if label not in schema.LABELS:
            raise InputError(f"consensus label '{label}' for {subject} lesion {lesion} is not "
                             f"one of {', '.join(schema.LABELS)}.")
        if method not in schema.CONSENSUS_METHODS:
            raise InputError(f"consensus method '{method}' is not one of "
                             f"{', '.join(schema.CONSENSUS_METHODS)}.")
        key = self.lesion_key(subject, lesion)
        return self._write(lambda conn: int(conn.execute(
            "INSERT INTO consensus (lesion_key, label, method, decided_by, created_at, note, "
            "package_version) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (key, label, method, by, utc_now(), note, __version__)).fetchone()[0]))

    def retract_consensus(self, subject: str, lesion: int, *, by: str,
                          note: str | None = None) -> int | None:
        """Withdraw a lesion's live decision: the automatic rule applies to it again.

        Appends a ``retract`` row (durable on return) and returns its id; ``None`` (nothing
        written) when the lesion has no live decision.
        """
        self._check_adjudicator(by)
        key = self.lesion_key(subject, lesion)

        def insert(conn: Connection) -> int | None:
            live = conn.execute("SELECT id FROM live_consensus WHERE lesion_key = ?",
                                (key,)).fetchone()
            if live is None:
                return None
            return int(conn.execute(
                "INSERT INTO consensus (lesion_key, action, retracts, decided_by, created_at, "
                "note, package_version) VALUES (?, 'retract', ?, ?, ?, ?, ?) RETURNING id",
                (key, live[0], by, utc_now(), note, __version__)).fetchone()[0])
        return self._write(insert)

    def _check_adjudicator(self, by: str) -> None:
        """An adjudicator id must be a valid id, unless it is already known to the project (a
        registered id, or one that decided before ids were checked)."""
        _check_id(by, "adjudicator")
        if id_problem(by) is not None and self._query(
                "SELECT 1 FROM raters WHERE rater = ? UNION ALL "
                "SELECT 1 FROM consensus WHERE decided_by = ? LIMIT 1", (by, by)).empty:
            check_id(by, what="adjudicator id")

    def consensus_decisions(self) -> pd.DataFrame:
        """The live decision per lesion (its latest, unless retracted)."""
        return self._query(
            "SELECT c.lesion_key, l.subject, l.lesion, c.label, c.method, c.decided_by, "
            "c.created_at, c.note FROM live_consensus c JOIN lesions l USING (lesion_key) "
            "ORDER BY l.subject, l.lesion")

    def consensus_history(self) -> pd.DataFrame:
        """Every decision and retraction ever written, in order (``action``: decide/retract;
        a retraction's ``retracts`` is the id of the decision it withdrew)."""
        return self._query(
            "SELECT c.id, l.subject, l.lesion, c.lesion_key, c.action, c.label, c.method, "
            "c.retracts, c.decided_by, c.note, c.created_at, c.package_version "
            "FROM consensus c JOIN lesions l USING (lesion_key) ORDER BY c.id")

    def add_predictions(self, model_id: str, predictions: pd.DataFrame) -> int:
        """Store a model's predictions (``subject, lesion, probability[, uncertainty_sd, bald]``:
        the uncertainty measures of :mod:`napari_deep_prl.model.inference`)."""
        import pandas as pd

        now = utc_now()
        probability = predictions["probability"].astype(float)
        if not probability.between(0, 1).all():
            raise InputError(f"predictions of model '{model_id}': probabilities must lie in "
                             "[0, 1] (NaN is not allowed). Fix the model output.")
        missing = pd.Series(None, index=predictions.index)
        rows = [(self.lesion_key(s, n), model_id, _plain(p), _plain(sd), _plain(bald), now)
                for s, n, p, sd, bald in zip(predictions["subject"], predictions["lesion"], probability,
                                             predictions.get("uncertainty_sd", missing),
                                             predictions.get("bald", missing), strict=True)]
        self._write(lambda conn: conn.executemany(
            "INSERT INTO predictions (lesion_key, model_id, probability, uncertainty_sd, bald, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)", rows))
        return len(rows)

    def predictions(self, model_id: str | None = None) -> pd.DataFrame:
        """Latest prediction per lesion and model (of one model when ``model_id`` is given)."""
        where = "" if model_id is None else "AND p.model_id = ?"
        return self._query(
            "SELECT p.lesion_key, l.subject, l.lesion, p.model_id, p.probability, "
            "p.uncertainty_sd, p.bald, p.created_at FROM predictions p JOIN lesions l USING (lesion_key) "
            "WHERE p.id = (SELECT MAX(id) FROM predictions q WHERE q.lesion_key = p.lesion_key"
            f" AND q.model_id = p.model_id) {where} ORDER BY l.subject, l.lesion",
            () if model_id is None else (model_id,))

    def integrity_check(self) -> str:
        """The engine's check of the whole store (``"ok"`` when healthy)."""
        return self.engine.integrity_check()


_JOINED = (
    "SELECT r.id, r.rater, l.subject, l.lesion, r.lesion_key, r.action, r.label, r.retracts, "
    "r.repeat, r.confidence, r.reason, r.comment, r.created_at, r.seconds, r.session, "
    "r.package_version, r.queue_strategy, r.queue_position, r.model_version, k.kind "
    "FROM {source} r JOIN lesions l USING (lesion_key) JOIN raters k ON k.rater = r.rater"
)


#: Column names of the adjudication queue (one column per rater id), so not usable as rater ids.
RESERVED_RATER_IDS = frozenset({"subject", "lesion", "lesion_key", "consensus",
                                "consensus_method", "n_ratings", "decided_by", "note",
                                "pending", "adjudicated"})

#: Wide-export columns of references are ``reference_<id>``: no new rater id starts so.
REFERENCE_PREFIX = "reference_"


def _check_id(name: str, kind: str) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"{kind} id {name!r} must be a non-empty name without surrounding "
                         "spaces, e.g. 'rater1' or 'jdoe'.")


def _check_new_id(name: str, kind: str) -> None:
    """A new id must be a valid id (:func:`~napari_deep_prl.base.filenames.check_id`), and a new
    rater's not the name of a queue column; ids registered earlier keep working."""
    check_id(name, what=f"{kind} id", remedy="Choose another id.")
    if kind == "rater" and (name in RESERVED_RATER_IDS or name.startswith(REFERENCE_PREFIX)):
        raise InputError(f"rater id '{name}' is reserved for a column of the exports (so is "
                         f"any id starting with '{REFERENCE_PREFIX}'); choose another id.")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers for the drivers; NaN -> NULL; booleans -> 0/1 (an
    INTEGER column on both engines)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value != value:  # a numpy NaN
        return None
    return int(value) if isinstance(value, bool) else value
