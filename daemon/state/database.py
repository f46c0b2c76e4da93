"""The embedded SQLite database that holds the node's durable state.

One file in the data directory, WAL journal, ``synchronous=FULL`` so that a committed
transaction survives power loss: the listener acknowledges only after its commit.
Each thread gets its own connection (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from domain.durable_files import ensure_private_dir

SCHEMA_VERSION = 2

# One statement list; each stage owns the tables named after it.
SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid        TEXT PRIMARY KEY,
    handle           TEXT NOT NULL UNIQUE,       -- non-PHI name used in logs
    patient_id       TEXT,
    issuer_of_patient_id TEXT,
    accession_number TEXT,
    study_datetime   TEXT,
    state            TEXT NOT NULL DEFAULT 'receiving',  -- receiving|queued|analysed|no_series|failed
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid       TEXT PRIMARY KEY,
    study_uid        TEXT NOT NULL REFERENCES studies(study_uid),
    modality         TEXT,
    description      TEXT,
    expected_images  INTEGER,
    instance_count   INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    state            TEXT NOT NULL DEFAULT 'receiving',  -- receiving|complete
    completed_at     REAL,
    completion_reason TEXT
);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid    TEXT NOT NULL,
    series_uid       TEXT NOT NULL REFERENCES series(series_uid),
    study_uid        TEXT NOT NULL,
    path             TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL,
    calling_ae_title TEXT NOT NULL,
    received_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    key              TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',  -- pending|running|done|failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_after        REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    UNIQUE(kind, key)
);
CREATE TABLE IF NOT EXISTS results (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid        TEXT NOT NULL,
    status           TEXT NOT NULL,              -- PARTIAL (preliminary) | COMPLETE (final)
    sr_sop_uid       TEXT NOT NULL,
    seg_sop_uid      TEXT,
    sr_path          TEXT NOT NULL,
    seg_path         TEXT,
    risk_category    TEXT,
    summary_json     TEXT NOT NULL,
    input_key        TEXT,                       -- job kind + digest of the images it was made from
    created_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_study ON results(study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    channel          TEXT NOT NULL,              -- dicom|hl7|webhook|email
    destination      TEXT NOT NULL,              -- configured destination name
    item_key         TEXT NOT NULL,              -- SOP Instance UID, message id, alert key
    path             TEXT NOT NULL,              -- file holding what is sent
    study_uid        TEXT,
    state            TEXT NOT NULL DEFAULT 'pending',  -- pending|delivered|dead
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    delivered_at     REAL,
    UNIQUE(channel, destination, item_key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS alerts (
    study_uid        TEXT NOT NULL,
    alert_key        TEXT NOT NULL,              -- e.g. rule + risk category; sent once
    created_at       REAL NOT NULL,
    PRIMARY KEY(study_uid, alert_key)
);
-- HL7 intake (daemon/clinical): each accepted message once per (sender, control id).
CREATE TABLE IF NOT EXISTS hl7_messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    sender           TEXT NOT NULL,              -- MSH-3 ^ MSH-4
    control_id       TEXT NOT NULL,              -- MSH-10
    message_type     TEXT NOT NULL,              -- e.g. ORU^R01
    version          TEXT NOT NULL,
    path             TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL,
    received_at      REAL NOT NULL,
    processed_at     REAL,                       -- NULL until applied to the clinical tables
    process_error    TEXT,
    UNIQUE(sender, control_id)
);
CREATE TABLE IF NOT EXISTS clinical_patients (
    patient_key      INTEGER PRIMARY KEY AUTOINCREMENT,
    birth_date       TEXT,                       -- ISO date from PID-7
    sex              TEXT,                       -- M|F|O from PID-8
    merged_into      INTEGER REFERENCES clinical_patients(patient_key),
    updated_at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clinical_patient_ids (
    patient_id       TEXT NOT NULL,              -- PID-3.1 (or MRG-1.1 of a merge)
    issuer           TEXT NOT NULL DEFAULT '',   -- assigning authority namespace (CX-4.1)
    issuer_universal TEXT NOT NULL DEFAULT '',   -- assigning authority universal id (CX-4.2)
    patient_key      INTEGER NOT NULL REFERENCES clinical_patients(patient_key),
    PRIMARY KEY(patient_id, issuer)
);
CREATE TABLE IF NOT EXISTS clinical_observations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_key      INTEGER NOT NULL REFERENCES clinical_patients(patient_key),
    variable         TEXT NOT NULL,              -- a ClinicalVariables field name
    value_num        REAL,                       -- in the ClinicalVariables unit; booleans 1/0
    value_time       TEXT,                       -- ISO local time (onset_time)
    unit             TEXT NOT NULL,              -- unit after conversion
    observed_at      TEXT NOT NULL,              -- ISO local time
    accession        TEXT,                       -- OBR-18 / ORC accession when present
    source_code      TEXT NOT NULL,              -- e.g. LN:6301-6
    message_id       INTEGER NOT NULL REFERENCES hl7_messages(id),
    created_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clinical_obs_by_patient ON clinical_observations(patient_key, variable, observed_at);
CREATE INDEX IF NOT EXISTS clinical_obs_by_accession ON clinical_observations(accession);
"""


# Created after the migrations, since they index columns an old file may lack.
INDEXES = "CREATE INDEX IF NOT EXISTS results_by_input ON results(input_key);"

# (schema version that introduced it, SQL) applied to files older than that version.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (2, "ALTER TABLE results ADD COLUMN input_key TEXT;"),
)


class Database:
    """Thread-safe access to the node's SQLite file.

    Use ``with db.transaction() as conn:`` for every write; it commits on success and
    rolls back on error.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        ensure_private_dir(self.path.parent)
        # SQLite creates the file with the umask's mode and gives -wal/-shm the same
        # mode as the database, so create it private first (PHI lives in it).
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._local = threading.local()
        conn = self.connection()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        upgrade = "".join(sql for target, sql in MIGRATIONS if 0 < version < target)
        conn.executescript(f"BEGIN; {upgrade} {SCHEMA} {INDEXES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction on this thread's connection."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Run a read-only query and return all rows."""
        return self.connection().execute(sql, params).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
