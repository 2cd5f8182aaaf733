"""Lossless exchange of a store's history (ratings/exchange.py) between stores of either engine."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from ratings_support import lesion_rows, make_store, store_content

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError
from napari_deep_prl.ratings import exchange
from napari_deep_prl.ratings import store as store_module
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.store import Provenance, Rating

OTHER = {"sqlite": "postgresql", "postgresql": "sqlite"}


@pytest.fixture
def new_store(request, tmp_path):
    """Factory of new stores (3 subjects x 4 lesions) on an engine: ``new_store(engine)``."""
    count = itertools.count()
    opened = []

    def make(engine: str):
        if engine == "sqlite":
            address = tmp_path / f"store{next(count)}.sqlite"
        else:
            address = request.getfixturevalue("postgres_server").new_database()
        opened.append(make_store(address))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def clock(monkeypatch):
    """The stores' clock, set by the test: ``clock.now = "..."``."""
    class Clock:
        now = "2026-01-01T00:00:00.000+00:00"

    monkeypatch.setattr(store_module, "utc_now", lambda: Clock.now)
    return Clock


# (time, site, action): the sites rate disjoint subjects (ana sub-01, ben sub-02) and overlapping
# lesions (both on sub-00), with undos, repeats, provenance, references, consensus and predictions.
ACTIONS = [
    ("09:00", "a", lambda s: s.add_ratings([
        Rating("ana", "sub-00", 1, "prl", confidence=4, seconds=12.5, session="a1",
               provenance=Provenance("model_order", 0, "m1")),
        Rating("ana", "sub-00", 2, "not_prl", reason="central_vein", comment="vein", session="a1")])),
    ("09:01", "b", lambda s: s.add_rating("ben", "sub-00", 1, "unsure", session="b1", seconds=3.25)),
    ("09:02", "a", lambda s: s.add_rating("ana", "sub-01", 3, "prl", session="a1")),
    ("09:03", "b", lambda s: s.add_rating("ben", "sub-00", 2, "not_prl", session="b1")),
    ("09:04", "a", lambda s: s.undo("ana", "sub-01", 3, session="a1")),
    ("09:05", "b", lambda s: s.add_rating("ben", "sub-02", 4, "prl", session="b1")),
    ("09:06", "a", lambda s: s.add_rating("ana", "sub-01", 3, "not_prl", session="a1")),
    ("09:07", "b", lambda s: s.add_rating("ben", "sub-00", 1, "prl", session="b2")),
    ("09:08", "a", lambda s: s.add_rating("ana", "sub-00", 1, "prl", repeat=True, session="a2")),
    ("09:09", "b", lambda s: s.add_ratings([Rating("truth", "sub-02", 4, "prl")], kind="reference")),
    ("09:10", "a", lambda s: s.add_rater("ana", "Ana A.")),
    ("09:11", "b", lambda s: s.record_consensus("sub-00", 2, "not_prl", by="ben", note="obvious")),
    ("09:12", "a", lambda s: s.record_consensus("sub-01", 3, "prl", by="ana")),
    ("09:13", "a", lambda s: s.retract_consensus("sub-01", 3, by="ana", note="second look")),
    ("09:14", "b", lambda s: s.add_predictions("m1", pd.DataFrame({
        "subject": ["sub-00", "sub-02"], "lesion": [1, 4], "probability": [0.9, 0.125],
        "uncertainty_sd": [0.05, None], "bald": [0.01, 0.02]}))),
]


def _run(actions, stores, clock) -> None:
    for time, site, action in actions:
        clock.now = f"2026-01-01T{time}:00.000+00:00"
        action(stores[site])


def _assert_same(store, expected) -> None:
    """``store`` records what ``expected`` does, ids aside: the same rows of every table and
    the same current ratings, decisions and predictions."""
    assert store_content(store) == store_content(expected)
    for read in (lambda s: s.current(repeat=None, kind=None).drop(columns=["id", "lesion_key"]),
                 lambda s: s.consensus_decisions().drop(columns="lesion_key"),
                 lambda s: s.predictions().drop(columns="lesion_key")):
        pd.testing.assert_frame_equal(read(store), read(expected))


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_merged_exports_equal_one_shared_store(engine, new_store, clock, tmp_path):
    sites = {"a": new_store(engine), "b": new_store(engine)}
    shared = new_store(engine)
    _run(ACTIONS, sites, clock)
    _run(ACTIONS, {"a": shared, "b": shared}, clock)
    files = {}
    for site, store in sites.items():
        files[site] = tmp_path / f"site-{site}.jsonl"
        exchange.export_history(store, files[site], name="study")
    merged = new_store(OTHER[engine])
    first = exchange.import_history(merged, files["a"])
    second = exchange.import_history(merged, files["b"])
    assert first.added["ratings"] == 6 and second.added["ratings"] == 5
    _assert_same(merged, shared)
    assert merged.current(rater="ana")["label"].tolist() == ["prl", "not_prl", "not_prl"]

    again = exchange.import_history(merged, files["b"])
    assert sum(again.added.values()) == 0 and again.known["ratings"] == 5
    _assert_same(merged, shared)
    clock.now = "2026-01-01T10:00:00.000+00:00"  # the store numbers its own rows after an import
    assert merged.add_rating("ben", "sub-02", 1, "prl") == merged.history()["id"].max()


def test_round_trip_keeps_every_field(new_store, clock, tmp_path):
    source = new_store("sqlite")
    _run(ACTIONS, {"a": source, "b": source}, clock)
    exchange.export_history(source, tmp_path / "all.jsonl")
    copy = new_store("sqlite")
    exchange.import_history(copy, tmp_path / "all.jsonl")
    _assert_same(copy, source)
    header = json.loads((tmp_path / "all.jsonl").read_text().splitlines()[0])
    assert header["format"] == exchange.FORMAT and header["schema_version"] == 4
    assert header["counts"]["ratings"] == 11 and header["counts"]["lesions"] == 12


