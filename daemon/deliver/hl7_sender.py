"""Outbound MLLP channel: send one stored HL7 message and wait for its ACK.

Called by the persistent outbox with ``send(destination, path)``. Every step has a
finite timeout. AA/CA returns; AE/CE, timeouts, refused or dropped connections raise
``DeliveryError`` (retried); AR/CR raises ``PermanentDeliveryError`` (dead letter).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path

from daemon.config import Hl7Settings
from daemon.tls import client_context
from domain.delivery import HL7_DESTINATION
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_ACK_BYTES = 1024 * 1024


def _msh_field(message: bytes, n: int) -> str:
    first = message.split(b"\r", 1)[0].decode("latin-1")
    fields = ["", first[3:4]] + first.split(first[3:4])[1:] if len(first) > 3 else []
    return fields[n].split("^")[0] if n < len(fields) else ""


def _msa(ack: bytes) -> tuple[str, str, str]:
    """(MSA-1 code, MSA-2 control id, MSA-3 text) of an ACK; empty strings when absent."""
    text = ack.decode("utf-8", errors="replace")
    sep = text[3:4] if text.startswith("MSH") else "|"
    for segment in text.split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(sep) + ["", "", ""]
            return fields[1].strip().upper(), fields[2].strip(), fields[3].strip()
    return "", "", ""


class Hl7MllpChannel:
    """MLLP client channel; ``endpoints`` maps a destination name to (host, port).

    Parameters
    ----------
    endpoints
        Destination name -> (host, port).
    timeout_s
        Limit for connecting, sending and waiting for the ACK, each.
    ssl_context
        Client TLS context, or None for plain MLLP.
    """

    def __init__(self, endpoints: Mapping[str, tuple[str, int]], timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._endpoints = dict(endpoints)
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Hl7Settings, destination: str = HL7_DESTINATION) -> Hl7MllpChannel:
        """The channel for ``[hl7] outbound_host/outbound_port`` under the name ``destination``."""
        endpoints = {destination: (settings.outbound_host, settings.outbound_port)} if settings.outbound_host else {}
        return cls(endpoints, settings.outbound_timeout_s,
                   client_context(settings.outbound_tls_ca, settings.outbound_tls_cert, settings.outbound_tls_key))

    def send(self, destination: str, path: Path) -> None:
        """Send the message stored at ``path`` and check its ACK.

        Raises
        ------
        DeliveryError
            Connection refused or dropped, timeout, AE/CE, or an ACK that does not match.
        PermanentDeliveryError
            AR/CR, an unknown destination, or a file that is not an HL7 message.
        """
        if destination not in self._endpoints:
            raise PermanentDeliveryError(f"no HL7 endpoint named {destination!r}")
        host, port = self._endpoints[destination]
        message = Path(path).read_bytes()
        if not message.startswith(b"MSH"):
            raise PermanentDeliveryError(f"{Path(path).name} is not an HL7 message")
        control_id = _msh_field(message, 10)
        start = time.monotonic()
        ack = self._exchange(host, port, message)
        code, acked_id, reason = _msa(ack)
        if acked_id and acked_id != control_id:
            raise DeliveryError(f"ACK for another message from {destination}")
        if code in ("AA", "CA"):
            log.info("hl7 sent destination=%s ack=%s seconds=%.3f", destination, code, time.monotonic() - start)
            return
        if code in ("AR", "CR"):
            raise PermanentDeliveryError(f"{destination} rejected the message ({code}): {reason}")
        if code in ("AE", "CE"):
            raise DeliveryError(f"{destination} answered {code}: {reason}")
        raise DeliveryError(f"{destination} sent no readable ACK")

    def _exchange(self, host: str, port: int, message: bytes) -> bytes:
        try:
            with socket.create_connection((host, port), timeout=self._timeout_s) as raw:
                sock = (self._ssl_context.wrap_socket(raw, server_hostname=host)
                        if self._ssl_context is not None else raw)
                sock.settimeout(self._timeout_s)
                sock.sendall(START_BLOCK + message + END_BLOCK)
                return self._read_ack(sock)
        except TimeoutError as exc:
            raise DeliveryError(f"no ACK from {host}:{port} within {self._timeout_s} s") from exc
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {host}:{port} failed: {exc.reason}") from exc
        except OSError as exc:
            raise DeliveryError(f"MLLP connection to {host}:{port} failed: {exc.strerror or exc}") from exc

    def _read_ack(self, sock: socket.socket) -> bytes:
        deadline = time.monotonic() + self._timeout_s
        buffer = b""
        while END_BLOCK not in buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("ACK deadline passed")
            chunk = sock.recv(65536)
            if not chunk:
                raise DeliveryError("connection closed before the ACK")
            buffer += chunk
            if len(buffer) > MAX_ACK_BYTES:
                raise DeliveryError("ACK larger than 1 MiB")
        frame = buffer.split(END_BLOCK, 1)[0]
        start = frame.rfind(START_BLOCK)
        return frame[start + 1:].replace(b"\n", b"\r") if start >= 0 else frame
