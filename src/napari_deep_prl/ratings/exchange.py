"""Lossless exchange of a rating store's history between stores of either engine.

A site that rates in its own store (a SQLite file, or its own PostgreSQL database) sends its
history to another as one **history file**: JSON lines, UTF-8. The first line is the header::

    {"format": "napari-deep-prl rating history", "version": 1, "schema_version": 4,
     "project": {"name": "study", "subjects_sha256": "..."}, "exported_at": "...",
     "package_version": "...", "counts": {"raters": 3, "ratings": 120, ...}}

and every other line is one row of a table of :mod:`.schema`, ``{"table": "ratings", ...}``
with its columns: ``raters``, ``subjects``, ``lesions``, ``ratings`` (undo rows, repeats,
sessions, seconds and provenance included), ``consensus`` (decisions and retractions) and
``predictions``. A lesion is named by ``subject`` and ``lesion``, never by the store's internal
key. A rating or consensus row keeps its ``id`` in the sending store only so that an undo or a
retraction can name the row it ``retracts``; ids are never imported (each store numbers its own
rows, and PostgreSQL's identity counters stay right).

A project's practice store (:mod:`.training`: reference sets and trainees' practice answers)
travels the same way, as a **practice history file**: its header names the format
``"napari-deep-prl practice history"`` (so it can never be merged into a study's store, nor a
study's file into a practice store), and it carries one more table, ``trained``: the raters
recorded as trained, with the set, the time and the score.

Why importing is safe to repeat and to merge:

* **The project is checked.** A project's identity is its registered subjects and their mask
  fingerprints (``subjects_sha256``); a file from another project is refused, naming the subjects
  that differ. Subjects and lesions are never added by an import.
* **A row already in the store is not added again.** A row is known by what it records: a rating
  by its rater, lesion, presentation (first or repeat), action and time; a consensus row by its
  lesion, action, adjudicator and time; a prediction by its lesion, model and time. Importing
  a file twice adds nothing; two sites' files merge into the store one shared store would have.
* **Conflicts are reported, not guessed.** A row with the key of a stored row but other content
  (another label at the same time, say), a rater registered as the other kind, or rows older
  than the store's latest row of the same rater and lesion (importing them would change which
  label is current) refuse the whole import, listing what conflicts; nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.base.tables import write_text
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.engine import Connection
from napari_deep_prl.ratings.store import RatingStore, utc_now

FORMAT = "napari-deep-prl rating history"
#: The format of a practice store's history file (with the ``trained`` table).
PRACTICE_FORMAT = "napari-deep-prl practice history"
#: The table of trained raters a practice history file adds; its rows are keyed by these.
TRAINED = "trained"
TRAINED_KEY = ("rater", "reference", "trained_at")
#: Version of the history file's layout (not of the store's schema).
VERSION = 1
#: Conflicts listed in a refusal (the rest are counted).
_SHOWN = 10


@dataclass(frozen=True)
class _Table:
    """How one history table is read, keyed and written."""

    name: str
    #: Columns in the file (``subject, lesion`` stand for the lesion's key).
    columns: tuple[str, ...]
    #: Columns that identify a row across stores.
    key: tuple[str, ...]
    #: Columns whose rows are ordered in time (the latest is current); ``()``: none.
    order: tuple[str, ...] = ()


_RATINGS = _Table("ratings", (
    "id", "rater", "subject", "lesion", "action", "label", "retracts", "repeat", "confidence",
    "reason", "comment", "created_at", "seconds", "session", "package_version", "queue_strategy",
    "queue_position", "model_version"),
    key=("rater", "subject", "lesion", "repeat", "action", "created_at"),
    order=("rater", "subject", "lesion", "repeat"))
_CONSENSUS = _Table("consensus", (
    "id", "subject", "lesion", "action", "label", "method", "retracts", "decided_by",
    "created_at", "note", "package_version"),
    key=("subject", "lesion", "action", "decided_by", "created_at"), order=("subject", "lesion"))
_PREDICTIONS = _Table("predictions", (
    "subject", "lesion", "model_id", "probability", "bald", "uncertainty_sd", "created_at"),
    key=("subject", "lesion", "model_id", "created_at"), order=("subject", "lesion", "model_id"))
_RATERS = ("rater", "display_name", "created_at", "kind")
_SUBJECTS = ("subject", "mask_fingerprint", "n_lesions", "registered_at")
_LESIONS = ("subject", "lesion", "x", "y", "z", "volume_voxels", "volume_mm3", "confluent")
#: Every table of the file, in the order it is written and read.
TABLES = ("raters", "subjects", "lesions", "ratings", "consensus", "predictions")
_COLUMNS = {"raters": _RATERS, "subjects": _SUBJECTS, "lesions": _LESIONS,
            **{spec.name: spec.columns for spec in (_RATINGS, _CONSENSUS, _PREDICTIONS)}}

_SELECT = {
    "raters": f"SELECT {', '.join(_RATERS)} FROM raters ORDER BY rater",
    "subjects": f"SELECT {', '.join(_SUBJECTS)} FROM subjects ORDER BY subject",
    "lesions": f"SELECT {', '.join(_LESIONS)} FROM lesions ORDER BY subject, lesion",
    "ratings": f"SELECT {', '.join('r.' + c if c in ('id', 'created_at') else c for c in _RATINGS.columns)} "
               "FROM ratings r JOIN lesions l USING (lesion_key) ORDER BY r.id",
    "consensus": f"SELECT {', '.join('c.' + c if c == 'id' else c for c in _CONSENSUS.columns)} "
                 "FROM consensus c JOIN lesions l USING (lesion_key) ORDER BY c.id",
    "predictions": f"SELECT {', '.join('p.' + c if c == 'created_at' else c for c in _PREDICTIONS.columns)} "
                   "FROM predictions p JOIN lesions l USING (lesion_key) ORDER BY p.id",
}


@dataclass
class ImportSummary:
    """What an import did: rows added and rows already in the store, per table."""

    added: dict[str, int] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = ("raters", *TABLES[3:], *([TRAINED] if TRAINED in self.added else []))
        return "; ".join(f"{table}: {self.added.get(table, 0)} added, {self.known.get(table, 0)} "
                         "already there" for table in shown)


def read_history(store: RatingStore) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as the history file holds them (ratings and consensus in id
    order). Open the store ``readonly`` for a consistent snapshot."""
    def read(conn: Connection) -> dict[str, list[dict[str, Any]]]:
        tables = {}
        for table in TABLES:
            cursor = conn.execute(_SELECT[table])
            names = [d[0] for d in cursor.description]
            tables[table] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in tables["lesions"]:
            row["confluent"] = None if row["confluent"] is None else int(row["confluent"])
        return tables
    return store.engine.read(read)


