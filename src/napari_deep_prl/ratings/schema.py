"""The rating database's schema, its version and the migrations between versions.

The version lives in ``PRAGMA user_version`` and the file is tagged with ``PRAGMA
application_id`` so that a foreign SQLite file is recognised and refused rather than written
to. Version history:

* **1** – raters, lesions (per subject, with the mask fingerprint), ratings (label, confidence,
  comment, time, seconds, session) and consensus decisions.
* **2** – ratings gain an exclusion reason, an ``undo`` action (a row retracting an earlier
  row), the repeat flag of the intra-rater design and provenance (package version, queue
  strategy and position, model version); a predictions table is added.
* **3** – raters gain a ``kind``: ``rater`` (a person whose labels vote) or ``reference`` (a
  ground truth or an expert read the raters are compared with, which never votes); consensus
  rows gain an ``action``: ``decide`` or ``retract`` (a row withdrawing the lesion's live
  decision, so the automatic rule applies again), with ``retracts`` and the package version.
* **4** – predictions carry both uncertainty measures of a model's samples (networks × views):
  their standard deviation ``uncertainty_sd`` (new) and their mutual information ``bald`` (the
  former ``uncertainty`` column, which held it).

A migration is a list of SQL statements run inside the transaction that bumps the version.

A PostgreSQL store (:mod:`.postgres`) is made straight at version :data:`POSTGRES_BASE_VERSION`
from :data:`POSTGRES_SCHEMA`, the same tables, columns (in the same order), constraints and views
in PostgreSQL's DDL; its version lives in the ``store_info`` table. A schema change after it adds
its statements to both :data:`MIGRATIONS` and :data:`POSTGRES_MIGRATIONS`.
"""

from __future__ import annotations

#: ``PRAGMA application_id`` of a napari-deep-prl rating database ("dPRL").
APPLICATION_ID = 0x6450524C

SCHEMA_VERSION = 4

LABELS = ("prl", "not_prl", "unsure")

DEFAULT_EXCLUSION_REASONS = (
    "central_vein", "vein_adjacent", "confluent", "artefact", "too_small", "other",
)

CONSENSUS_METHODS = ("unanimous", "majority", "adjudicated")

#: How agreement statistics treat ``unsure``: a third category, or lesions any compared rater
#: called unsure left out.
UNSURE_MODES = ("category", "exclude")

#: What an id in the ``raters`` table is: a rater votes; a reference is only compared with.
KINDS = ("rater", "reference")

SCHEMA_V1 = [
    """CREATE TABLE raters (
        rater TEXT PRIMARY KEY,
        display_name TEXT,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE subjects (
        subject TEXT PRIMARY KEY,
        mask_fingerprint TEXT NOT NULL,
        n_lesions INTEGER NOT NULL,
        registered_at TEXT NOT NULL)""",
    """CREATE TABLE lesions (
        lesion_key INTEGER PRIMARY KEY,
        subject TEXT NOT NULL REFERENCES subjects(subject),
        lesion INTEGER NOT NULL,
        x REAL, y REAL, z REAL,
        volume_voxels INTEGER,
        volume_mm3 REAL,
        confluent INTEGER,
        UNIQUE (subject, lesion))""",
    """CREATE TABLE ratings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rater TEXT NOT NULL REFERENCES raters(rater),
        lesion_key INTEGER NOT NULL REFERENCES lesions(lesion_key),
        label TEXT NOT NULL CHECK (label IN ('prl', 'not_prl', 'unsure')),
        confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
        comment TEXT,
        created_at TEXT NOT NULL,
        seconds REAL,
        session TEXT)""",
    """CREATE TABLE consensus (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lesion_key INTEGER NOT NULL REFERENCES lesions(lesion_key),
        label TEXT NOT NULL CHECK (label IN ('prl', 'not_prl', 'unsure')),
        method TEXT NOT NULL,
        decided_by TEXT,
        created_at TEXT NOT NULL,
        note TEXT)""",
    "CREATE INDEX ratings_by_lesion ON ratings (lesion_key)",
]

