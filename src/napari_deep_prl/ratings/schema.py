"""The rating database's schema, its version and the migrations between versions.

The version lives in ``PRAGMA user_version`` and the file is tagged with ``PRAGMA
application_id`` so that a foreign SQLite file is recognised and refused rather than written
to. Version history:

* **1** – raters, lesions (per subject, with the mask fingerprint), ratings (label, confidence,
  comment, time, seconds, session) and consensus decisions.
* **2** – ratings gain an exclusion reason, an ``undo`` action (a row retracting an earlier
  row), the repeat flag of the intra-rater design and provenance (package version, queue
  strategy and position, model version); a predictions table is added.

A migration is a list of SQL statements run inside the transaction that bumps the version.
"""

from __future__ import annotations

#: ``PRAGMA application_id`` of a napari-deep-prl rating database ("dPRL").
APPLICATION_ID = 0x6450524C

SCHEMA_VERSION = 2

LABELS = ("prl", "not_prl", "unsure")

DEFAULT_EXCLUSION_REASONS = (
    "central_vein", "vein_adjacent", "confluent", "artefact", "too_small", "other",
)

CONSENSUS_METHODS = ("unanimous", "majority", "adjudicated")

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

#: ``MIGRATIONS[v]`` takes a database from version ``v`` to ``v + 1``.
MIGRATIONS: dict[int, list[str]] = {1: MIGRATE_V1_TO_V2}
