"""The rating store: validation, append-only history and undo, migration, refusing bad files."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from ratings_support import lesion_rows, make_store

from napari_deep_prl import __version__
from napari_deep_prl.errors import InputError, StoreError
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.store import Provenance, Rating, RatingStore


@pytest.fixture
def store(tmp_path):
    with make_store(tmp_path / "ratings.sqlite") as opened:
        yield opened


def test_rating_is_visible_to_a_fresh_connection_with_all_fields(store):
    rating_id = store.add_rating(
        "alice", "sub-01", 2, "prl", confidence=4, reason="vein_adjacent", comment="rim at 3h",
        seconds=7.5, session="s1", provenance=Provenance("seeded_shuffle:0", 17, "model-3"))
    with RatingStore.open(store.path) as other:
        row = other.current().set_index("id").loc[rating_id]
        assert (row.rater, row.subject, row.lesion, row.label) == ("alice", "sub-01", 2, "prl")
        assert (row.confidence, row.reason, row.comment, row.seconds) == (4, "vein_adjacent",
                                                                           "rim at 3h", 7.5)
        assert (row.queue_strategy, row.queue_position, row.model_version) == (
            "seeded_shuffle:0", 17, "model-3")
        assert row.package_version == __version__ and row.session == "s1"
        assert list(other.raters()["rater"]) == ["alice"]  # registered on first use


@pytest.mark.parametrize("kwargs, message", [
    ({"label": "maybe"}, "not one of prl, not_prl, unsure"),
    ({"confidence": 6}, "from 1 to 5"),
    ({"confidence": 2.5}, "from 1 to 5"),
    ({"reason": "looks odd"}, "exclusion reason 'looks odd'"),
    ({"subject": "sub-99"}, "subject 'sub-99' is not in this project"),
    ({"lesion": 40}, "has no lesion 40"),
    ({"rater": " bob"}, "without surrounding spaces"),
    ({"rater": "consensus"}, "reserved"),
])
def test_invalid_ratings_are_refused_and_nothing_is_written(store, kwargs, message):
    args = {"rater": "bob", "subject": "sub-01", "lesion": 1, "label": "prl", **kwargs}
    with pytest.raises(InputError, match=message):
        store.add_rating(**args)
    assert store.history().empty


def test_batch_is_all_or_nothing(store):
    good = Rating("bob", "sub-00", 1, "prl")
    with pytest.raises(InputError):
        store.add_ratings([good, Rating("bob", "sub-00", 99, "prl")])
    assert store.history().empty
    assert len(store.add_ratings([good, Rating("bob", "sub-00", 2, "unsure")])) == 2


def test_changes_append_and_latest_is_current(store):
    store.add_rating("bob", "sub-00", 1, "prl")
    store.add_rating("bob", "sub-00", 1, "not_prl")
    store.add_rating("eve", "sub-00", 1, "unsure")
    current = store.current().set_index("rater")["label"]
    assert current.to_dict() == {"bob": "not_prl", "eve": "unsure"}
    assert list(store.history()["label"]) == ["prl", "not_prl", "unsure"]


def test_undo_walks_back_and_keeps_history(store):
    first = store.add_rating("bob", "sub-00", 1, "prl")
    second = store.add_rating("bob", "sub-00", 1, "not_prl")
    assert store.undo("bob", "sub-00", 1) == second
    assert store.current()["label"].tolist() == ["prl"]
    assert store.undo("bob", "sub-00", 1) == first
    assert store.current().empty
    assert store.undo("bob", "sub-00", 1) is None
    history = store.history()
    assert history["action"].tolist() == ["rate", "rate", "undo", "undo"]
    assert history["retracts"].dropna().astype(int).tolist() == [second, first]
    store.add_rating("bob", "sub-00", 1, "unsure")
    assert store.current()["label"].tolist() == ["unsure"]


def test_undo_last_takes_the_most_recent_rating_of_that_rater(store):
    store.add_rating("bob", "sub-00", 1, "prl")
    latest = store.add_rating("bob", "sub-01", 3, "not_prl")
    store.add_rating("eve", "sub-02", 1, "prl")
    assert store.undo_last("bob") == latest
    assert store.rating(latest)["subject"] == "sub-01"
    assert sorted(store.current()["rater"]) == ["bob", "eve"]


def test_repeats_do_not_replace_first_ratings(store):
    store.add_rating("bob", "sub-00", 1, "prl")
    store.add_rating("bob", "sub-00", 1, "not_prl", repeat=True)
    assert store.current()["label"].tolist() == ["prl"]
    assert store.current(repeat=True)["label"].tolist() == ["not_prl"]
    assert len(store.current(repeat=None)) == 2


def test_consensus_decisions_latest_wins(store):
    store.record_consensus("sub-00", 1, "prl", by="adj", note="first look")
    store.record_consensus("sub-00", 1, "not_prl", by="adj2", note="vein")
    decisions = store.consensus_decisions()
    assert len(decisions) == 1
    assert decisions.iloc[0][["label", "method", "decided_by", "note"]].tolist() == [
        "not_prl", "adjudicated", "adj2", "vein"]


def test_predictions_latest_per_model(store):
    table = pd.DataFrame({"subject": ["sub-00", "sub-00"], "lesion": [1, 2],
                          "probability": [0.2, 0.9], "uncertainty": [0.1, 0.05]})
    store.add_predictions("m1", table)
    store.add_predictions("m1", table.assign(probability=[0.3, 0.8]))
    store.add_predictions("m2", table)
    latest = store.predictions("m1")
    assert latest["probability"].tolist() == [0.3, 0.8]
    assert len(store.predictions()) == 4


def test_bad_predictions_are_refused(store):
    table = pd.DataFrame({"subject": ["sub-00"], "lesion": [1], "probability": [1.2]})
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        store.add_predictions("m1", table)
    assert store.predictions().empty


def test_numpy_values_are_stored_as_numbers(store):
    import numpy as np

    store.add_rating("bob", "sub-00", np.int64(1), "prl", confidence=np.int64(2),
                     seconds=np.float32(1.5), provenance=Provenance("s", np.int64(3)))
    row = store.current().iloc[0]
    assert (row.confidence, row.seconds, row.queue_position) == (2, 1.5, 3)


def test_changed_mask_is_refused(store):
    assert not store.register_subject("sub-00", "fingerprint-0", lesion_rows(4))
    with pytest.raises(StoreError, match="differs from the one its lesions were registered"):
        store.register_subject("sub-00", "another", lesion_rows(4))


def _v1_file(path):
    """A version-1 database as the first release wrote it, with one rating."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    for statement in schema.SCHEMA_V1:
        conn.execute(statement)
    conn.execute("INSERT INTO raters VALUES ('bob', 'Bob', '2025-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO subjects VALUES ('sub-00', 'fp', 1, '2025-01-01')")
    conn.execute("INSERT INTO lesions (subject, lesion, x, y, z, volume_voxels, volume_mm3, "
                 "confluent) VALUES ('sub-00', 1, 1, 2, 3, 10, 15, 0)")
    conn.execute("INSERT INTO ratings (rater, lesion_key, label, confidence, comment, "
                 "created_at, seconds, session) VALUES ('bob', 1, 'prl', 3, 'old', "
                 "'2025-01-01T00:00:01+00:00', 4.0, 'x')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_migration_from_v1_keeps_ratings_and_backs_up(tmp_path):
    path = tmp_path / "ratings.sqlite"
    _v1_file(path)
    with RatingStore.open(path) as store:
        row = store.current().iloc[0]
        assert (row.rater, row.label, row.confidence, row.comment, row["repeat"]) == (
            "bob", "prl", 3, "old", 0)
        store.add_rating("bob", "sub-00", 1, "not_prl", reason="other")
        assert store.undo("bob", "sub-00", 1) is not None
        assert store.current()["label"].tolist() == ["prl"]
        assert store.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()
    backup = sqlite3.connect(tmp_path / "ratings.sqlite.v1.bak")
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    assert backup.execute("SELECT rater, label FROM ratings").fetchall() == [("bob", "prl")]
    backup.close()


def test_corrupt_file_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "ratings.sqlite"
    with make_store(path, subjects=30, lesions=20) as store:
        store.add_ratings([Rating("bob", f"sub-{s:02d}", n, "prl")
                           for s in range(30) for n in range(1, 21)])
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * 4096
    data[2 * 4096:3 * 4096] = b"\xa5" * 4096  # scramble a whole page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt.*left untouched"):
        RatingStore.open(path)
    assert path.read_bytes() == bytes(data)


def test_non_sqlite_file_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "ratings.sqlite"
    path.write_bytes(b"subject,lesion\nsub-01,1\n")
    with pytest.raises(StoreError, match="not a rating database"):
        RatingStore.open(path, create=True)
    assert path.read_bytes() == b"subject,lesion\nsub-01,1\n"


def test_foreign_sqlite_file_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a napari-deep-prl rating database"):
        RatingStore.open(path, create=True)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ratings.sqlite"
    make_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer napari-deep-prl"):
        RatingStore.open(path)


def test_missing_file_is_not_created_without_asking(tmp_path):
    with pytest.raises(StoreError, match="no rating database here"):
        RatingStore.open(tmp_path / "ratings.sqlite")
    assert not (tmp_path / "ratings.sqlite").exists()


def test_store_uses_wal_and_full_sync(store):
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
