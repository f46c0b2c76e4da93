"""The node's tables, as SQLAlchemy metadata: one definition for every backend.

Alembic's migrations (``daemon/state/migrations``) create and change them; repositories
(``daemon/state/*_repository.py``) are the only code that reads or writes them. Times are
epoch seconds (float), except where a column says it holds an ISO local time.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

studies = Table(
    "studies", metadata,
    Column("study_uid", Text, primary_key=True),
    Column("handle", Text, nullable=False, unique=True),  # non-PHI name used in logs
    Column("patient_id", Text),
    Column("issuer_of_patient_id", Text),
    Column("accession_number", Text),
    Column("study_datetime", Text),
    # domain.study.StudyState; state_reason says why (failed, no_series) or what was decided
    Column("state", Text, nullable=False, server_default="received"),
    Column("state_reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_received_at", Float),  # last instance stored (retention counts from it)
)

series = Table(
    "series", metadata,
    Column("series_uid", Text, primary_key=True),
    Column("study_uid", Text, ForeignKey("studies.study_uid"), nullable=False),
    Column("modality", Text),
    Column("description", Text),
    Column("expected_images", Integer),
    Column("instance_count", Integer, nullable=False, server_default="0"),
    Column("first_received_at", Float, nullable=False),
    Column("last_received_at", Float, nullable=False),
    Column("state", Text, nullable=False, server_default="receiving"),  # receiving|complete
    Column("completed_at", Float),
    Column("completion_reason", Text),
    Column("recheck_at", Float),  # when the completion decision is taken again (durable timer)
    Index("series_by_study", "study_uid"),
    Index("series_due", "state", "recheck_at"),
)

instances = Table(
    "instances", metadata,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("sop_class_uid", Text, nullable=False),
    Column("series_uid", Text, ForeignKey("series.series_uid"), nullable=False),
    Column("study_uid", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("calling_ae_title", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("slice_position", Float),  # mm along the image plane's normal (0004)
    Index("instances_by_series", "series_uid"),
    Index("instances_by_study", "study_uid"),
)

jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),  # domain.jobs.JobKind
    Column("key", Text, nullable=False),  # the study UID for study jobs
    Column("state", Text, nullable=False, server_default="pending"),  # pending|running|done|failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("run_after", Float, nullable=False),
    Column("last_error", Text),
    # Queued again while it ran: it runs once more when the current run ends.
    Column("rerun_requested", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The node running it, and when its claim runs out unless renewed (0002).
    Column("lease_owner", Text),
    Column("lease_until", Float),
    UniqueConstraint("kind", "key", name="jobs_kind_key"),
    Index("jobs_due", "state", "run_after"),
)

# The analyse stage's hand-off to the report stage: one typed analysis (JSON) and the
# folder holding its mask, keyed by what it was made from.
analyses = Table(
    "analyses", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", Text, nullable=False),
    Column("input_key", Text, nullable=False, unique=True),
    Column("series_uid", Text, nullable=False),
    Column("folder", Text, nullable=False),
    Column("mask_folder", Text),  # where mask.npz lies (an earlier report's, when reused)
    Column("analysis_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # Set by the report stage: the built report (domain.report.ReportBundle) for dispatch.
    Column("bundle_json", Text),
    Index("analyses_by_study", "study_uid"),
)

results = Table(
    "results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", Text, nullable=False),
    Column("status", Text, nullable=False),  # PARTIAL (preliminary) | COMPLETE (final)
    Column("sr_sop_uid", Text, nullable=False),
    Column("seg_sop_uid", Text),
    Column("sr_path", Text, nullable=False),
    Column("seg_path", Text),
    Column("risk_category", Text),
    Column("summary_json", Text, nullable=False),
    Column("input_key", Text),  # job kind + digest of the images it was made from
    Column("created_at", Float, nullable=False),
    Index("results_by_study", "study_uid"),
    Index("results_by_input", "input_key"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", Text, nullable=False),  # dicom|hl7|webhook|email
    Column("destination", Text, nullable=False),  # configured destination name
    Column("item_key", Text, nullable=False),  # SOP Instance UID, message id, alert key
    Column("path", Text, nullable=False),  # file holding what is sent
    Column("study_uid", Text),
    Column("state", Text, nullable=False, server_default="pending"),  # pending|delivered|dead
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    # The node sending it, and when its claim runs out (0002).
    Column("lease_owner", Text),
    Column("lease_until", Float),
    UniqueConstraint("channel", "destination", "item_key", name="outbox_item"),
    Index("outbox_due", "state", "next_attempt_at"),
)

alerts = Table(
    "alerts", metadata,
    Column("study_uid", Text, primary_key=True),
    Column("alert_key", Text, primary_key=True),  # rule + risk category; sent once
    Column("created_at", Float, nullable=False),
    Column("group_ref", Text),  # alert_groups.ref it joined (revision 0003)
    Column("images_received_at", Float),  # the study's last image then (time to alert)
)

# Alerts one acknowledgement answers: one patient's alerts while unacknowledged (0004).
alert_groups = Table(
    "alert_groups", metadata,
    Column("ref", Text, primary_key=True),  # random; what the signed link carries
    Column("short_code", Text, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_alert_at", Float, nullable=False),
    Column("acknowledged_at", Float),
    Column("acknowledged_by", Text),
    Column("level", Integer, nullable=False, server_default="0"),  # escalation level reached
)

# Each step of an alert group (domain.alerts.AlertStep) with its time (0004).
alert_events = Table(
    "alert_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_ref", Text, ForeignKey("alert_groups.ref"), nullable=False),
    Column("study_uid", Text),
    Column("alert_key", Text),
    Column("step", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Index("alert_events_by_group", "group_ref"),
)

# Which outbox items carry which alert, so their delivery becomes a step (0004).
alert_deliveries = Table(
    "alert_deliveries", metadata,
    Column("outbox_id", Integer, ForeignKey("outbox.id"), primary_key=True),
    Column("group_ref", Text, ForeignKey("alert_groups.ref"), nullable=False),
    Column("study_uid", Text, nullable=False),
    Column("alert_key", Text, nullable=False),
    Column("contact", Text, nullable=False, server_default=""),  # roster contact, "" = broadcast
)

# The role of each analysed head CT in its patient's timeline (domain.followup, 0003).
followup_pairings = Table(
    "followup_pairings", metadata,
    Column("study_uid", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("baseline_study_uid", Text),
    Column("sequence", Integer, nullable=False),
    Column("hours_after_baseline", Float),
    Column("reason", Text, nullable=False),
    Column("acquired_at", Text),  # ISO local time of the CT
    Column("decided_at", Float, nullable=False),
    Index("followup_pairings_by_baseline", "baseline_study_uid"),
)

# Follow-up reports built (report stage) and dispatched (dispatch stage) (0004).
followup_reports = Table(
    "followup_reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", Text, nullable=False),  # the follow-up study
    Column("baseline_study_uid", Text, nullable=False),
    Column("input_key", Text, nullable=False, unique=True),  # what it was made from
    Column("bundle_json", Text, nullable=False),  # domain.followup_report.FollowupBundle
    Column("created_at", Float, nullable=False),
    Column("dispatched_at", Float),
    Index("followup_reports_by_study", "study_uid"),
)

# The observed outcome of each baseline (its prediction), from its first follow-up (0004).
observed_outcomes = Table(
    "observed_outcomes", metadata,
    Column("baseline_study_uid", Text, primary_key=True),
    Column("followup_study_uid", Text, nullable=False),
    Column("outcome_json", Text, nullable=False),  # domain.followup_report.ObservedOutcome
    Column("baseline_acquired_at", Text, nullable=False),  # ISO local time (--since/--until)
    Column("recorded_at", Float, nullable=False),
)

# Procedures the EHR reported (ADT PR1, ORM^O01), read as evacuation evidence (0004).
clinical_procedures = Table(
    "clinical_procedures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_key", Integer, ForeignKey("clinical_patients.patient_key"), nullable=False),
    Column("code_system", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("performed_at", Text, nullable=False),  # ISO local time
    Column("message_id", Integer, ForeignKey("hl7_messages.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("patient_key", "code_system", "code", "performed_at", name="clinical_procedure_once"),
    Index("clinical_procedures_by_patient", "patient_key", "performed_at"),
)

hl7_messages = Table(
    "hl7_messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender", Text, nullable=False),  # MSH-3 ^ MSH-4
    Column("control_id", Text, nullable=False),  # MSH-10
    Column("message_type", Text, nullable=False),  # e.g. ORU^R01
    Column("version", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("processed_at", Float),  # NULL until applied to the clinical tables
    Column("process_error", Text),
    UniqueConstraint("sender", "control_id", name="hl7_messages_sender_control_id"),
)

clinical_patients = Table(
    "clinical_patients", metadata,
    Column("patient_key", Integer, primary_key=True, autoincrement=True),
    Column("birth_date", Text),  # ISO date from PID-7
    Column("sex", Text),  # M|F|O from PID-8
    Column("merged_into", Integer, ForeignKey("clinical_patients.patient_key")),
    Column("updated_at", Float, nullable=False),
)

clinical_patient_ids = Table(
    "clinical_patient_ids", metadata,
    Column("patient_id", Text, primary_key=True),  # PID-3.1 (or MRG-1.1 of a merge)
    Column("issuer", Text, primary_key=True, server_default=""),  # CX-4.1 namespace
    Column("issuer_universal", Text, nullable=False, server_default=""),  # CX-4.2
    Column("patient_key", Integer, ForeignKey("clinical_patients.patient_key"), nullable=False),
)

clinical_observations = Table(
    "clinical_observations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_key", Integer, ForeignKey("clinical_patients.patient_key"), nullable=False),
    Column("variable", Text, nullable=False),  # a ClinicalVariables field name
    Column("value_num", Float),  # in the ClinicalVariables unit; booleans 1/0
    Column("value_time", Text),  # ISO local time (onset_time)
    Column("unit", Text, nullable=False),
    Column("observed_at", Text, nullable=False),  # ISO local time
    Column("accession", Text),  # OBR-18 / ORC accession when present
    Column("source_code", Text, nullable=False),  # e.g. LN:6301-6
    Column("message_id", Integer, ForeignKey("hl7_messages.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("clinical_obs_by_patient", "patient_key", "variable", "observed_at"),
    Index("clinical_obs_by_accession", "accession"),
)

# Figures of the last run of each scheduled maintenance task (retention), for metrics.
maintenance_runs = Table(
    "maintenance_runs", metadata,
    Column("task", Text, primary_key=True),
    Column("ran_at", Float, nullable=False),
    Column("figures_json", Text, nullable=False),
)

# Named leases for tasks one node at a time runs (the retention purge) (0002).
leases = Table(
    "leases", metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
)