# SQLite cannot add CHECK constraints or foreign keys to an existing table, so version 2
# rebuilds ``ratings``: old rows keep their ids and become ``rate`` rows of first presentations.
MIGRATE_V1_TO_V2 = [
    "ALTER TABLE ratings RENAME TO ratings_v1",
    """CREATE TABLE ratings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rater TEXT NOT NULL REFERENCES raters(rater),
        lesion_key INTEGER NOT NULL REFERENCES lesions(lesion_key),
        action TEXT NOT NULL DEFAULT 'rate' CHECK (action IN ('rate', 'undo')),
        label TEXT CHECK (label IN ('prl', 'not_prl', 'unsure')),
        retracts INTEGER REFERENCES ratings(id),
        repeat INTEGER NOT NULL DEFAULT 0 CHECK (repeat IN (0, 1)),
        confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
        reason TEXT,
        comment TEXT,
        created_at TEXT NOT NULL,
        seconds REAL,
        session TEXT,
        package_version TEXT,
        queue_strategy TEXT,
        queue_position INTEGER,
        model_version TEXT,
        CHECK ((action = 'rate' AND label IS NOT NULL AND retracts IS NULL)
            OR (action = 'undo' AND label IS NULL AND retracts IS NOT NULL)))""",
    """INSERT INTO ratings (id, rater, lesion_key, label, confidence, comment, created_at,
                           seconds, session)
       SELECT id, rater, lesion_key, label, confidence, comment, created_at, seconds, session
       FROM ratings_v1""",
    "DROP TABLE ratings_v1",
    "CREATE INDEX ratings_by_lesion ON ratings (lesion_key)",
    "CREATE INDEX ratings_current ON ratings (rater, lesion_key, repeat, id)",
    "CREATE UNIQUE INDEX ratings_retracted ON ratings (retracts) WHERE retracts IS NOT NULL",
    "CREATE INDEX consensus_by_lesion ON consensus (lesion_key, id)",
    """CREATE TABLE predictions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lesion_key INTEGER NOT NULL REFERENCES lesions(lesion_key),
        model_id TEXT NOT NULL,
        probability REAL NOT NULL CHECK (probability BETWEEN 0 AND 1),
        uncertainty REAL,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX predictions_by_model ON predictions (model_id, lesion_key, id)",
    # A rating is live while no undo row retracts it; the current rating of a rater on a
    # lesion (per presentation: first or repeat) is the latest live one.
    """CREATE VIEW live_ratings AS
       SELECT r.* FROM ratings r
       WHERE r.action = 'rate'
         AND NOT EXISTS (SELECT 1 FROM ratings u WHERE u.retracts = r.id)""",
    """CREATE VIEW current_ratings AS
       SELECT * FROM (
           SELECT l.*, ROW_NUMBER() OVER (
               PARTITION BY l.rater, l.lesion_key, l.repeat ORDER BY l.id DESC) AS rank_
           FROM live_ratings l)
       WHERE rank_ = 1""",
]

# Version 3: the kind of each id; the consensus table is rebuilt (a retraction has no label, so
# ``label`` loses its NOT NULL): old decisions keep their ids and become ``decide`` rows.
MIGRATE_V2_TO_V3 = [
    "ALTER TABLE raters ADD COLUMN kind TEXT NOT NULL DEFAULT 'rater' "
    "CHECK (kind IN ('rater', 'reference'))",
    "ALTER TABLE consensus RENAME TO consensus_v2",
    """CREATE TABLE consensus (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lesion_key INTEGER NOT NULL REFERENCES lesions(lesion_key),
        action TEXT NOT NULL DEFAULT 'decide' CHECK (action IN ('decide', 'retract')),
        label TEXT CHECK (label IN ('prl', 'not_prl', 'unsure')),
        method TEXT,
        retracts INTEGER REFERENCES consensus(id),
        decided_by TEXT,
        created_at TEXT NOT NULL,
        note TEXT,
        package_version TEXT,
        CHECK ((action = 'decide' AND label IS NOT NULL AND method IS NOT NULL
                AND retracts IS NULL)
            OR (action = 'retract' AND label IS NULL AND method IS NULL
                AND retracts IS NOT NULL)))""",
    """INSERT INTO consensus (id, lesion_key, label, method, decided_by, created_at, note)
       SELECT id, lesion_key, label, method, decided_by, created_at, note FROM consensus_v2""",
    "DROP TABLE consensus_v2",
    "CREATE INDEX consensus_by_lesion ON consensus (lesion_key, id)",
    # A lesion's live decision is its latest consensus row, unless that row is a retraction.
    """CREATE VIEW live_consensus AS
       SELECT c.* FROM consensus c
       WHERE c.action = 'decide'
         AND c.id = (SELECT MAX(id) FROM consensus d WHERE d.lesion_key = c.lesion_key)""",
]

# Version 4: the two uncertainty measures of a prediction side by side. The ``uncertainty``
# that earlier versions stored was the mutual information (BALD) of the model's samples.
MIGRATE_V3_TO_V4 = [
    "ALTER TABLE predictions RENAME COLUMN uncertainty TO bald",
    "ALTER TABLE predictions ADD COLUMN uncertainty_sd REAL",
]

#: ``MIGRATIONS[v]`` takes a database from version ``v`` to ``v + 1``.
MIGRATIONS: dict[int, list[str]] = {1: MIGRATE_V1_TO_V2, 2: MIGRATE_V2_TO_V3, 3: MIGRATE_V3_TO_V4}


#: The version a PostgreSQL store is created at (the first with PostgreSQL stores).
POSTGRES_BASE_VERSION = 4

#: ``store_info.application`` of a napari-deep-prl store in PostgreSQL (SQLite's application_id).
POSTGRES_APPLICATION = "napari-deep-prl rating store"

# Text compares and sorts byte-wise, as in SQLite (not by the database's locale); keys are
# identity columns (SQLite's AUTOINCREMENT: never reused); floating point is double precision.
_TEXT = 'TEXT COLLATE "C"'
_KEY = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
_REAL = "DOUBLE PRECISION"

#: The schema at :data:`POSTGRES_BASE_VERSION` in PostgreSQL's DDL (``store_info`` at version 0:
#: the migration that runs these sets it).
POSTGRES_SCHEMA = [
    f"CREATE TABLE store_info (application {_TEXT} NOT NULL, schema_version INTEGER NOT NULL)",
    f"INSERT INTO store_info VALUES ('{POSTGRES_APPLICATION}', 0)",
    f"""CREATE TABLE raters (
        rater {_TEXT} PRIMARY KEY,
        display_name {_TEXT},
        created_at {_TEXT} NOT NULL,
        kind {_TEXT} NOT NULL DEFAULT 'rater' CHECK (kind IN ('rater', 'reference')))""",
    f"""CREATE TABLE subjects (
        subject {_TEXT} PRIMARY KEY,
        mask_fingerprint {_TEXT} NOT NULL,
        n_lesions INTEGER NOT NULL,
        registered_at {_TEXT} NOT NULL)""",
    f"""CREATE TABLE lesions (
        lesion_key {_KEY},
        subject {_TEXT} NOT NULL REFERENCES subjects(subject),
        lesion INTEGER NOT NULL,
        x {_REAL}, y {_REAL}, z {_REAL},
        volume_voxels INTEGER,
        volume_mm3 {_REAL},
        confluent INTEGER,
        UNIQUE (subject, lesion))""",
    f"""CREATE TABLE ratings (
        id {_KEY},
        rater {_TEXT} NOT NULL REFERENCES raters(rater),
        lesion_key BIGINT NOT NULL REFERENCES lesions(lesion_key),
        action {_TEXT} NOT NULL DEFAULT 'rate' CHECK (action IN ('rate', 'undo')),
        label {_TEXT} CHECK (label IN ('prl', 'not_prl', 'unsure')),
        retracts BIGINT REFERENCES ratings(id),
        repeat INTEGER NOT NULL DEFAULT 0 CHECK (repeat IN (0, 1)),
        confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
        reason {_TEXT},
        comment {_TEXT},
        created_at {_TEXT} NOT NULL,
        seconds {_REAL},
        session {_TEXT},
        package_version {_TEXT},
        queue_strategy {_TEXT},
        queue_position INTEGER,
        model_version {_TEXT},
        CHECK ((action = 'rate' AND label IS NOT NULL AND retracts IS NULL)
            OR (action = 'undo' AND label IS NULL AND retracts IS NOT NULL)))""",
    "CREATE INDEX ratings_by_lesion ON ratings (lesion_key)",
    "CREATE INDEX ratings_current ON ratings (rater, lesion_key, repeat, id)",
    "CREATE UNIQUE INDEX ratings_retracted ON ratings (retracts) WHERE retracts IS NOT NULL",
    f"""CREATE TABLE consensus (
        id {_KEY},
        lesion_key BIGINT NOT NULL REFERENCES lesions(lesion_key),
        action {_TEXT} NOT NULL DEFAULT 'decide' CHECK (action IN ('decide', 'retract')),
        label {_TEXT} CHECK (label IN ('prl', 'not_prl', 'unsure')),
        method {_TEXT},
        retracts BIGINT REFERENCES consensus(id),
        decided_by {_TEXT},
        created_at {_TEXT} NOT NULL,
        note {_TEXT},
        package_version {_TEXT},
        CHECK ((action = 'decide' AND label IS NOT NULL AND method IS NOT NULL
                AND retracts IS NULL)
            OR (action = 'retract' AND label IS NULL AND method IS NULL
                AND retracts IS NOT NULL)))""",
    "CREATE INDEX consensus_by_lesion ON consensus (lesion_key, id)",
    f"""CREATE TABLE predictions (
        id {_KEY},
        lesion_key BIGINT NOT NULL REFERENCES lesions(lesion_key),
        model_id {_TEXT} NOT NULL,
        probability {_REAL} NOT NULL CHECK (probability BETWEEN 0 AND 1),
        bald {_REAL},
        created_at {_TEXT} NOT NULL,
        uncertainty_sd {_REAL})""",
    "CREATE INDEX predictions_by_model ON predictions (model_id, lesion_key, id)",
    """CREATE VIEW live_ratings AS
       SELECT r.* FROM ratings r
       WHERE r.action = 'rate'
         AND NOT EXISTS (SELECT 1 FROM ratings u WHERE u.retracts = r.id)""",
    """CREATE VIEW current_ratings AS
       SELECT * FROM (
           SELECT l.*, ROW_NUMBER() OVER (
               PARTITION BY l.rater, l.lesion_key, l.repeat ORDER BY l.id DESC) AS rank_
           FROM live_ratings l) ranked
       WHERE rank_ = 1""",
    """CREATE VIEW live_consensus AS
       SELECT c.* FROM consensus c
       WHERE c.action = 'decide'
         AND c.id = (SELECT MAX(id) FROM consensus d WHERE d.lesion_key = c.lesion_key)""",
]

#: ``POSTGRES_MIGRATIONS[v]`` takes a PostgreSQL store from version ``v`` to ``v + 1``.
POSTGRES_MIGRATIONS: dict[int, list[str]] = {}
