"""kill -9 the whole node (`hemex serve`) at random moments while a scanner sends, analysis
jobs run and deliveries go out; restart it on the same data dir; count what survived and
what the PACS received.

Peers, all on 127.0.0.1: dcmtk storescu (the scanner) sends synthetic head CT phantoms
(tests/support/phantoms.py), an MLLP client sends ADT messages, a counting C-STORE SCP
(tests/support/counting_pacs.py) is the PACS, an HTTP server takes the alert webhook.

The scanner starts the next study whenever it has sent the last one, so a cycle often
has a study arriving while an earlier one is analysed or delivered. Each cycle starts
the node, aims the kill at one phase (sending, analysing, delivering; at random unless
given) and kills it at a random point of that phase: after a random number (up to half)
of the scanner's instances were stored, within a random delay of a job starting to run
(the next job's, with half the delay, when the job ended first), or of the PACS
receiving its first object of this run. The kill is then classified by what
the killed node's database says it interrupted. A last run without a kill lets
everything finish; then:

- every instance storescu saw acknowledged is in the database and its file decodes;
- every ADT that got AA is in ``hl7_messages``, applied;
- every study has exactly one result, and the PACS received exactly one SR and one SEG
  (by distinct SOP Instance UID) per study, the ones of that result;
- C-STORE receptions per SOP Instance UID are counted: a re-send of the same UID can
  only follow a kill between the PACS's success and the outbox commit (at-least-once).

Usage: .venv/bin/python -m bench.kill_loop_node [--kills 20] [--studies 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.support.alert_peers import HttpReceiver, ReceivedRequest
from tests.support.counting_pacs import CountingPacs, receptions_per_uid
from tests.support.node_process import (
    Hl7Sender,
    NodeDatabase,
    NodeProcess,
    Scanner,
    write_node_config,
)
from tests.support.peers import wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series

PHASES = ("sending", "analysing", "delivering")
AIM_TRIES = 6              # heavy jobs an analysing kill may try before it lands where it lands
TRIGGER_TIMEOUT_S = 60.0   # a phase that never starts: kill anyway, classified by what ran
NEXT_JOB_TIMEOUT_S = 10.0  # an analysing kill's wait for the next heavy job after one it missed
HL7_PER_CYCLE = 5


@dataclass
class NodeTally:
    """What the run did and what survived it."""

    kills: int = 0
    aimed: Counter[str] = field(default_factory=Counter)     # phase each kill was aimed at
    landed: Counter[str] = field(default_factory=Counter)    # what each kill interrupted
    node_starts: int = 0
    instances_sent: int = 0
    acknowledged: set[str] = field(default_factory=set)      # SOP Instance UIDs
    lost: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    hl7_acknowledged: int = 0
    hl7_lost: list[str] = field(default_factory=list)
    hl7_unapplied: list[str] = field(default_factory=list)
    studies: int = 0
    results_per_study: dict[str, int] = field(default_factory=dict)
    sr_per_study: dict[str, set[str]] = field(default_factory=dict)    # distinct UIDs at the PACS
    seg_per_study: dict[str, set[str]] = field(default_factory=dict)
    key_images_per_study: dict[str, set[str]] = field(default_factory=dict)  # KOS (modality KO)
    key_captures_per_study: dict[str, set[str]] = field(default_factory=dict)  # Secondary Capture (OT)
    result_uids_match: bool = False    # the PACS's SR/SEG are those of the stored result
    receptions: Counter[str] = field(default_factory=Counter)  # C-STORE receptions per SOP UID
    held_uncommitted: set[str] = field(default_factory=set)   # at a kill: PACS had it, outbox pending
    alerts_per_study: Counter[str] = field(default_factory=Counter)  # webhook calls per study
    alerts_held_uncommitted: set[str] = field(default_factory=set)  # the same window, for alerts
    failed_jobs: int = 0
    dead_letters: int = 0
    seconds: float = 0.0

    @property
    def reported(self) -> int:
        return sum(1 for n in self.results_per_study.values() if n >= 1)

    @property
    def duplicate_receptions(self) -> int:
        return sum(n - 1 for n in self.receptions.values())

    def figures(self) -> str:
        sr = Counter(len(v) for v in self.sr_per_study.values())
        seg = Counter(len(v) for v in self.seg_per_study.values())
        ko = Counter(len(v) for v in self.key_images_per_study.values())
        return (f"kills={self.kills} aimed={dict(self.aimed)} landed={dict(self.landed)} "
                f"node_starts={self.node_starts}\n"
                f"instances_sent={self.instances_sent} acknowledged={len(self.acknowledged)} "
                f"lost={len(self.lost)} unreadable={len(self.unreadable)} "
                f"hl7_acknowledged={self.hl7_acknowledged} hl7_lost={len(self.hl7_lost)} "
                f"hl7_unapplied={len(self.hl7_unapplied)}\n"
                f"studies={self.studies} reported={self.reported} "
                f"results_per_study={dict(Counter(self.results_per_study.values()))} "
                f"sr_per_study={dict(sr)} seg_per_study={dict(seg)} kos_per_study={dict(ko)} "
                f"result_uids_match={self.result_uids_match}\n"
                f"pacs_receptions={sum(self.receptions.values())} distinct_uids={len(self.receptions)} "
                f"duplicate_receptions={self.duplicate_receptions} "
                f"held_but_uncommitted_at_a_kill={len(self.held_uncommitted)} "
                f"alerts_per_study={dict(Counter(self.alerts_per_study.values()))} "
                f"failed_jobs={self.failed_jobs} dead_letters={self.dead_letters} seconds={self.seconds:.1f}")


def make_studies(folder: Path, count: int, slices: int, rows: int, seed: int) -> list[PhantomSeries]:
    """``count`` small synthetic head CT studies (a 230 mm field of view at any ``rows``)."""
    return [make_head_ct_series(folder / f"study{i}", slices=slices, rows=rows, pixel_mm=230.0 / rows,
                                seed=seed + i, patient_id=f"KILL-{i:04d}", accession=f"ACC-KILL-{i}")
            for i in range(count)]


class _Run:
    """The state of one kill loop: peers, studies released to the scanner, the tally."""

    def __init__(self, work: Path, studies: list[PhantomSeries], rng: random.Random,
                 validate_reports: bool, quiet_period_s: float, job_window_s: float) -> None:
        self.rng = rng
        self.job_window_s = job_window_s
        self.studies = studies
        self.released = 0
        self.pacs = CountingPacs().start()
        self.webhook = HttpReceiver.start()
        self.config = write_node_config(work, self.pacs.port, self.pacs.ae_title, webhook_url=self.webhook.url,
                                        quiet_period_s=quiet_period_s, validate_reports=validate_reports)
        self.node = NodeProcess(self.config, work / "node.out")
        self.db = NodeDatabase(self.config.data_dir)
        self.scanner = Scanner(self.config.dicom_port)
        self.hl7 = Hl7Sender(self.config.hl7_port)
        self.hl7_ids: list[str] = []
        self.tally = NodeTally(studies=len(studies))

    def close(self) -> None:
        if self.node.running:
            self.node.kill()
        self.pacs.stop()
        self.webhook.stop()

    # One cycle ----------------------------------------------------------------------------
    def released_files(self) -> list[Path]:
        return [p for study in self.studies[:self.released] for p in study.paths]

    def unacknowledged(self) -> list[Path]:
        return [p for p in self.released_files() if p not in self.scanner.acknowledged]

    def idle(self) -> bool:
        """Nothing is being sent to the node and it has no work left."""
        return not self.scanner.sending and self.db.count(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running'))"
            " + (SELECT COUNT(*) FROM outbox WHERE state = 'pending')"
            " + (SELECT COUNT(*) FROM series WHERE state = 'receiving')") == 0

    def cycle(self, index: int, aim: str) -> None:
        """Start the node, let the scanner and HL7 sender go, kill the node during ``aim``."""
        if self.released < len(self.studies) and (aim == "sending" or not self.unacknowledged()):
            self.released += 1  # the scanner starts the next study once the last one is in
        received_before = len(self.pacs.receptions())
        alerted_before = len(self.webhook.requests)
        self.node.start()
        stored_before = self.db.count("SELECT COUNT(*) FROM instances")
        todo = self.unacknowledged()
        self.tally.instances_sent += len(todo)
        self.scanner.send_in_background(todo)
        self.hl7_ids += [f"K{index}-{n}" for n in range(HL7_PER_CYCLE)]
        self.hl7.send_in_background(self.hl7_ids)
        if aim == "sending" and len(todo) < 2:
            aim = self.rng.choice(PHASES[1:])  # nothing (left) to send: aim at the work instead
        if aim == "sending":
            # A random instance of the first half: the second half is still to send when the
            # kill lands, even though the node stores a few hundred small images a second
            # (leaving only 2, storescu could finish between the poll and the kill).
            aim_at = stored_before + self.rng.randint(1, max(1, len(todo) // 2))
            self._wait(lambda: self.db.count("SELECT COUNT(*) FROM instances") >= aim_at
                       or not self.scanner.sending)
            time.sleep(self.rng.uniform(0.0, 0.01))  # within the store of the next instance
        elif aim == "analysing":
            self._aim_at_a_running_job()
        else:  # about the length of one study's SR + SEG association
            self._wait(lambda: len(self.pacs.receptions()) > received_before)
            time.sleep(self.rng.uniform(0.0, 0.15))
        mid_send = self.scanner.sending
        self.node.kill()
        self.tally.kills += 1
        self.tally.aimed[aim] += 1
        self._classify(mid_send, received_before, alerted_before)
        self.scanner.wait()
        self.hl7.wait()

    def _heavy_job_running(self) -> bool:
        """An analysis or report job runs (a fraction of a second to seconds), not one of
        the short bookkeeping jobs (clinical update, follow-up pairing: milliseconds)."""
        return self.db.count(
            "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND kind IN"
            " ('analyse_study', 'finalise_study', 'replay_study', 'report_study')") > 0

    def _aim_at_a_running_job(self) -> None:
        """Return at a random moment inside an analysis or report job.

        The delay is drawn within ``job_window_s`` of the job's start. A job that ended
        before it (jobs get faster) does not waste the kill: the next heavy job of the
        study (the report follows the analysis) is aimed at, with half the window each time.
        """
        window, timeout_s = self.job_window_s, TRIGGER_TIMEOUT_S
        for _ in range(AIM_TRIES):
            self._wait(self._heavy_job_running, timeout_s)
            time.sleep(self.rng.uniform(0.0, window))
            if self._heavy_job_running() or self.idle():
                return
            window, timeout_s = window / 2, NEXT_JOB_TIMEOUT_S

    def _wait(self, phase_started: Callable[[], bool], timeout_s: float = TRIGGER_TIMEOUT_S) -> None:
        """Until ``phase_started``; or the node ran out of work: the kill lands where it lands."""
        try:
            wait_until(lambda: phase_started() or self.idle(), timeout_s=timeout_s, interval_s=0.01)
        except AssertionError:
            pass  # a phase still due but not begun (e.g. a quiet period running): kill anyway

    def _classify(self, mid_send: bool, received_before: int, alerted_before: int) -> None:
        """Name what the kill interrupted, from the database the killed node left.

        Only what the peers received during this run counts as "the peer has it, the
        commit is pending": an item held since an earlier kill is not a new hit.
        """
        landed = []
        if mid_send:
            landed.append("mid_send")
        if self.db.count("SELECT COUNT(*) FROM jobs WHERE state = 'running'"):
            landed.append("mid_job")
        elif self.db.count("SELECT COUNT(*) FROM jobs WHERE state = 'pending'"):
            landed.append("jobs_queued")
        pending = {row[0] for row in self.db.rows(
            "SELECT item_key FROM outbox WHERE channel = 'dicom' AND state = 'pending'")}
        held = pending & set(receptions_per_uid(self.pacs.receptions()[received_before:]))
        pending_any = self.db.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        alerted = {study for study in map(_alerted_study, self.webhook.requests[alerted_before:]) if study}
        alerts_held = alerted & {row[0] for row in self.db.rows(
            "SELECT study_uid FROM outbox WHERE channel = 'webhook' AND state = 'pending'")}
        self.tally.alerts_held_uncommitted |= alerts_held
        if held or alerts_held:
            landed.append("peer_has_it_commit_pending")
            self.tally.held_uncommitted |= held
        elif pending_any:
            landed.append("deliveries_pending")
        for name in landed or ["idle"]:
            self.tally.landed[name] += 1

    # The last run and the checks -----------------------------------------------------------
    def finish(self) -> None:
        """Release every study, start once more without a kill, and wait until all is done."""
        self.released = len(self.studies)
        self.node.start()
        for _ in range(5):  # an association refused under load is simply tried again
            todo = self.unacknowledged()
            if not todo:
                break
            self.tally.instances_sent += len(todo)
            self.scanner.send_in_background(todo)
            self.scanner.wait()
        self.hl7.send_in_background(self.hl7_ids)
        self.hl7.wait()
        wait_until(self._all_done, timeout_s=120 + 60 * len(self.studies), interval_s=0.2)
        code = self.node.stop()
        if code != 0:
            raise RuntimeError(f"hemex serve did not stop cleanly ({code}): {self.node.output_tail(12000)}")
        self.tally.node_starts = self.node.starts

    def _all_done(self) -> bool:
        return (self.db.count("SELECT COUNT(DISTINCT study_uid) FROM results") == len(self.studies)
                and not self.db.count("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
                and not self.db.count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                and not self.db.count("SELECT COUNT(*) FROM series WHERE state = 'receiving'"))

    def check(self) -> None:
        tally, db = self.tally, self.db
        uid_of = {p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                  for p in self.scanner.acknowledged}
        tally.acknowledged = set(uid_of.values())
        stored = dict(db.rows("SELECT sop_instance_uid, path FROM instances"))
        for uid in sorted(tally.acknowledged):
            if uid not in stored:
                tally.lost.append(uid)
                continue
            try:
                pydicom.dcmread(stored[uid]).pixel_array  # noqa: B018 - decoding is the check
            except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
                tally.unreadable.append(uid)
        messages = dict(db.rows("SELECT control_id, processed_at FROM hl7_messages"))
        tally.hl7_acknowledged = len(self.hl7.acknowledged)
        tally.hl7_lost = sorted(c for c in self.hl7.acknowledged if c not in messages)
        tally.hl7_unapplied = sorted(c for c in self.hl7.acknowledged if c in messages and messages[c] is None)

        results = db.rows("SELECT study_uid, sr_sop_uid, seg_sop_uid FROM results")
        receptions = self.pacs.receptions()
        tally.receptions = receptions_per_uid(receptions)
        for study in self.studies:
            uid = study.study_uid
            tally.results_per_study[uid] = sum(1 for r in results if r[0] == uid)
            tally.sr_per_study[uid] = {r.sop_instance_uid for r in receptions
                                       if r.study_uid == uid and r.modality == "SR"}
            tally.seg_per_study[uid] = {r.sop_instance_uid for r in receptions
                                        if r.study_uid == uid and r.modality == "SEG"}
            tally.key_images_per_study[uid] = {r.sop_instance_uid for r in receptions
                                               if r.study_uid == uid and r.modality == "KO"}
            tally.key_captures_per_study[uid] = {r.sop_instance_uid for r in receptions
                                                 if r.study_uid == uid and r.modality == "OT"}
        tally.result_uids_match = all(
            tally.sr_per_study.get(study_uid) == {sr} and tally.seg_per_study.get(study_uid) == {seg}
            for study_uid, sr, seg in results)
        for study in filter(None, map(_alerted_study, self.webhook.requests)):
            tally.alerts_per_study[study] += 1
        tally.failed_jobs = db.count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")
        tally.dead_letters = db.count("SELECT COUNT(*) FROM outbox WHERE state = 'dead'")


def _alerted_study(request: ReceivedRequest) -> str | None:
    """The study an alert webhook call names; None for a body the kill cut short (the
    receiver records what it read, and the node never got its 200)."""
    try:
        return str(json.loads(request.body)["study"]["study_instance_uid"])
    except (ValueError, KeyError, TypeError):
        return None


def node_kill_loop(kills: int, studies: int, seed: int, work: Path, *, slices: int = 24, rows: int = 256,
                   aims: Sequence[str] | None = None, job_window_s: float = 1.5,
                   validate_reports: bool = False, quiet_period_s: float = 20.0) -> NodeTally:
    """Run ``kills`` kill/restart cycles over ``studies`` phantom studies, then check.

    ``aims`` names the phase each kill aims at, in turn (default: one of ``PHASES`` at
    random per kill); an ``analysing`` kill falls within ``job_window_s`` of a job start.

    ``quiet_period_s`` must outlast a restart: a series cut short by a kill would
    otherwise be declared complete (and analysed) before the scanner re-sends the rest.
    Every phantom carries ImagesInAcquisition, so a whole series completes at once.
    """
    start = time.monotonic()
    rng = random.Random(seed)
    run = _Run(work, make_studies(work / "ct", studies, slices, rows, seed), rng, validate_reports,
               quiet_period_s, job_window_s)
    try:
        for index in range(kills):
            run.cycle(index, aims[index % len(aims)] if aims else rng.choice(PHASES))
        run.finish()
        run.check()
    finally:
        run.close()
    run.tally.seconds = time.monotonic() - start
    return run.tally


def failures(tally: NodeTally) -> list[str]:
    """What broke a promise (empty when every promise held)."""
    broken = []
    if tally.lost or tally.unreadable:
        broken.append(f"instances lost={tally.lost} unreadable={tally.unreadable}")
    if tally.hl7_lost or tally.hl7_unapplied:
        broken.append(f"hl7 lost={tally.hl7_lost} unapplied={tally.hl7_unapplied}")
    if any(n != 1 for n in tally.results_per_study.values()):
        broken.append(f"results per study {tally.results_per_study}")
    if any(len(v) != 1 for v in [*tally.sr_per_study.values(), *tally.seg_per_study.values()]):
        broken.append("not exactly one SR and one SEG per study at the PACS")
    if any(len(v) > 1 for v in tally.key_images_per_study.values()):
        broken.append("more than one key-image KOS per study at the PACS")
    if any(len(v) > 1 for v in tally.key_captures_per_study.values()):
        broken.append("more than one key-image capture per study at the PACS")
    if not tally.result_uids_match:
        broken.append("the PACS holds SR/SEG other than the stored results'")
    resent = {uid for uid, n in tally.receptions.items() if n > 1}
    if not resent <= tally.held_uncommitted:
        broken.append(f"re-sent outside the at-least-once window: {sorted(resent - tally.held_uncommitted)}")
    if len(tally.alerts_per_study) != tally.studies:
        broken.append(f"{tally.studies - len(tally.alerts_per_study)} studies without their alert")
    realerted = {study for study, n in tally.alerts_per_study.items() if n > 1}
    if not realerted <= tally.alerts_held_uncommitted:
        broken.append(f"alert sent again outside the at-least-once window: {len(realerted)} studies")
    if tally.failed_jobs or tally.dead_letters:
        broken.append(f"failed_jobs={tally.failed_jobs} dead_letters={tally.dead_letters}")
    return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--validate-reports", action="store_true", help="run dciodvfy on each SR/SEG (slow)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (node log, data dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.keep or Path(tmp)).resolve()
        tally = node_kill_loop(args.kills, args.studies, args.seed, work, slices=args.slices, rows=args.rows,
                               validate_reports=args.validate_reports)
    print(tally.figures())
    broken = failures(tally)
    for line in broken:
        print("BROKEN:", line)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