def project_identity(subjects: Iterable[dict[str, Any]]) -> str:
    """sha256 of the registered subjects and their mask fingerprints: the same in every store
    of one project, whatever its engine or site."""
    digest = hashlib.sha256()
    for row in sorted(subjects, key=lambda r: r["subject"]):
        digest.update(f"{row['subject']}\t{row['mask_fingerprint']}\t{row['n_lesions']}\n".encode())
    return digest.hexdigest()


def export_history(store: RatingStore, path: str | Path, *, name: str = "",
                   trained: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Write the store's whole history to the history file ``path`` (atomically); returns the
    rows written per table. ``name``: the project's name, for people reading the header.
    ``trained`` (a practice store's trained raters) makes it a practice history file."""
    tables = read_history(store)
    if trained is not None:
        tables[TRAINED] = trained
    header = {"format": FORMAT if trained is None else PRACTICE_FORMAT, "version": VERSION,
              "schema_version": schema.SCHEMA_VERSION,
              "project": {"name": name, "subjects_sha256": project_identity(tables["subjects"])},
              "exported_at": utc_now(), "package_version": __version__,
              "counts": {table: len(rows) for table, rows in tables.items()}}
    lines = [json.dumps(header, ensure_ascii=False)]
    lines += [json.dumps({"table": table, **row}, ensure_ascii=False)
              for table in tables for row in tables[table]]
    write_text(path, "\n".join(lines) + "\n")
    return header["counts"]


def is_practice_history(path: str | Path) -> bool:
    """Whether ``path`` names a practice history file (read from its header; any other file,
    readable or not, says ``False`` and is told apart by :func:`load_history`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.readline()).get("format") == PRACTICE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_history(path: str | Path, *,
                 practice: bool = False) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The header and rows of a history file (``practice``: of a practice history file);
    :class:`InputError` for a file that is not one, is damaged or truncated, or comes from a
    newer schema."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such history file. Give the file `deep-prl ratings export "
                         "--history -o FILE.jsonl` wrote.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: unreadable history file ({err}).") from err
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except ValueError as err:
        raise InputError(f"{path}: not a history file (a line is not JSON: {err}). Export it "
                         "again with `deep-prl ratings export --history -o FILE.jsonl`.") from err
    header = records[0] if records else None
    expected, other = (PRACTICE_FORMAT, FORMAT) if practice else (FORMAT, PRACTICE_FORMAT)
    if isinstance(header, dict) and header.get("format") == other:
        raise InputError(f"{path}: a {other.removeprefix('napari-deep-prl ')} file, which "
                         f"goes to a project's {'study' if practice else 'practice'} store, "
                         "not this one; `deep-prl ratings import --history` puts each file "
                         "where it belongs.")
    if not isinstance(header, dict) or header.get("format") != expected:
        raise InputError(f"{path}: not a napari-deep-prl history file (its first line must name "
                         f"the format '{expected}').")
    if header.get("version") != VERSION:
        raise InputError(f"{path}: history file version {header.get('version')} is not "
                         f"{VERSION}. Use the napari-deep-prl version that wrote it, or upgrade.")
    if not isinstance(header.get("schema_version"), int) \
            or header["schema_version"] > schema.SCHEMA_VERSION:
        raise InputError(f"{path}: written from a store of schema version "
                         f"{header.get('schema_version')}, newer than this napari-deep-prl's "
                         f"{schema.SCHEMA_VERSION}. Upgrade napari-deep-prl.")
    tables: dict[str, list[dict[str, Any]]] = {table: [] for table in TABLES}
    if practice:
        tables[TRAINED] = []
    for line, record in enumerate(records[1:], 2):
        if not isinstance(record, dict) or record.get("table") not in tables:
            raise InputError(f"{path}, line {line}: not a row of a known table ({', '.join(tables)}).")
        table = record.pop("table")
        if table == TRAINED:
            if not set(TRAINED_KEY) <= set(record):
                raise InputError(f"{path}, line {line}: a trained row must have the columns "
                                 f"{', '.join(TRAINED_KEY)}. Export the file again.")
        elif set(record) != set(_COLUMNS[table]):
            raise InputError(f"{path}, line {line}: a {table} row must have the columns "
                             f"{', '.join(_COLUMNS[table])} (it has {', '.join(record)}). Export "
                             "the file again.")
        tables[table].append(record)
    counts = {table: len(rows) for table, rows in tables.items()}
    if header.get("counts") != counts:
        raise InputError(f"{path}: the header counts {header.get('counts')} rows but the file "
                         f"holds {counts}; it is truncated or was edited. Export it again.")
    return header, tables


def import_history(store: RatingStore, path: str | Path) -> ImportSummary:
    """Add the rows of the history file ``path`` that the store lacks, in one transaction.

    Refused (:class:`InputError`, nothing written) when the file comes from another project or
    any row conflicts with the store (see the module's notes).
    """
    header, tables = load_history(path)
    return merge_history(store, header, tables, str(path))


def merge_history(store: RatingStore, header: dict[str, Any],
                  tables: dict[str, list[dict[str, Any]]], where: str) -> ImportSummary:
    """Add the rows of a loaded history file (:func:`load_history`) that the store lacks, in
    one transaction (see :func:`import_history`); ``where`` names the file in messages."""
    def merge(conn: Connection) -> ImportSummary:
        _check_project(conn, header, tables, where, store.address)
        summary, conflicts = ImportSummary(), []
        conflicts += _merge_raters(conn, tables["raters"], summary)
        keys = {(s, int(n)): int(k) for k, s, n in conn.execute(
            "SELECT lesion_key, subject, lesion FROM lesions").fetchall()}
        reasons = set(store.exclusion_reasons)
        for row in tables["ratings"]:
            if row.get("reason") is not None and row["reason"] not in reasons:
                conflicts.append(f"rating of {row['rater']} on {row['subject']} lesion "
                                 f"{row['lesion']} gives exclusion reason '{row['reason']}', "
                                 "which is not in this project's list (add it to "
                                 "exclusion_reasons in project.json)")
        for spec in (_RATINGS, _CONSENSUS, _PREDICTIONS):
            conflicts += _merge_rows(conn, spec, tables[spec.name], keys, summary)
        if conflicts:
            shown = "; ".join(conflicts[:_SHOWN])
            more = f" (and {len(conflicts) - _SHOWN} more)" if len(conflicts) > _SHOWN else ""
            raise InputError(f"{where}: {len(conflicts)} conflict(s) with {store.address}, so "
                             f"nothing was imported: {shown}{more}. Decide which rows are right "
                             "(the sites' raters or adjudicators know), fix the store or the "
                             "export they come from, and import again.")
        return summary
    return store.engine.write(merge)


def _check_project(conn: Connection, header: dict[str, Any], tables: dict[str, list[dict]],
                   where: str, address: str) -> None:
    """Refuse a file whose project (registered subjects and masks) is not the store's."""
    cursor = conn.execute(_SELECT["subjects"])
    names = [d[0] for d in cursor.description]
    mine = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    theirs = tables["subjects"]
    claimed = (header.get("project") or {}).get("subjects_sha256")
    if claimed == project_identity(mine) == project_identity(theirs):
        mine_lesions = {(s, int(n)) for s, n in conn.execute("SELECT subject, lesion FROM lesions")}
        if mine_lesions == {(r["subject"], int(r["lesion"])) for r in tables["lesions"]}:
            return
    here = {r["subject"]: r["mask_fingerprint"] for r in mine}
    there = {r["subject"]: r["mask_fingerprint"] for r in theirs}
    differ = [f"only in the file: {', '.join(sorted(set(there) - set(here))[:5])}",
              f"only in this project: {', '.join(sorted(set(here) - set(there))[:5])}",
              f"other masks: {', '.join(sorted(s for s in set(here) & set(there) if here[s] != there[s])[:5])}"]
    name = (header.get("project") or {}).get("name") or "another project"
    raise InputError(f"{where}: exported from {name!r}, a project other than {address} (its "
                     f"subjects or lesion masks differ: {'; '.join(d for d in differ if not d.endswith(': '))}); "
                     "nothing was imported. Import a history file of this project, made from the "
                     "same manifest and masks.")


def _merge_raters(conn: Connection, rows: Sequence[dict[str, Any]],
                  summary: ImportSummary) -> list[str]:
    """Register the file's raters and references; the earliest registration time stays."""
    known = {r[0]: r for r in conn.execute(f"SELECT {', '.join(_RATERS)} FROM raters").fetchall()}
    conflicts = []
    added = 0
    for row in rows:
        name, display, created, kind = (row[c] for c in _RATERS)
        if kind not in schema.KINDS:
            conflicts.append(f"id '{name}' has kind {kind!r}, not one of {', '.join(schema.KINDS)}")
        elif name not in known:
            conn.execute(f"INSERT INTO raters ({', '.join(_RATERS)}) VALUES (?, ?, ?, ?)",
                         (name, display, created, kind))
            added += 1
        elif known[name][3] != kind:
            conflicts.append(f"'{name}' is a {kind} in the file but a {known[name][3]} here")
        elif display is not None and known[name][1] not in (None, display):
            conflicts.append(f"'{name}' is named {display!r} in the file but {known[name][1]!r} "
                             "here")
        else:
            conn.execute("UPDATE raters SET display_name = COALESCE(display_name, ?), "
                         "created_at = CASE WHEN created_at > ? THEN ? ELSE created_at END "
                         "WHERE rater = ?", (display, created, created, name))
    summary.added["raters"], summary.known["raters"] = added, len(rows) - added
    return conflicts


def _merge_rows(conn: Connection, spec: _Table, rows: Sequence[dict[str, Any]],
                keys: dict[tuple[str, int], int], summary: ImportSummary) -> list[str]:
    """Append the rows of one table the store lacks, in the file's order, mapping lesions and
    retracted rows to this store's keys; return the conflicts."""
    cursor = conn.execute(_SELECT[spec.name])
    names = [d[0] for d in cursor.description]
    stored = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    retracts = "retracts" in spec.columns
    stored_by_id = {row["id"]: row for row in stored} if retracts else {}
    incoming_by_id = {row["id"]: row for row in rows} if retracts else {}
    by_key: dict[tuple, list[dict[str, Any]]] = {}
    latest: dict[tuple, str] = {}
    for row in stored:
        by_key.setdefault(_values(row, spec.key), []).append(row)
        group = _values(row, spec.order)
        latest[group] = max(latest.get(group, ""), row["created_at"])
    content = [c for c in spec.columns if c not in ("id", "retracts")]
    columns = [c for c in spec.columns if c not in ("id", "subject", "lesion")]
    insert = (f"INSERT INTO {spec.name} (lesion_key, {', '.join(columns)}) VALUES "
              f"({', '.join('?' * (len(columns) + 1))})" + (" RETURNING id" if retracts else ""))
    mapped: dict[Any, int] = {}
    conflicts = []
    added = known = 0
    for row in rows:
        try:
            lesion_key = keys[row["subject"], int(row["lesion"])]
        except (KeyError, TypeError, ValueError):
            conflicts.append(f"{spec.name} row names {row.get('subject')!r} lesion "
                             f"{row.get('lesion')!r}, which this project lacks")
            continue
        target = _retracted(row, incoming_by_id) if retracts else None
        match = next((old for old in by_key.get(_values(row, spec.key), [])
                      if _values(old, content) == _values(row, content)
                      and (not retracts or _retracted(old, stored_by_id) == target)), None)
        if match is not None:
            if retracts:
                mapped[row["id"]] = match["id"]
            known += 1
            continue
        what = f"{spec.name} row of {_describe(row, spec.key)}"
        same_key = by_key.get(_values(row, spec.key))
        if same_key:
            differ = [f"{c} {row.get(c)!r} in the file, {same_key[0].get(c)!r} here"
                      for c in content if row.get(c) != same_key[0].get(c)] or ["the row it retracts"]
            conflicts.append(f"{what} differs from the stored row with that key ({', '.join(differ)})")
            continue
        if latest.get(_values(row, spec.order), "") > row["created_at"]:
            conflicts.append(f"{what} is older than the store's latest row of "
                             f"{_describe(row, spec.order)}, so importing it after that row would "
                             "change which one is current")
            continue
        if retracts and row["retracts"] is not None and row["retracts"] not in mapped:
            conflicts.append(f"{what} retracts row {row['retracts']}, which the file lacks")
            continue
        values = [mapped[row["retracts"]] if c == "retracts" and row[c] is not None else row[c]
                  for c in columns]
        cursor = conn.execute(insert, [lesion_key, *values])
        if retracts:
            mapped[row["id"]] = int(cursor.fetchone()[0])
        added += 1
    summary.added[spec.name], summary.known[spec.name] = added, known
    return conflicts


def _values(row: dict[str, Any], columns: Iterable[str]) -> tuple:
    return tuple(row.get(c) for c in columns)


def _retracted(row: dict[str, Any], by_id: dict[Any, dict[str, Any]]) -> tuple | None:
    """The key of the row ``row`` retracts (``None`` for a row retracting nothing)."""
    if row.get("retracts") is None:
        return None
    old = by_id.get(row["retracts"])
    return None if old is None else tuple(sorted((k, str(v)) for k, v in old.items() if k != "id"
                                                 and k != "retracts"))


def _describe(row: dict[str, Any], columns: Iterable[str]) -> str:
    return ", ".join(f"{c} {row.get(c)!r}" for c in columns)

