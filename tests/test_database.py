"""The node database: created private, brought to the newest schema by alembic, and files
written by hemex 0.1 upgraded in place with their rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect

from daemon.state.database import Database
from domain.jobs import JobKind
from domain.study import StudyState
from tests.support.databases import open_database

FIXTURES = Path(__file__).with_name("fixtures")


def _hemex_01_file(path: Path) -> None:
    """A database as hemex 0.1 left it: three studies in its old states, one result."""
    with sqlite3.connect(path) as old:
        old.executescript((FIXTURES / "hemex-0.1-schema.sql").read_text())
        old.executescript(
            "INSERT INTO studies(study_uid, handle, state, created_at, updated_at) VALUES"
            " ('1.1', 'st-a', 'analysed', 0, 5), ('1.2', 'st-b', 'queued', 0, 6), ('1.3', 'st-c', 'receiving', 0, 7);"
            "INSERT INTO series(series_uid, study_uid, first_received_at, last_received_at) VALUES ('1.1.1', '1.1', 1, 4);"
            "INSERT INTO instances(sop_instance_uid, sop_class_uid, series_uid, study_uid, path, size_bytes,"
            " calling_ae_title, received_at) VALUES ('1.1.1.1', '1.2.840.10008.5.1.4.1.1.2', '1.1.1', '1.1', '/x', 1,"
            " 'CT', 4);"
            "INSERT INTO results(study_uid, status, sr_sop_uid, sr_path, summary_json, input_key, created_at)"
            " VALUES ('1.1', 'COMPLETE', '1.1.9', '/x/sr.dcm', '{}', 'analyse_study:abc', 5);"
            "INSERT INTO jobs(kind, key, state, run_after, created_at, updated_at)"
            " VALUES ('analyse_study', '1.2', 'pending', 0, 0, 0);")


@pytest.mark.sqlite_only
def test_a_hemex_01_file_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _hemex_01_file(path)
    db = Database(path)
    with db.reading() as repos:
        states = {uid: repos.studies.status(uid).state for uid in ("1.1", "1.2", "1.3")}
        result = repos.results.latest("1.1")
        assert repos.jobs.state_of(JobKind.ANALYSE_STUDY, "1.2") is not None
        assert repos.images.series_due(10.0) == ["1.1.1"]  # an open series: its timer is due
    assert states == {"1.1": StudyState.FINAL, "1.2": StudyState.COMPLETE, "1.3": StudyState.RECEIVED}
    assert result is not None and result.input_key == "analyse_study:abc"
    tables = set(inspect(db.engine).get_table_names())
    assert {"alembic_version", "analyses", "maintenance_runs"} <= tables
    assert "recheck_at" in {c["name"] for c in inspect(db.engine).get_columns("series")}
    db.close()
    Database(path).close()  # opening an up-to-date file again changes nothing


@pytest.mark.sqlite_only
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
    assert "input_key" in {c["name"] for c in inspect(db.engine).get_columns("results")}
    with db.reading() as repos:
        latest = repos.results.latest("1.2.3")
    assert latest is not None and latest.status == "COMPLETE"  # data kept


@pytest.mark.sqlite_only
def test_new_file_is_private_and_at_the_newest_revision(tmp_path: Path) -> None:
    db = Database(tmp_path / "state" / "hemex.sqlite3")
    assert (tmp_path / "state" / "hemex.sqlite3").stat().st_mode & 0o077 == 0
    with sqlite3.connect(tmp_path / "state" / "hemex.sqlite3") as raw:
        (revision,) = raw.execute("SELECT version_num FROM alembic_version").fetchone()
    heads = sorted(p.stem.split("_")[0] for p in (Path(__file__).parents[1] / "daemon" / "state" / "migrations"
                                                  / "versions").glob("0*.py"))
    assert revision == heads[-1]
    db.close()


def test_a_write_transaction_that_raises_leaves_nothing(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db.sqlite3")
    try:
        with db.transaction() as repos:
            repos.jobs.enqueue(JobKind.ANALYSE_STUDY, "1.9", 0.0, 0.0)
            raise RuntimeError("crash inside the unit of work")
    except RuntimeError:
        pass
    with db.reading() as repos:
        assert repos.jobs.state_of(JobKind.ANALYSE_STUDY, "1.9") is None


@pytest.mark.sqlite_only  # the PostgreSQL pass checks its own through test_cluster's nodes
def test_the_migrations_make_exactly_the_schema_of_schema_py(tmp_path: Path) -> None:
    """Every revision together gives the tables, columns and indexes schema.py declares
    (a column added to one and not the other would fail here, not in production)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from daemon.state.schema import metadata

    db = Database(tmp_path / "db.sqlite3")
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.close()
