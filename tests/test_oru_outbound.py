"""The outbound ORU^R01: built from a StudyAnalysis, sent to a real little MLLP server.

Synthetic study and made-up values; the "EHR" is a socket server in the test that
answers AA, AE or AR, or never answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from daemon.config import Hl7Settings
from daemon.deliver.hl7_sender import Hl7MllpChannel
from daemon.report.oru_builder import build_oru_r01, oru_control_id
from domain.analysis import StudyAnalysis, StudyIdentity
from domain.brain_score import BrainScore
from domain.clinical import ClinicalVariables
from domain.errors import DeliveryError, PermanentDeliveryError
from domain.measurements import HematomaMeasurements
from domain.prediction import ExpansionPrediction
from tests.support.hl7_peers import AckingServer

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

SETTINGS = Hl7Settings(sending_facility="STROKE-UNIT", outbound_receiving_application="EHR")


def analysis(completion: str = "PARTIAL", validated: bool = False) -> StudyAnalysis:
    return StudyAnalysis(
        identity=StudyIdentity("1.2.826.0.1.3680043.10.1341.9.1", "st-0123456789", "P001", "HOSP",
                               "ACC-CT", "Test^Ren\u00e9e", "20240101110000"),
        series_uid="1.2.826.0.1.3680043.10.1341.9.2",
        measurements=HematomaMeasurements(23.46, 21.9, (40.0, 30.0, 35.0), 187680, True, "threshold", "1.0"),
        clinical=ClinicalVariables(pt_inr=1.4),
        prediction=ExpansionPrediction(0.4123, "Tanioka multimodal CNN model 2", "1.0", "synthetic phantoms",
                                       validated, ("pt_inr",), ("systolic_bp_mmhg",), False),
        brain_score=BrainScore(9, None, {"volume": 7, "ivh": 2}, ()),
        completion=completion,  # type: ignore[arg-type]
        risk_category="high" if validated else "not_validated",
        software_version="0.1.0",
    )


def obx_rows(message: bytes) -> dict[str, list[str]]:
    rows = {}
    for seg in message.decode("utf-8").split("\r"):
        if seg.startswith("OBX|"):
            fields = seg.split("|")
            rows[fields[3].split("^")[0]] = fields
    return rows


def test_preliminary_and_final_status_in_obr25_and_obx11() -> None:
    preliminary = build_oru_r01(analysis("PARTIAL"), SETTINGS)
    final = build_oru_r01(analysis("COMPLETE"), SETTINGS)
    for message, status in ((preliminary, "P"), (final, "F")):
        # Read back strictly: the message is a valid v2.5.1 ORU_R01 structure.
        parsed = parse_message(message.decode("utf-8"), find_groups=True,
                               validation_level=VALIDATION_LEVEL.STRICT)
        assert parsed.validate()
        obr = next(s for s in message.decode().split("\r") if s.startswith("OBR|")).split("|")
        assert obr[25] == status and obr[18] == "ACC-CT"
        assert {row[11] for row in obx_rows(message).values()} == {status}
    # The final result names the same filler order (the study) so it replaces the preliminary one.
    obr3 = [next(s for s in m.decode().split("\r") if s.startswith("OBR|")).split("|")[3] for m in (preliminary, final)]
    assert obr3[0] == obr3[1] and obr3[0].startswith("1.2.826.0.1.3680043.10.1341.9.1")
    assert oru_control_id(preliminary) != oru_control_id(final)


def test_values_methods_and_honest_model_status() -> None:
    message = build_oru_r01(analysis(validated=False), SETTINGS)
    rows = obx_rows(message)
    assert rows["HEMEX-VOL"][5] == "23.5" and rows["HEMEX-VOL"][6] == "mL"
    assert rows["HEMEX-VOL"][17].startswith("threshold^threshold 1.0")
    assert rows["HEMEX-ABC2"][5] == "21.9"
    assert rows["HEMEX-HEP"][5] == "0.412" and "Tanioka" in rows["HEMEX-HEP"][17]
    assert rows["HEMEX-VALIDATION"][5].startswith("NOT-VALIDATED^Not clinically validated - not for clinical use")
    assert rows["HEMEX-RISK"][5].startswith("NOT-VALIDATED")
    assert rows["HEMEX-VARS-MISSING"][5] == "systolic_bp_mmhg"
    assert rows["HEMEX-BRAIN"][5] == "9"
    assert "Test^Ren\u00e9e" in message.decode("utf-8")  # PN -> XPN, UTF-8 declared in MSH-18
    validated = obx_rows(build_oru_r01(analysis(validated=True), SETTINGS))
    assert validated["HEMEX-RISK"][5].startswith("HIGH^") and validated["HEMEX-VALIDATION"][5].startswith("VALIDATED")


@pytest.fixture
def stored_oru(tmp_path: Path) -> Path:
    path = tmp_path / "result.oru.hl7"
    path.write_bytes(build_oru_r01(analysis(), SETTINGS))
    return path


def server(code: str = "AA", answer: bool = True) -> Iterator[AckingServer]:
    peer = AckingServer(ack_code=code, answer=answer)
    yield peer
    peer.stop()


@pytest.fixture
def ehr_aa() -> Iterator[AckingServer]:
    yield from server("AA")


@pytest.fixture
def ehr_ae() -> Iterator[AckingServer]:
    yield from server("AE")


@pytest.fixture
def ehr_ar() -> Iterator[AckingServer]:
    yield from server("AR")


@pytest.fixture
def ehr_silent() -> Iterator[AckingServer]:
    yield from server(answer=False)


def channel(port: int, timeout_s: float = 5.0) -> Hl7MllpChannel:
    return Hl7MllpChannel({"ehr": ("127.0.0.1", port)}, timeout_s)


def test_send_returns_on_aa(ehr_aa: AckingServer, stored_oru: Path) -> None:
    channel(ehr_aa.port).send("ehr", stored_oru)
    assert ehr_aa.received == [stored_oru.read_bytes()]


def test_ae_is_a_retryable_delivery_error(ehr_ae: AckingServer, stored_oru: Path) -> None:
    with pytest.raises(DeliveryError, match="AE") as raised:
        channel(ehr_ae.port).send("ehr", stored_oru)
    assert not isinstance(raised.value, PermanentDeliveryError)


def test_ar_is_permanent(ehr_ar: AckingServer, stored_oru: Path) -> None:
    with pytest.raises(PermanentDeliveryError, match="AR"):
        channel(ehr_ar.port).send("ehr", stored_oru)


def test_refused_connection_and_missing_ack_time_out_as_delivery_errors(ehr_silent: AckingServer,
                                                                       stored_oru: Path,
                                                                       refusing_port: int) -> None:
    with pytest.raises(DeliveryError, match="failed"):
        channel(refusing_port).send("ehr", stored_oru)
    with pytest.raises(DeliveryError, match="no ACK"):
        channel(ehr_silent.port, timeout_s=0.5).send("ehr", stored_oru)
    with pytest.raises(PermanentDeliveryError, match="no HL7 endpoint"):
        channel(ehr_silent.port).send("pacs", stored_oru)


def test_channel_from_settings_uses_the_outbound_endpoint(ehr_aa: AckingServer, stored_oru: Path) -> None:
    settings = Hl7Settings(outbound_host="127.0.0.1", outbound_port=ehr_aa.port, outbound_timeout_s=5)
    Hl7MllpChannel.from_settings(settings).send("ehr", stored_oru)
    assert len(ehr_aa.received) == 1