def test_conflicting_duplicates_are_reported_and_nothing_is_imported(new_store, clock, tmp_path):
    here, there = new_store("sqlite"), new_store("sqlite")
    clock.now = "2026-01-01T10:00:00.000+00:00"
    here.add_rating("ana", "sub-00", 1, "prl")
    there.add_rating("ana", "sub-00", 1, "not_prl")  # same rater, lesion and time, other label
    clock.now = "2026-01-01T10:01:00.000+00:00"
    there.add_rating("ben", "sub-00", 2, "prl")
    exchange.export_history(there, tmp_path / "there.jsonl")
    with pytest.raises(InputError, match=r"1 conflict.*nothing was imported.*'ana'.*'sub-00'.*"
                                         r"differs .*label 'not_prl' in the file, 'prl' here"):
        exchange.import_history(here, tmp_path / "there.jsonl")
    assert here.history()["rater"].tolist() == ["ana"]


def test_older_rows_after_newer_ones_are_reported(new_store, clock, tmp_path):
    here, there = new_store("sqlite"), new_store("sqlite")
    clock.now = "2026-01-01T10:00:00.000+00:00"
    there.add_rating("ana", "sub-00", 1, "prl")
    clock.now = "2026-01-01T11:00:00.000+00:00"
    here.add_rating("ana", "sub-00", 1, "not_prl")
    exchange.export_history(there, tmp_path / "there.jsonl")
    with pytest.raises(InputError, match="older than the store's latest row"):
        exchange.import_history(here, tmp_path / "there.jsonl")
    assert here.current()["label"].tolist() == ["not_prl"]


def test_kind_conflict_is_reported(new_store, tmp_path):
    here, there = new_store("sqlite"), new_store("sqlite")
    here.add_rater("expert")
    there.add_reference("expert")
    exchange.export_history(there, tmp_path / "there.jsonl")
    with pytest.raises(InputError, match="'expert' is a reference in the file but a rater here"):
        exchange.import_history(here, tmp_path / "there.jsonl")


def test_export_of_another_project_is_refused(new_store, tmp_path):
    here = new_store("sqlite")
    other = new_store("sqlite")
    other.register_subject("sub-99", "fingerprint-99", lesion_rows(2))
    other.add_rating("ana", "sub-99", 1, "prl")
    exchange.export_history(other, tmp_path / "other.jsonl", name="other study")
    with pytest.raises(InputError, match=r"'other study', a project other than .*only in the file: "
                                         r"sub-99.*nothing was imported"):
        exchange.import_history(here, tmp_path / "other.jsonl")
    assert here.history().empty and here.raters().empty


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:-1], "truncated"),
    (lambda lines: [json.dumps({**json.loads(lines[0]), "schema_version": 99}), *lines[1:]],
     "newer than"),
    (lambda lines: ["{}", *lines[1:]], "not a napari-deep-prl history file"),
    (lambda lines: [*lines[:-1], lines[-1].replace('"label"', '"lable"')],
     "line 18: a ratings row must have the columns id, rater"),
])
def test_damaged_or_foreign_files_are_refused(new_store, tmp_path, edit, message):
    source = new_store("sqlite")
    source.add_rating("ana", "sub-00", 1, "prl")
    path = tmp_path / "history.jsonl"
    exchange.export_history(source, path)
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(InputError, match=message):
        exchange.import_history(new_store("sqlite"), path)


def test_cli_exports_and_merges_a_history_file(tmp_path, manifest, capsys):
    def deep_prl(*args):
        assert cli.main([str(a) for a in args]) == 0

    for site in ("site-a", "site-b"):
        deep_prl("project", "init", tmp_path / site, "--manifest", manifest)
    deep_prl("ratings", "add", tmp_path / "site-a", "--rater", "ana", "--subject", "sub-01",
             "--lesion", 1, "--label", "prl", "--confidence", 5)
    deep_prl("ratings", "add", tmp_path / "site-b", "--rater", "ben", "--subject", "sub-01",
             "--lesion", 1, "--label", "not_prl")
    deep_prl("ratings", "export", tmp_path / "site-a", "--history", "-o", tmp_path / "a.jsonl")
    deep_prl("ratings", "export", tmp_path / "site-a", "--history", "-o", tmp_path / "a.tsv")
    assert pd.read_csv(tmp_path / "a.tsv", sep="\t")["rater"].tolist() == ["ana"]
    capsys.readouterr()
    deep_prl("ratings", "import", tmp_path / "site-b", "--history", tmp_path / "a.jsonl")
    assert "ratings: 1 added, 0 already there" in capsys.readouterr().err
    deep_prl("ratings", "import", tmp_path / "site-b", "--history", tmp_path / "a.jsonl")
    assert "ratings: 0 added, 1 already there" in capsys.readouterr().err
    with Project.open(tmp_path / "site-b") as merged:
        current = merged.store.current()
        assert current[["rater", "label", "session"]].values.tolist() == [
            ["ana", "prl", "cli"], ["ben", "not_prl", "cli"]]
        assert current["confidence"].iloc[0] == 5 and pd.isna(current["confidence"].iloc[1])
    assert cli.main(["ratings", "import", str(tmp_path / "site-b"), "table.tsv", "--history",
                     str(tmp_path / "a.jsonl")]) != 0
    assert "--history FILE imports one history file, without" in capsys.readouterr().err
