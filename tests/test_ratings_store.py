"""The rating store: validation, append-only history and undo, migration, refusing bad files.

Tests taking the ``store`` or ``store_address`` fixture run on both engines (SQLite and
PostgreSQL); the rest are about SQLite files."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from ratings_support import lesion_rows, make_store

from napari_deep_prl import __version__
from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.store import Provenance, Rating, RatingStore


@pytest.fixture
def store(store_address):
    with make_store(store_address) as opened:
        yield opened


def test_rating_is_visible_to_a_fresh_connection_with_all_fields(store):
    rating_id = store.add_rating(
        "alice", "sub-01", 2, "prl", confidence=4, reason="vein_adjacent", comment="rim at 3h",
        seconds=7.5, session="s1", provenance=Provenance("seeded_shuffle:0", 17, "model-3"))
    with RatingStore.open(store.address) as other:
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
                          "probability": [0.2, 0.9], "uncertainty_sd": [0.1, 0.05], "bald": [0.02, np.nan]})
    store.add_predictions("m1", table)
    store.add_predictions("m1", table.assign(probability=[0.3, 0.8]))
    store.add_predictions("m2", table[["subject", "lesion", "probability"]])
    latest = store.predictions("m1")
    assert latest["probability"].tolist() == [0.3, 0.8]
    assert latest["uncertainty_sd"].tolist() == [0.1, 0.05]
    assert latest["bald"].iloc[0] == 0.02 and pd.isna(latest["bald"].iloc[1])
    assert store.predictions("m2")[["uncertainty_sd", "bald"]].isna().all().all()
    assert len(store.predictions()) == 4


def test_migration_from_v3_keeps_predictions_their_uncertainty_named_bald(tmp_path):
    path = tmp_path / "ratings.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    for statement in schema.SCHEMA_V1 + schema.MIGRATIONS[1] + schema.MIGRATIONS[2]:
        conn.execute(statement)
    conn.execute("INSERT INTO subjects VALUES ('sub-00', 'fp', 1, '2025-01-01')")
    conn.execute("INSERT INTO lesions (subject, lesion, x, y, z, volume_voxels, volume_mm3, confluent) "
                 "VALUES ('sub-00', 1, 1, 2, 3, 10, 15, 0)")
    # what the previous version's project scoring stored: the mutual information as "uncertainty"
    conn.execute("INSERT INTO predictions (lesion_key, model_id, probability, uncertainty, created_at) "
                 "VALUES (1, 'abc/tta', 0.4, 0.25, '2025-01-01T00:00:00+00:00')")
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    with RatingStore.open(path) as store:
        stored = store.predictions("abc/tta")
        assert stored[["probability", "bald"]].values.tolist() == [[0.4, 0.25]]
        assert pd.isna(stored["uncertainty_sd"].iloc[0])
        store.add_predictions("abc/views", pd.DataFrame({"subject": ["sub-00"], "lesion": [1], "probability": [0.5],
                                                         "uncertainty_sd": [0.1], "bald": [0.03]}))
        assert len(store.predictions()) == 2
    backup = sqlite3.connect(tmp_path / "ratings.sqlite.v3.bak")
    assert backup.execute("SELECT uncertainty FROM predictions").fetchall() == [(0.25,)]
    backup.close()


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


def test_store_uses_wal_and_full_sync(tmp_path):
    store = make_store(tmp_path / "ratings.sqlite")
    conn = store.engine.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.close()


def test_references_never_mix_with_raters(store):
    store.add_rating("ann", "sub-00", 1, "prl")
    store.add_ratings([Rating("truth", "sub-00", n, "not_prl") for n in (1, 2)], kind="reference")
    assert store.raters()["rater"].tolist() == ["ann"]
    assert store.references()["reference"].tolist() == ["truth"]
    assert store.current()["rater"].tolist() == ["ann"]  # what consensus and kappa read
    assert store.current(kind="reference")["label"].tolist() == ["not_prl", "not_prl"]
    both = store.current(kind=None)
    assert sorted(zip(both["rater"], both["kind"])) == [
        ("ann", "rater"), ("truth", "reference"), ("truth", "reference")]
    before = len(store.history())
    with pytest.raises(InputError, match="'truth' is a reference, not a rater; choose another "
                                         "rater id"):
        store.add_rating("truth", "sub-00", 3, "prl")
    with pytest.raises(InputError, match="'truth' is a reference, not a rater"):
        store.add_rater("truth")
    with pytest.raises(InputError, match="'ann' is a rater, not a reference.*ratings reference"):
        store.add_ratings([Rating("ann", "sub-00", 3, "prl")], kind="reference")
    with pytest.raises(InputError, match="'ann' is a rater, not a reference"):
        store.check_kind(["ann"], "reference")
    assert len(store.history()) == before and store.raters()["rater"].tolist() == ["ann"]


@pytest.mark.parametrize("rater", ["reference_truth", "note", "pending", "decided_by"])
def test_new_raters_cannot_take_export_column_names(store, rater):
    with pytest.raises(InputError, match="reserved for a column of the exports"):
        store.add_rating(rater, "sub-00", 1, "prl")
    store.add_reference(rater)  # reference columns are prefixed: no clash
    assert store.references()["reference"].tolist() == [rater]


def test_a_rater_becomes_a_reference_unless_decisions_rest_on_it(store):
    store.add_ratings([Rating(r, "sub-00", n, "prl") for r in ("ann", "truth") for n in (1, 2)])
    store.record_consensus("sub-00", 2, "not_prl", by="chief")
    with pytest.raises(InputError, match=r"1 adjudicated decision\(s\) \(sub-00 lesion 2\).*"
                                         "nothing was changed.*--keep-decisions"):
        store.make_reference("truth")
    assert store.references().empty
    store.make_reference("truth", keep_decisions=True)
    assert store.references()["reference"].tolist() == ["truth"]
    assert set(store.current()["rater"]) == {"ann"}
    assert len(store.current(rater="truth", kind="reference")) == 2  # its labels stay
    with pytest.raises(InputError, match="already a reference"):
        store.make_reference("truth")
    with pytest.raises(InputError, match=r"no rater 'bob' in this project \(raters: ann\)"):
        store.make_reference("bob")


def test_consensus_is_revised_and_retracted_append_only(store):
    first = store.record_consensus("sub-00", 1, "prl", by="adj", note="rim")
    revised = store.record_consensus("sub-00", 1, "not_prl", by="adj2", note="vein")
    retraction = store.retract_consensus("sub-00", 1, by="adj", note="second look")
    assert store.consensus_decisions().empty
    assert store.retract_consensus("sub-00", 1, by="adj") is None  # nothing live: no row
    assert store.retract_consensus("sub-00", 2, by="adj") is None
    again = store.record_consensus("sub-00", 1, "unsure", by="adj")
    with RatingStore.open(store.address) as other:  # durable and visible on return
        history = other.consensus_history()
        decisions = other.consensus_decisions()
    assert history["id"].tolist() == [first, revised, retraction, again]
    assert history["action"].tolist() == ["decide", "decide", "retract", "decide"]
    assert history.loc[2, ["retracts", "decided_by", "note"]].tolist() == [revised, "adj",
                                                                           "second look"]
    assert history["label"].tolist()[:2] == ["prl", "not_prl"] and pd.isna(history["label"][2])
    assert (history["package_version"] == __version__).all()
    assert decisions[["lesion", "label"]].values.tolist() == [[1, "unsure"]]
    with pytest.raises(InputError, match="adjudicator id"):
        store.retract_consensus("sub-00", 1, by=" ")


def _v2_file(path):
    """A version-2 database as the previous release wrote it: a rater's rating and an
    adjudicated decision."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
    for statement in schema.SCHEMA_V1 + schema.MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO raters VALUES ('truth', NULL, '2025-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO subjects VALUES ('sub-00', 'fp', 2, '2025-01-01')")
    conn.executemany("INSERT INTO lesions (subject, lesion, x, y, z, volume_voxels, volume_mm3, "
                     "confluent) VALUES ('sub-00', ?, 1, 2, 3, 10, 15, 0)", [(1,), (2,)])
    conn.execute("INSERT INTO ratings (rater, lesion_key, label, created_at) VALUES "
                 "('truth', 1, 'prl', '2025-01-01T00:00:01+00:00')")
    conn.execute("INSERT INTO consensus (id, lesion_key, label, method, decided_by, created_at, "
                 "note) VALUES (7, 2, 'not_prl', 'adjudicated', 'chief', "
                 "'2025-01-02T00:00:00+00:00', 'old decision')")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()


def test_migration_from_v2_keeps_decisions_and_makes_everyone_a_rater(tmp_path):
    path = tmp_path / "ratings.sqlite"
    _v2_file(path)
    with RatingStore.open(path) as store:
        assert store.raters()["rater"].tolist() == ["truth"] and store.references().empty
        assert store.current()["kind"].tolist() == ["rater"]
        decisions = store.consensus_decisions()
        assert decisions[["lesion", "label", "decided_by", "note"]].values.tolist() == [
            [2, "not_prl", "chief", "old decision"]]
        assert store.consensus_history()[["id", "action"]].values.tolist() == [[7, "decide"]]
        retraction = store.retract_consensus("sub-00", 2, by="chief")
        assert retraction > 7 and store.consensus_decisions().empty
        store.make_reference("truth")
        assert store.references()["reference"].tolist() == ["truth"]
        assert store.integrity_check() == "ok"
        assert store.engine.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()
    backup = sqlite3.connect(tmp_path / "ratings.sqlite.v2.bak")
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 2
    assert backup.execute("SELECT id, label FROM consensus").fetchall() == [(7, "not_prl")]
    backup.close()
