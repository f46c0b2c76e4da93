"""The node database as of the study state machine; brings hemex 0.1 SQLite files up to it.

A new database gets every table. A database written by hemex 0.1 (tables made by
``CREATE TABLE IF NOT EXISTS``, ``PRAGMA user_version`` 1 or 2, no alembic_version
table) keeps its rows: the columns and tables it lacks are added and its study states
are renamed to the state machine's (receiving -> received, queued -> complete,
analysed -> reported or final by its latest result).

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[sa.Column | sa.Constraint]]]:
    """The tables of this revision (frozen here: later revisions change them, not this)."""
    real, text, integer = sa.Float, sa.Text, sa.Integer
    return [
        ("studies", [
            sa.Column("study_uid", text, primary_key=True),
            sa.Column("handle", text, nullable=False, unique=True),
            sa.Column("patient_id", text), sa.Column("issuer_of_patient_id", text),
            sa.Column("accession_number", text), sa.Column("study_datetime", text),
            sa.Column("state", text, nullable=False, server_default="received"),
            sa.Column("state_reason", text),
            sa.Column("created_at", real, nullable=False), sa.Column("updated_at", real, nullable=False),
            sa.Column("last_received_at", real),
        ]),
        ("series", [
            sa.Column("series_uid", text, primary_key=True),
            sa.Column("study_uid", text, sa.ForeignKey("studies.study_uid"), nullable=False),
            sa.Column("modality", text), sa.Column("description", text),
            sa.Column("expected_images", integer),
            sa.Column("instance_count", integer, nullable=False, server_default="0"),
            sa.Column("first_received_at", real, nullable=False),
            sa.Column("last_received_at", real, nullable=False),
            sa.Column("state", text, nullable=False, server_default="receiving"),
            sa.Column("completed_at", real), sa.Column("completion_reason", text),
            sa.Column("recheck_at", real),
        ]),
        ("instances", [
            sa.Column("sop_instance_uid", text, primary_key=True),
            sa.Column("sop_class_uid", text, nullable=False),
            sa.Column("series_uid", text, sa.ForeignKey("series.series_uid"), nullable=False),
            sa.Column("study_uid", text, nullable=False), sa.Column("path", text, nullable=False),
            sa.Column("size_bytes", integer, nullable=False),
            sa.Column("calling_ae_title", text, nullable=False),
            sa.Column("received_at", real, nullable=False),
        ]),
        ("jobs", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("kind", text, nullable=False), sa.Column("key", text, nullable=False),
            sa.Column("state", text, nullable=False, server_default="pending"),
            sa.Column("attempts", integer, nullable=False, server_default="0"),
            sa.Column("run_after", real, nullable=False), sa.Column("last_error", text),
            sa.Column("rerun_requested", integer, nullable=False, server_default="0"),
            sa.Column("created_at", real, nullable=False), sa.Column("updated_at", real, nullable=False),
            sa.UniqueConstraint("kind", "key", name="jobs_kind_key"),
        ]),
        ("analyses", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("study_uid", text, nullable=False),
            sa.Column("input_key", text, nullable=False, unique=True),
            sa.Column("series_uid", text, nullable=False), sa.Column("folder", text, nullable=False),
            sa.Column("mask_folder", text), sa.Column("analysis_json", text, nullable=False),
            sa.Column("created_at", real, nullable=False), sa.Column("bundle_json", text),
        ]),
        ("results", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("study_uid", text, nullable=False), sa.Column("status", text, nullable=False),
            sa.Column("sr_sop_uid", text, nullable=False), sa.Column("seg_sop_uid", text),
            sa.Column("sr_path", text, nullable=False), sa.Column("seg_path", text),
            sa.Column("risk_category", text), sa.Column("summary_json", text, nullable=False),
            sa.Column("input_key", text), sa.Column("created_at", real, nullable=False),
        ]),
        ("outbox", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("channel", text, nullable=False), sa.Column("destination", text, nullable=False),
            sa.Column("item_key", text, nullable=False), sa.Column("path", text, nullable=False),
            sa.Column("study_uid", text),
            sa.Column("state", text, nullable=False, server_default="pending"),
            sa.Column("attempts", integer, nullable=False, server_default="0"),
            sa.Column("next_attempt_at", real, nullable=False), sa.Column("last_error", text),
            sa.Column("created_at", real, nullable=False), sa.Column("delivered_at", real),
            sa.UniqueConstraint("channel", "destination", "item_key", name="outbox_item"),
        ]),
        ("alerts", [
            sa.Column("study_uid", text, primary_key=True), sa.Column("alert_key", text, primary_key=True),
            sa.Column("created_at", real, nullable=False),
        ]),
        ("hl7_messages", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("sender", text, nullable=False), sa.Column("control_id", text, nullable=False),
            sa.Column("message_type", text, nullable=False), sa.Column("version", text, nullable=False),
            sa.Column("path", text, nullable=False), sa.Column("size_bytes", integer, nullable=False),
            sa.Column("received_at", real, nullable=False), sa.Column("processed_at", real),
            sa.Column("process_error", text),
            sa.UniqueConstraint("sender", "control_id", name="hl7_messages_sender_control_id"),
        ]),
        ("clinical_patients", [
            sa.Column("patient_key", integer, primary_key=True, autoincrement=True),
            sa.Column("birth_date", text), sa.Column("sex", text),
            sa.Column("merged_into", integer, sa.ForeignKey("clinical_patients.patient_key")),
            sa.Column("updated_at", real, nullable=False),
        ]),
        ("clinical_patient_ids", [
            sa.Column("patient_id", text, primary_key=True),
            sa.Column("issuer", text, primary_key=True, server_default=""),
            sa.Column("issuer_universal", text, nullable=False, server_default=""),
            sa.Column("patient_key", integer, sa.ForeignKey("clinical_patients.patient_key"), nullable=False),
        ]),
        ("clinical_observations", [
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("patient_key", integer, sa.ForeignKey("clinical_patients.patient_key"), nullable=False),
            sa.Column("variable", text, nullable=False), sa.Column("value_num", real),
            sa.Column("value_time", text), sa.Column("unit", text, nullable=False),
            sa.Column("observed_at", text, nullable=False), sa.Column("accession", text),
            sa.Column("source_code", text, nullable=False),
            sa.Column("message_id", integer, sa.ForeignKey("hl7_messages.id"), nullable=False),
            sa.Column("created_at", real, nullable=False),
        ]),
        ("maintenance_runs", [
            sa.Column("task", text, primary_key=True), sa.Column("ran_at", real, nullable=False),
            sa.Column("figures_json", text, nullable=False),
        ]),
    ]


_INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("series_by_study", "series", ["study_uid"]),
    ("series_due", "series", ["state", "recheck_at"]),
    ("instances_by_series", "instances", ["series_uid"]),
    ("instances_by_study", "instances", ["study_uid"]),
    ("jobs_due", "jobs", ["state", "run_after"]),
    ("analyses_by_study", "analyses", ["study_uid"]),
    ("results_by_study", "results", ["study_uid"]),
    ("results_by_input", "results", ["input_key"]),
    ("outbox_due", "outbox", ["state", "next_attempt_at"]),
    ("clinical_obs_by_patient", "clinical_observations", ["patient_key", "variable", "observed_at"]),
    ("clinical_obs_by_accession", "clinical_observations", ["accession"]),
)

# hemex 0.1 study states -> the state machine's (analysed is decided by its last result).
_LEGACY_STATES = {"receiving": "received", "queued": "complete"}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    legacy = inspector.has_table("studies")
    for name, items in _tables():
        if not inspector.has_table(name):
            op.create_table(name, *items)
            continue
        present = {column["name"] for column in inspector.get_columns(name)}
        for item in items:
            if isinstance(item, sa.Column) and item.name not in present:
                op.add_column(name, item._copy())
    inspector = sa.inspect(bind)
    for index, table, columns in _INDEXES:
        if index not in {ix["name"] for ix in inspector.get_indexes(table)}:
            op.create_index(index, table, list(columns))
    if legacy:
        _convert_legacy_rows()


def _convert_legacy_rows() -> None:
    for old, new in _LEGACY_STATES.items():
        op.execute(sa.text("UPDATE studies SET state = :new WHERE state = :old").bindparams(old=old, new=new))
    op.execute(sa.text(
        "UPDATE studies SET state = CASE WHEN (SELECT r.status FROM results r WHERE r.study_uid ="
        " studies.study_uid ORDER BY r.id DESC LIMIT 1) = 'COMPLETE' THEN 'final' ELSE 'reported' END"
        " WHERE state = 'analysed'"))
    op.execute(sa.text("UPDATE studies SET last_received_at = (SELECT MAX(i.received_at) FROM instances i"
                       " WHERE i.study_uid = studies.study_uid) WHERE last_received_at IS NULL"))


def downgrade() -> None:
    raise NotImplementedError("the node database is never downgraded; restore a backup instead")
