"""The SQLite state file: created private, and upgraded in place from older schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.state.database import SCHEMA_VERSION, Database


def test_a_version_1_file_gains_the_result_input_key(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, study_uid TEXT NOT NULL,"
            " status TEXT NOT NULL, sr_sop_uid TEXT NOT NULL, seg_sop_uid TEXT, sr_path TEXT NOT NULL,"
            " seg_path TEXT, risk_category TEXT, summary_json TEXT NOT NULL, created_at REAL NOT NULL);"
            "INSERT INTO results(study_uid, status, sr_sop_uid, sr_path, summary_json, created_at)"
            " VALUES ('1.2.3', 'COMPLETE', '1.2.3.4', '/x/sr.dcm', '{}', 0);"
            "PRAGMA user_version = 1;")
    db = Database(path)
    columns = {row["name"] for row in db.query("PRAGMA table_info(results)")}
    assert "input_key" in columns
    assert db.query("SELECT status FROM results")[0]["status"] == "COMPLETE"  # data kept
    assert db.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    db.close()
    Database(path).close()  # opening an up-to-date file again changes nothing


def test_new_file_is_private(tmp_path: Path) -> None:
    db = Database(tmp_path / "state" / "hemex.sqlite3")
    assert (tmp_path / "state" / "hemex.sqlite3").stat().st_mode & 0o077 == 0
    assert db.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
