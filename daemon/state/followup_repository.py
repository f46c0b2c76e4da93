"""Follow-up pairing: each head CT's role, the follow-up reports, and each baseline's
observed outcome (``followup_pairings``, ``followup_reports``, ``observed_outcomes``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Row, text

from daemon.state.record_codec import from_json, to_json
from domain.followup import Pairing, Role
from domain.outcomes import FollowupBundle, ObservedOutcome


def _pairing(row: Row) -> Pairing:
    return Pairing(row.study_uid, Role(row.role), row.baseline_study_uid, int(row.sequence),
                   row.hours_after_baseline, row.reason)


class FollowupRepository:
    """The follow-up tables."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    # --- roles ---------------------------------------------------------------------------
    def pairing(self, study_uid: str) -> Pairing | None:
        """The role last decided for the study, or None."""
        row = self._conn.execute(text("SELECT * FROM followup_pairings WHERE study_uid = :uid"),
                                 {"uid": study_uid}).first()
        return None if row is None else _pairing(row)

    def record_pairing(self, pairing: Pairing, acquired_at: datetime | None, now: float) -> bool:
        """Store the role of one study; True when it differs from the one stored."""
        if self.pairing(pairing.study_uid) == pairing:
            return False
        self._conn.execute(text(
            "INSERT INTO followup_pairings(study_uid, role, baseline_study_uid, sequence, hours_after_baseline,"
            " reason, acquired_at, decided_at) VALUES (:uid, :role, :baseline, :sequence, :hours, :reason,"
            " :acquired, :now) ON CONFLICT(study_uid) DO UPDATE SET role = excluded.role,"
            " baseline_study_uid = excluded.baseline_study_uid, sequence = excluded.sequence,"
            " hours_after_baseline = excluded.hours_after_baseline, reason = excluded.reason,"
            " acquired_at = excluded.acquired_at, decided_at = excluded.decided_at"),
            {"uid": pairing.study_uid, "role": pairing.role.value, "baseline": pairing.baseline_study_uid,
             "sequence": pairing.sequence, "hours": pairing.hours_after_baseline, "reason": pairing.reason,
             "acquired": acquired_at.isoformat() if acquired_at else None, "now": now})
        return True

    def counts_by_role(self) -> dict[str, int]:
        """How many studies hold each role (metrics)."""
        rows = self._conn.execute(text("SELECT role, COUNT(*) AS n FROM followup_pairings GROUP BY role"))
        return {row.role: int(row.n) for row in rows}

    def baselines_without_outcome(self, since: datetime | None, until: datetime | None) -> int:
        """Baselines acquired in [since, until) that have no observed outcome (yet)."""
        where, params = _acquired_between("p.acquired_at", since, until)
        where = ["p.role = 'baseline'", "o.baseline_study_uid IS NULL", *where]
        return int(self._conn.execute(text(
            "SELECT COUNT(*) FROM followup_pairings p LEFT JOIN observed_outcomes o"
            " ON o.baseline_study_uid = p.study_uid WHERE " + " AND ".join(where)), params).scalar_one())

    # --- follow-up reports -----------------------------------------------------------------
    def report_made_from(self, input_key: str) -> FollowupBundle | None:
        row = self._conn.execute(text("SELECT bundle_json FROM followup_reports WHERE input_key = :key"),
                                 {"key": input_key}).first()
        return None if row is None else from_json(FollowupBundle, row.bundle_json)

    def add_report(self, bundle: FollowupBundle, now: float) -> bool:
        """Hand a built follow-up report to dispatch; False when one with its input key exists."""
        return self._conn.execute(text(
            "INSERT INTO followup_reports(study_uid, baseline_study_uid, input_key, bundle_json, created_at)"
            " VALUES (:uid, :baseline, :key, :bundle, :now) ON CONFLICT(input_key) DO NOTHING"),
            {"uid": bundle.study_uid, "baseline": bundle.baseline_study_uid, "key": bundle.input_key,
             "bundle": to_json(bundle), "now": now}).rowcount == 1

    def latest_undispatched_report(self, study_uid: str) -> FollowupBundle | None:
        row = self._conn.execute(text(
            "SELECT bundle_json FROM followup_reports WHERE study_uid = :uid AND dispatched_at IS NULL"
            " ORDER BY id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else from_json(FollowupBundle, row.bundle_json)

    def latest_dispatched_report(self, study_uid: str) -> FollowupBundle | None:
        """The newest follow-up report of the study that went out (its SR is the predecessor)."""
        row = self._conn.execute(text(
            "SELECT bundle_json FROM followup_reports WHERE study_uid = :uid AND dispatched_at IS NOT NULL"
            " ORDER BY id DESC LIMIT 1"), {"uid": study_uid}).first()
        return None if row is None else from_json(FollowupBundle, row.bundle_json)

    def report_folders_before(self, cutoff: float) -> list[tuple[str, Path]]:
        """(follow-up study UID, folder) of follow-up reports made before ``cutoff`` (retention)."""
        rows = self._conn.execute(text(
            "SELECT study_uid, bundle_json FROM followup_reports WHERE created_at < :cutoff ORDER BY id"),
            {"cutoff": cutoff})
        return [(row.study_uid, from_json(FollowupBundle, row.bundle_json).folder) for row in rows]

    def mark_dispatched(self, input_key: str, now: float) -> None:
        self._conn.execute(text("UPDATE followup_reports SET dispatched_at = :now WHERE input_key = :key"),
                           {"now": now, "key": input_key})

    # --- outcomes ----------------------------------------------------------------------------
    def record_outcome(self, outcome: ObservedOutcome, now: float) -> None:
        """Store (or replace) the baseline's observed outcome."""
        self._conn.execute(text(
            "INSERT INTO observed_outcomes(baseline_study_uid, followup_study_uid, outcome_json,"
            " baseline_acquired_at, recorded_at) VALUES (:baseline, :followup, :outcome, :acquired, :now)"
            " ON CONFLICT(baseline_study_uid) DO UPDATE SET followup_study_uid = excluded.followup_study_uid,"
            " outcome_json = excluded.outcome_json, baseline_acquired_at = excluded.baseline_acquired_at,"
            " recorded_at = excluded.recorded_at"),
            {"baseline": outcome.baseline_study_uid, "followup": outcome.followup_study_uid,
             "outcome": to_json(outcome), "acquired": outcome.baseline_acquired_at.isoformat(), "now": now})

    def drop_outcomes_except(self, baseline_study_uids: Iterable[str], pairs: set[tuple[str, str]]) -> int:
        """Among these baselines' outcomes, delete those whose (baseline, follow-up) pair is
        no longer in ``pairs`` (roles changed); returns how many."""
        dropped = 0
        for uid in baseline_study_uids:
            row = self._conn.execute(text(
                "SELECT followup_study_uid FROM observed_outcomes WHERE baseline_study_uid = :uid"),
                {"uid": uid}).first()
            if row is not None and (uid, row.followup_study_uid) not in pairs:
                self._conn.execute(text("DELETE FROM observed_outcomes WHERE baseline_study_uid = :uid"),
                                   {"uid": uid})
                dropped += 1
        return dropped

    def outcomes(self, since: datetime | None = None, until: datetime | None = None) -> list[ObservedOutcome]:
        """Observed outcomes of baselines acquired in [since, until), oldest first."""
        where, params = _acquired_between("baseline_acquired_at", since, until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self._conn.execute(text(
            f"SELECT outcome_json FROM observed_outcomes{clause} ORDER BY baseline_acquired_at, baseline_study_uid"),
            params)
        return [from_json(ObservedOutcome, row.outcome_json) for row in rows]

    def outcome_of(self, baseline_study_uid: str) -> ObservedOutcome | None:
        row = self._conn.execute(text("SELECT outcome_json FROM observed_outcomes WHERE baseline_study_uid = :uid"),
                                 {"uid": baseline_study_uid}).first()
        return None if row is None else from_json(ObservedOutcome, row.outcome_json)


def _acquired_between(column: str, since: datetime | None, until: datetime | None) -> tuple[list[str], dict[str, str]]:
    """The conditions and parameters of ``since <= column < until`` (either bound optional)."""
    where, params = [], {}
    if since is not None:
        where.append(f"{column} >= :since")
        params["since"] = since.isoformat()
    if until is not None:
        where.append(f"{column} < :until")
        params["until"] = until.isoformat()
    return where, params
