"""HL7 test peers: a blocking MLLP client, a little MLLP server that ACKs, message builders.

Messages are synthetic (made-up patients and values), built as text so tests can also
send broken ones.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.audit_log import AuditLog
from daemon.config import Hl7Settings
from daemon.intake.message_processor import MessageProcessor
from daemon.intake.mllp_server import MllpListener
from daemon.state.database import Database
from daemon.state.hl7_message_repository import StoredMessage
from tests.support.databases import open_database

VT, FS_CR = b"\x0b", b"\x1c\x0d"


class MllpClient:
    """A real MLLP client over a socket (optionally TLS) with a finite timeout."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, source: str | None = None) -> None:
        # ``source``: the local address to connect from, e.g. 127.0.0.2 to be another peer.
        raw = socket.create_connection((host, port), timeout=timeout_s,
                                       source_address=(source, 0) if source else None)
        self.sock = ssl_context.wrap_socket(raw, server_hostname="localhost") if ssl_context else raw
        self.sock.settimeout(timeout_s)
        self._buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes, encoding: str = "utf-8") -> str:
        """Send one framed message and return its ACK text."""
        data = message.encode(encoding) if isinstance(message, str) else message
        self.send_raw(VT + data + FS_CR)
        return self.read_ack()

    def read_ack(self) -> str:
        while FS_CR not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection before an ACK")
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(FS_CR, 1)
        assert frame.startswith(VT), "ACK not framed with a start block"
        return frame[1:].decode("utf-8")

    def has_pending_data(self, wait_s: float) -> bool:
        """True when the server sent something within ``wait_s`` (a bounded poll, not a sleep)."""
        self.sock.settimeout(wait_s)
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return False
        finally:
            self.sock.settimeout(10.0)
        self._buffer += chunk
        return bool(chunk)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpClient:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def msa(ack: str) -> list[str]:
    """MSA fields of an ACK: [MSA, code, control id, text...]."""
    for segment in ack.split("\r"):
        if segment.startswith("MSA"):
            return segment.split("|") + [""]
    raise AssertionError(f"no MSA in ACK: {ack!r}")


def segment(ack: str, name: str) -> str | None:
    return next((s for s in ack.split("\r") if s.startswith(name + "|")), None)


@dataclass
class AckingServer:
    """A little MLLP server (the EHR) on a free loopback port that answers a fixed ACK code."""

    ack_code: str = "AA"
    answer: bool = True
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                buffer = b""
                try:
                    while FS_CR not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                except TimeoutError:
                    continue
                if FS_CR not in buffer:
                    continue
                message = buffer.split(FS_CR)[0].lstrip(VT)
                self.received.append(message)
                if not self.answer:
                    self._stop.wait(3)  # hold the connection open without answering
                    continue
                control_id = message.split(b"\r")[0].split(b"|")[9].decode()
                ack = (f"MSH|^~\\&|EHR||HEMEX||20240101120000||ACK^R01^ACK|A{len(self.received)}|P|2.5.1\r"
                       f"MSA|{self.ack_code}|{control_id}|test reason\r")
                conn.sendall(VT + ack.encode() + FS_CR)

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


# --- message builders -----------------------------------------------------------------

def msh(control_id: str, message_type: str, version: str = "2.5.1", charset: str = "",
        sender: str = "LAB") -> str:
    tail = f"||||||{charset}" if charset else ""
    return f"MSH|^~\\&|{sender}|HOSP|HEMEX|HOSP|20240101120000||{message_type}|{control_id}|P|{version}{tail}"


def pid(patient_id: str = "P001", issuer: str = "HOSP", dob: str = "19500615", sex: str = "M") -> str:
    return f"PID|1||{patient_id}^^^{issuer}^MR||Test^Patient||{dob}|{sex}"


def adt(control_id: str, trigger: str = "A01", **pid_args: str) -> str:
    return "\r".join([msh(control_id, f"ADT^{trigger}^ADT_A01"), "EVN|" + trigger + "|20240101120000",
                      pid(**pid_args), "PV1|1|E"]) + "\r"


def merge(control_id: str, new_id: str, old_id: str, issuer: str = "HOSP") -> str:
    return "\r".join([msh(control_id, "ADT^A40^ADT_A39"), "EVN|A40|20240101120000",
                      pid(new_id, issuer), f"MRG|{old_id}^^^{issuer}^MR"]) + "\r"


def obx(index: int, code: str, value: str, unit: str = "", time: str = "", value_type: str = "NM",
        system: str = "LN", status: str = "F") -> str:
    return f"OBX|{index}|{value_type}|{code}^^{system}||{value}|{unit}|||||{status}|||{time}"


def oru(control_id: str, observations: list[str], obr_time: str = "20240101100000", accession: str = "",
        patient_id: str = "P001", issuer: str = "HOSP", version: str = "2.5.1") -> str:
    obr = f"OBR|1||F{control_id}|LAB^Lab panel^L|||{obr_time}" + ("|" * 11 + accession if accession else "")
    return "\r".join([msh(control_id, "ORU^R01^ORU_R01", version), pid(patient_id, issuer), obr]
                     + observations) + "\r"


def rde(control_id: str, atc: str, time: str = "20240101090000", patient_id: str = "P001",
        order_control: str = "NW") -> str:
    return "\r".join([msh(control_id, "RDE^O11^RDE_O11"), pid(patient_id), f"ORC|{order_control}|O1|||||||{time}",
                      f"RXE|1^^^{time}|{atc}^Drug^ATC|1||TAB"]) + "\r"


def orm_procedure(control_id: str, status: str, performed: str, order_control: str = "SC",
                  code: str = "00C00ZZ", system: str = "I10P", patient_id: str = "P001", issuer: str = "HOSP") -> str:
    """ORM^O01 for a procedure order: ORC-5 ``status`` (CM completed), OBR-4 ``code``,
    OBR-7 ``performed`` (HL7 DTM)."""
    return "\r".join([msh(control_id, "ORM^O01^ORM_O01"), pid(patient_id, issuer),
                      f"ORC|{order_control}|O{control_id}|F{control_id}||{status}||||{performed}",
                      f"OBR|1|O{control_id}|F{control_id}|{code}^Evacuation of hematoma^{system}|||{performed}"]
                     ) + "\r"


Builder = Callable[..., str]


# --- the listener as tests run it -----------------------------------------------------

@dataclass
class Intake:
    listener: MllpListener
    processor: MessageProcessor
    db: Database
    data_dir: Path

    @property
    def port(self) -> int:
        return self.listener.port

    def messages(self) -> list[StoredMessage]:
        with self.db.reading() as repos:
            return repos.hl7_messages.received_since()


def start_intake(data_dir: Path, **hl7: object) -> Intake:
    settings = Hl7Settings(**{"host": "127.0.0.1", "port": 0, "min_free_disk_mb": 0, **hl7})  # type: ignore[arg-type]
    db = open_database(data_dir / "hemex.sqlite3")
    processor = MessageProcessor(db, settings.local_code_map)
    listener = MllpListener(settings, db, data_dir, processor, AuditLog(data_dir / "logs"))
    processor.start()
    listener.start()
    return Intake(listener, processor, db, data_dir)


