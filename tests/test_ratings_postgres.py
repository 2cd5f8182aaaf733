"""A rating store on a PostgreSQL server: its credentials, its faults, its schema and migrations.

The store's behaviour on both engines is tested by the store, queue, consensus, durability and
project tests (their ``store_address`` fixture); this file holds what only a server has, and the
checks that the two engines' schemas stay one.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from postgres_server import PASSWORD, PASSWORD_ROLE, backend_in_commit
from ratings_support import make_store

from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.project import CONFIG_NAME, Project
from napari_deep_prl.ratings.review_session import ReviewSession
from napari_deep_prl.ratings.store import Rating, RatingStore

TABLES = ("raters", "subjects", "lesions", "ratings", "consensus", "predictions", "live_ratings",
          "current_ratings", "live_consensus")


@pytest.mark.parametrize("url", ["postgresql://ann:hunter2@db.example.org/prl",
                                 "postgres://ann@db.example.org/prl?password=hunter2"])
def test_a_password_in_the_store_url_is_refused_before_anything_is_written(tmp_path, manifest, url):
    with pytest.raises(InputError, match="carries a password.*~/.pgpass.*PGPASSFILE.*service") as err:
        Project.init(tmp_path / "study", manifest, {"store": url})
    assert "hunter2" not in str(err.value)
    assert not (tmp_path / "study").exists()


def test_a_password_written_into_project_json_is_refused(tmp_path, manifest, postgres_server):
    study = tmp_path / "study"
    Project.init(study, manifest, {"store": postgres_server.new_database()}).close()
    config = json.loads((study / CONFIG_NAME).read_text())
    config["store"] = config["store"].replace("deep_prl@", "deep_prl:hunter2@")
    (study / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(InputError, match="carries a password") as err:
        Project.open(study)
    assert "hunter2" not in str(err.value)


def test_wrong_credentials_are_told_and_pgpass_is_used(postgres_server, tmp_path, monkeypatch):
    url = postgres_server.new_database(owner=PASSWORD_ROLE)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(StoreError, match="refused the login.*password authentication failed.*"
                                         "~/.pgpass"):
        RatingStore.open(url, create=True)
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:*:{PASSWORD_ROLE}:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with make_store(url) as store:
        store.add_rating("ann", "sub-00", 1, "prl")
        assert store.current()["rater"].tolist() == ["ann"]


def test_a_server_down_keeps_the_pending_label_and_a_retry_stores_it(postgres_server, tmp_path,
                                                                     manifest):
    url = postgres_server.new_database()
    with Project.init(tmp_path / "study", manifest, {"store": url}) as project:
        assert not (project.root / "ratings.sqlite").exists()
        session = ReviewSession(project, "ann")
        shown = session.start()
        postgres_server.stop()
        try:
            with pytest.raises(StoreError, match=f"{url}: cannot reach the PostgreSQL server.*"
                                                 "try again: the next attempt reconnects"):
                session.record("prl", confidence=4)
            assert session.current == shown  # the review still shows the lesion to label
            with pytest.raises(StoreError, match="cannot reach the PostgreSQL server"):
                Project.open(project.root)
        finally:
            postgres_server.start()
        session.record("prl", confidence=4)  # the retry reconnects
        history = project.store.history()
    assert history[["rater", "subject", "lesion", "label", "confidence"]].values.tolist() == [
        ["ann", shown.subject, shown.lesion, "prl", 4]]


def _record_in_background(session, label):
    """Start ``session.record(label)`` in a thread; returns the thread and what it gives back
    (``{"id": ...}`` or ``{"error": ...}``)."""
    outcome = {}

    def record():
        try:
            outcome["id"] = session.record(label)
        except StoreError as err:
            outcome["error"] = err

    thread = threading.Thread(target=record)
    thread.start()
    return thread, outcome


def _labels(project):
    return project.store.history()[["rater", "subject", "lesion", "label"]].values.tolist()


def test_a_connection_cut_during_the_commit_of_a_stored_label_reports_it_saved_once(
        postgres_server, tmp_path, manifest):
    with Project.init(tmp_path / "study", manifest, {"store": postgres_server.new_database()}) \
            as project:
        session = ReviewSession(project, "ann")
        shown = session.start()
        with postgres_server.commits_hang(), postgres_server.admin() as admin:
            thread, outcome = _record_in_background(session, "prl")
            pid = backend_in_commit(admin)
            assert pid is not None, "the rating's commit never waited"
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the link goes mid-COMMIT
            thread.join()
        assert "error" not in outcome  # the server is asked: it wrote the label, so it is saved
        assert _labels(project) == [["ann", shown.subject, shown.lesion, "prl"]]
        following = session.advance()
        session.record("not_prl")  # the store goes on over its new connection
        assert _labels(project)[1:] == [["ann", following.subject, following.lesion, "not_prl"]]


def test_a_commit_cut_off_while_the_server_goes_down_is_unsettled_and_never_stored_twice(
        postgres_server, tmp_path, manifest):
    url = postgres_server.new_database()
    with Project.init(tmp_path / "study", manifest, {"store": url}) as project:
        session = ReviewSession(project, "ann")
        shown = session.start()
        with postgres_server.commits_hang(), postgres_server.admin() as admin:
            thread, outcome = _record_in_background(session, "prl")
            assert backend_in_commit(admin) is not None, "the rating's commit never waited"
            postgres_server.release_commits(reload=False)  # from the restart on
            postgres_server.stop()
            try:
                thread.join()
                assert "cannot be asked whether it wrote the change" in str(outcome["error"])
                assert session.current == shown  # the label stays on screen, to send again
            finally:
                postgres_server.start()
        with pytest.raises(StoreError, match="stored by the server after all, so this one was "
                                             "not written"):
            session.record("prl")  # the rater sends it again: it was stored, it stays once
        assert _labels(project) == [["ann", shown.subject, shown.lesion, "prl"]]
        assert session.own_label(shown) == "prl"
        session.record("not_prl")  # a change after that is written as usual
        assert [row[3] for row in _labels(project)] == ["prl", "not_prl"]


def test_a_label_whose_write_is_cut_off_before_its_commit_is_unsaved_and_stored_once_on_retry(
        postgres_server, tmp_path, manifest):
    url = postgres_server.new_database()
    with Project.init(tmp_path / "study", manifest, {"store": url}) as project:
        session = ReviewSession(project, "ann")
        shown = session.start()
        with postgres_server.admin(url.rsplit("/", 1)[1]) as admin:
            with admin.transaction():
                admin.execute("LOCK TABLE ratings IN SHARE MODE")  # the INSERT waits for it
                thread, outcome = _record_in_background(session, "prl")
                pid = None
                while pid is None:
                    pid = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name "
                                        "= 'napari-deep-prl' AND wait_event_type = 'Lock'"
                                        ).fetchone()
                admin.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
                thread.join()
        assert "the change was not written" in str(outcome["error"])
        assert session.current == shown and _labels(project) == []
        session.record("prl")  # the retry reconnects
        assert _labels(project) == [["ann", shown.subject, shown.lesion, "prl"]]


def test_a_missing_database_and_a_foreign_one_are_refused_and_left_untouched(postgres_server):
    with pytest.raises(StoreError, match="no such database.*createdb"):
        RatingStore.open(postgres_server.url("no_such_db"), create=True)
    empty = postgres_server.new_database()
    with pytest.raises(StoreError, match="no rating store in this database.*project init"):
        RatingStore.open(empty)
    foreign = postgres_server.new_database()
    with postgres_server.admin(foreign.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    for create, message in ((True, "already holds other tables"),
                            (False, "no napari-deep-prl rating store")):
        with pytest.raises(StoreError, match=message):
            RatingStore.open(foreign, create=create)
    for url in (empty, foreign):
        with postgres_server.admin(url.rsplit("/", 1)[1]) as conn:
            assert conn.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = 'public'").fetchall() == (
                [("notes",)] if url == foreign else [])


def test_a_newer_schema_is_refused_and_left_untouched(postgres_server):
    url = postgres_server.new_database()
    with make_store(url) as store:
        store.add_rating("ann", "sub-00", 1, "prl")
    database = url.rsplit("/", 1)[1]
    with postgres_server.admin(database) as conn:
        conn.execute("UPDATE store_info SET schema_version = %s", (schema.SCHEMA_VERSION + 1,))
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer napari-deep-prl.*left untouched"):
            RatingStore.open(url, readonly=readonly)
    with postgres_server.admin(database) as conn:
        assert conn.execute("SELECT schema_version FROM store_info").fetchone()[0] == (
            schema.SCHEMA_VERSION + 1)
        assert conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 1


def test_a_rater_account_needs_only_select_insert_update_and_is_told_what_it_lacks(
        postgres_server):
    url = postgres_server.new_database()
    make_store(url).close()
    database = url.rsplit("/", 1)[1]
    with postgres_server.admin() as conn:
        conn.execute("CREATE ROLE rater_ana LOGIN")
    with postgres_server.admin(database) as conn:
        conn.execute("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO rater_ana")
    with RatingStore.open(postgres_server.url(database, "rater_ana")) as store:
        store.add_rating("ana", "sub-00", 1, "prl")
        store.record_consensus("sub-00", 1, "prl", by="chief")
        with postgres_server.admin(database) as conn:
            conn.execute("REVOKE INSERT ON ratings FROM rater_ana")
        with pytest.raises(StoreError, match=r"lacks a privilege \(permission denied for table "
                                             r"ratings\).*the change was not written.*grant"):
            store.add_rating("ana", "sub-00", 2, "prl")
        assert len(store.history()) == 1


def test_commits_are_synchronous_whatever_the_server_default(postgres_server):
    url = postgres_server.new_database()
    with postgres_server.admin() as conn:
        conn.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = off")
    with make_store(url) as store:
        assert store.engine.conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_a_readonly_store_reads_a_snapshot_and_writes_nothing(postgres_server):
    url = postgres_server.new_database()
    with make_store(url) as writer, RatingStore.open(url, readonly=True) as reader:
        writer.add_rating("ann", "sub-00", 1, "prl")
        assert reader.history().empty  # taken when it was opened
        with pytest.raises(StoreError, match="opened read-only"):
            reader.add_rating("ann", "sub-00", 2, "prl")
    with RatingStore.open(url, readonly=True) as reader:
        assert len(reader.history()) == 1


def test_both_engines_have_the_same_tables_columns_and_order(tmp_path, postgres_server):
    def columns(store):
        return {t: store._rows(f"SELECT * FROM {t} LIMIT 0")[0] for t in TABLES}

    with make_store(tmp_path / "ratings.sqlite") as lite, make_store(
            postgres_server.new_database(icu_locale="en-US")) as server:
        assert columns(lite) == columns(server)
        for store in (lite, server):  # text sorts byte-wise on both, not by the server's locale
            store.add_ratings([Rating(r, "sub-00", 1, "prl") for r in ("b", "B", "a", "A1")])
        assert lite.current()["rater"].tolist() == server.current()["rater"].tolist() == [
            "A1", "B", "a", "b"]


def test_a_migration_runs_on_both_engines(store_address, monkeypatch):
    with make_store(store_address) as store:
        store.add_rating("ann", "sub-00", 1, "prl")
    step = ["ALTER TABLE raters ADD COLUMN site TEXT"]
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION - 1, step)
    monkeypatch.setitem(schema.POSTGRES_MIGRATIONS, schema.SCHEMA_VERSION - 1, step)
    with RatingStore.open(store_address) as store:
        assert store._rows("SELECT rater, site FROM raters") == (["rater", "site"],
                                                                 [("ann", None)])
        assert store.current()["label"].tolist() == ["prl"]
    monkeypatch.undo()
    with pytest.raises(StoreError, match="newer napari-deep-prl"):
        RatingStore.open(store_address)
    if not isinstance(store_address, str):  # SQLite keeps a copy of the file before migrating
        assert os.path.exists(f"{store_address}.v{schema.SCHEMA_VERSION}.bak")
