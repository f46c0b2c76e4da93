"""The HL7 side of the node as one object the daemon wires: listener, worker, lookup, ORU."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from sqlite3 import Connection

from daemon.clinical.clinical_processor import ClinicalProcessor
from daemon.clinical.mllp_server import MllpListener
from daemon.clinical.observation_mapping import validate_local_code_map
from daemon.clinical.patient_matching import clinical_variables_for_study
from daemon.config import Settings
from daemon.deliver.outbox import Outbox
from daemon.report.oru_builder import ORU_FILE_NAME, build_oru_r01, oru_control_id
from daemon.state.database import Database
from domain.analysis import StudyAnalysis, StudyIdentity
from domain.clinical import PREDICTOR_VARIABLES, ClinicalVariables
from domain.durable_files import write_atomically

log = logging.getLogger(__name__)

# (study UIDs whose clinical data changed, study UID -> predictor variables all present)
StudiesUpdatedCallback = Callable[[list[str], dict[str, bool]], None]
HL7_CHANNEL = "hl7"
HL7_DESTINATION = "ehr"  # the one outbound endpoint of Hl7Settings.outbound_host/port


def parse_study_datetime(text: str | None) -> datetime | None:
    """DICOM StudyDate+StudyTime (YYYYMMDDHHMMSS[.ffffff]) as naive local time."""
    match = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", (text or "").strip())
    if not match:
        return None
    day, hour, minute, second, frac = match.groups()
    try:
        return datetime.strptime(day + (hour or "00") + (minute or "00") + (second or "00"), "%Y%m%d%H%M%S") \
            .replace(microsecond=int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


class ClinicalIntake:
    """MLLP listener + apply worker + clinical lookup + outbound ORU writer.

    Raises
    ------
    ConfigurationError
        ``hl7.local_code_map`` names an unknown variable.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        validate_local_code_map(settings.hl7.local_code_map)
        self._settings = settings
        self._db = db
        self._on_studies_updated: StudiesUpdatedCallback | None = None
        self.processor = ClinicalProcessor(db, settings.hl7.local_code_map, self._patient_updated)
        self.listener = MllpListener(settings.hl7, db, settings.data_dir, self.processor.submit)

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self, on_studies_updated: StudiesUpdatedCallback | None = None) -> None:
        """Apply messages left from the last run, then open the MLLP port."""
        self._on_studies_updated = on_studies_updated
        resumed = self.processor.start()
        self.listener.start()
        log.info("hl7 intake started resumed_messages=%d", resumed)

    def stop(self) -> None:
        self.listener.stop()
        self.processor.stop()

    def lookup(self, identity: StudyIdentity, ct_time: datetime | None) -> ClinicalVariables:
        """The clinical variables of a study (``ClinicalLookup`` of the analyser)."""
        variables, provenance = clinical_variables_for_study(
            self._db, identity.patient_id, identity.issuer_of_patient_id, identity.accession_number,
            ct_time, self._settings.hl7)
        log.info("clinical match study=%s found=%s", identity.handle, ",".join(sorted(provenance)) or "-")
        return variables

    def studies_affected_by(self, patient_key: int) -> list[str]:
        """Study UIDs whose patient (any of its identifiers, after merges) is ``patient_key``."""
        idents = self._db.query("SELECT patient_id, issuer, issuer_universal FROM clinical_patient_ids"
                                " WHERE patient_key = ?", (patient_key,))
        uids: set[str] = set()
        for ident in idents:
            for row in self._db.query("SELECT study_uid, issuer_of_patient_id FROM studies WHERE patient_id = ?",
                                      (ident["patient_id"],)):
                issuer = row["issuer_of_patient_id"]
                if not issuer or not ident["issuer"] or issuer in (ident["issuer"], ident["issuer_universal"]):
                    uids.add(row["study_uid"])
        return sorted(uids)

    def _patient_updated(self, patient_key: int) -> None:
        if self._on_studies_updated is None:
            return
        study_uids = self.studies_affected_by(patient_key)
        if not study_uids:
            return
        complete: dict[str, bool] = {}
        for study_uid in study_uids:
            row = self._db.query("SELECT patient_id, issuer_of_patient_id, accession_number, study_datetime"
                                 " FROM studies WHERE study_uid = ?", (study_uid,))[0]
            variables, _ = clinical_variables_for_study(
                self._db, row["patient_id"], row["issuer_of_patient_id"], row["accession_number"],
                parse_study_datetime(row["study_datetime"]), self._settings.hl7)
            complete[study_uid] = not variables.missing(PREDICTOR_VARIABLES)
        self._on_studies_updated(study_uids, complete)

    def result_writer(self, outbox: Outbox) -> Callable[[StudyAnalysis, Path, Connection], None]:
        """``Hl7ResultWriter``: write the ORU^R01 into the result folder and queue it in
        the caller's transaction ``conn``."""

        def write(analysis: StudyAnalysis, folder: Path, conn: Connection) -> None:
            if self._settings.hl7.outbound_host is None:
                return
            message = build_oru_r01(analysis, self._settings.hl7)
            path = folder / ORU_FILE_NAME
            write_atomically(path, message)
            outbox.enqueue(HL7_CHANNEL, HL7_DESTINATION, oru_control_id(message), path,
                           analysis.identity.study_uid, conn=conn)

        return write
