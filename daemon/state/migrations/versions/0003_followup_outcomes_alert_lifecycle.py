"""Follow-up pairing, observed outcomes, procedures, and the life of each alert (issue 14).

New tables: followup_pairings (the role of each analysed head CT), followup_reports (the
follow-up report's hand-off from report to dispatch), observed_outcomes (each baseline's
outcome at its first follow-up, what ``hemex performance`` and ``hemex
export-training-set`` read), clinical_procedures (ADT PR1 / ORM^O01, evacuation
evidence), alert_groups, alert_events and alert_deliveries (acknowledgement, escalation
and every step's time). The alerts table gains the group each alert joined and the time
of its study's last image. Existing rows are kept; alerts raised before this revision
belong to no group.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    real, text, integer = sa.Float, sa.Text, sa.Integer
    op.add_column("alerts", sa.Column("group_ref", text))
    op.add_column("alerts", sa.Column("images_received_at", real))
    op.create_table(
        "alert_groups",
        sa.Column("ref", text, primary_key=True),
        sa.Column("short_code", text, nullable=False, unique=True),
        sa.Column("created_at", real, nullable=False), sa.Column("last_alert_at", real, nullable=False),
        sa.Column("acknowledged_at", real), sa.Column("acknowledged_by", text),
        sa.Column("level", integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("group_ref", text, sa.ForeignKey("alert_groups.ref"), nullable=False),
        sa.Column("study_uid", text), sa.Column("alert_key", text),
        sa.Column("step", text, nullable=False), sa.Column("at", real, nullable=False),
        sa.Column("detail", text, nullable=False, server_default=""),
    )
    op.create_index("alert_events_by_group", "alert_events", ["group_ref"])
    op.create_table(
        "alert_deliveries",
        sa.Column("outbox_id", integer, sa.ForeignKey("outbox.id"), primary_key=True),
        sa.Column("group_ref", text, sa.ForeignKey("alert_groups.ref"), nullable=False),
        sa.Column("study_uid", text, nullable=False), sa.Column("alert_key", text, nullable=False),
        sa.Column("contact", text, nullable=False, server_default=""),
    )
    op.create_table(
        "followup_pairings",
        sa.Column("study_uid", text, primary_key=True),
        sa.Column("role", text, nullable=False), sa.Column("baseline_study_uid", text),
        sa.Column("sequence", integer, nullable=False), sa.Column("hours_after_baseline", real),
        sa.Column("reason", text, nullable=False), sa.Column("acquired_at", text),
        sa.Column("decided_at", real, nullable=False),
    )
    op.create_index("followup_pairings_by_baseline", "followup_pairings", ["baseline_study_uid"])
    op.create_table(
        "followup_reports",
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("study_uid", text, nullable=False), sa.Column("baseline_study_uid", text, nullable=False),
        sa.Column("input_key", text, nullable=False, unique=True),
        sa.Column("bundle_json", text, nullable=False), sa.Column("created_at", real, nullable=False),
        sa.Column("dispatched_at", real),
    )
    op.create_index("followup_reports_by_study", "followup_reports", ["study_uid"])
    op.create_table(
        "observed_outcomes",
        sa.Column("baseline_study_uid", text, primary_key=True),
        sa.Column("followup_study_uid", text, nullable=False),
        sa.Column("outcome_json", text, nullable=False),
        sa.Column("baseline_acquired_at", text, nullable=False),
        sa.Column("recorded_at", real, nullable=False),
    )
    op.create_table(
        "clinical_procedures",
        sa.Column("id", integer, primary_key=True, autoincrement=True),
        sa.Column("patient_key", integer, sa.ForeignKey("clinical_patients.patient_key"), nullable=False),
        sa.Column("code_system", text, nullable=False), sa.Column("code", text, nullable=False),
        sa.Column("performed_at", text, nullable=False),
        sa.Column("message_id", integer, sa.ForeignKey("hl7_messages.id"), nullable=False),
        sa.Column("created_at", real, nullable=False),
        sa.UniqueConstraint("patient_key", "code_system", "code", "performed_at", name="clinical_procedure_once"),
    )
    op.create_index("clinical_procedures_by_patient", "clinical_procedures", ["patient_key", "performed_at"])


def downgrade() -> None:
    raise NotImplementedError("the node database is never downgraded; restore a backup instead")
