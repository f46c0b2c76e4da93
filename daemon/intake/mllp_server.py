"""The MLLP listener: frames in, durable store, ACK out. Nothing else happens here.

Runs an asyncio loop in its own thread (python-hl7's ``hl7.mllp`` streams, so a sender
keeps one connection open for many messages). Each frame is checked (hl7apy parse) and
stored on one worker thread, then acknowledged:

- AA  stored (or already stored: a duplicate control id is acknowledged, stored once);
- AE  malformed, unparseable, wrong encoding, too large, a framing error, or no disk space;
- AR  unsupported message type, HL7 version or character set, or a sending application
      not in ``hl7.allowed_senders``.

A frame that fails never ends the connection: the reader resynchronises on the next
start-of-block byte, so the sender's following messages are still read. A connection is
closed at once when its peer is not allowed or over its budget (``sender_policy.py``),
and when a frame, once begun, does not end within ``hl7.frame_timeout_s``: each
connection holds at most about twice ``hl7.max_message_bytes`` of buffer, and for a
bounded time, however its sender behaves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hl7.mllp import start_hl7_server
from sqlalchemy.exc import SQLAlchemyError

from daemon.audit_log import AuditLog, Throttle
from daemon.config import Hl7Settings
from daemon.intake.hl7_ack import build_ack
from daemon.intake.hl7_parsing import (
    MessageHeader,
    MessageRejected,
    check_message,
    read_header,
    split_frame_text,
)
from daemon.intake.message_processor import MessageProcessor
from daemon.intake.message_store import MessageStore
from daemon.intake.sender_policy import Refusal, SenderPolicy, certificate_common_name
from daemon.state.database import Database
from daemon.tls import server_context
from domain.errors import StorageFullError

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


@dataclass(frozen=True)
class AckOutcome:
    """What was answered to one frame (kept for logs and tests)."""

    ack_code: str
    reason: str  # free of message content, so it may be logged
    message_id: int | None
    duplicate: bool = False
    header: MessageHeader | None = None  # for the audit log: sender, control id, type


class _Oversized:
    """Marker for a frame longer than max_message_bytes, with its first bytes."""

    def __init__(self, head: bytes) -> None:
        self.head = head


class _Unframed:
    """Marker for an HL7 message sent without the MLLP start byte."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class _FrameTimedOut(Exception):
    """A frame began and did not end within hl7.frame_timeout_s."""


class MllpListener:
    """MLLP server on ``settings.host``/``settings.port`` (0 = any free port; see ``port``).

    Parameters
    ----------
    settings
        The ``[hl7]`` section.
    db
        The node's database (the ``hl7_messages`` table).
    data_dir
        Messages are written under ``<data_dir>/hl7/<date>/``.
    processor
        Hears of each newly stored message (after its commit, before its ACK).
    audit
        Records who sent each message and what was answered.
    """

    def __init__(self, settings: Hl7Settings, db: Database, data_dir: Path,
                 processor: MessageProcessor | None = None, audit: AuditLog | None = None) -> None:
        self._settings = settings
        self._store = MessageStore(db, data_dir, settings.min_free_disk_mb * 1024 * 1024)
        self._processor = processor
        self._audit = audit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-store")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task, str] = {}  # open connection -> peer address
        self._policy = SenderPolicy(settings)
        self._throttle = Throttle()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._port: int | None = None
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._port is None:
            raise RuntimeError("MLLP listener not started")
        return self._port

    def start(self, timeout_s: float = 30.0) -> None:
        """Bind and serve in a background thread; returns once the port is listening.

        Raises
        ------
        OSError
            The address cannot be bound; ``ssl.SSLError`` for a bad certificate.
        """
        context = server_context("hl7", self._settings.tls_cert, self._settings.tls_key,
                                 self._settings.tls_client_ca)
        self._thread = threading.Thread(target=self._run, args=(context,), name="hl7-mllp", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("MLLP listener did not start")
        if self._start_error is not None:
            raise self._start_error
        log.info("hl7 listener started host=%s port=%d tls=%s mutual_tls=%s", self._settings.host,
                 self.port, context is not None, self._settings.tls_client_ca is not None)

    def stop(self) -> None:
        """Stop accepting, close open connections, finish the message being stored."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(30)
        self._executor.shutdown(wait=True)
        log.info("hl7 listener stopped")

    # --- event loop thread ----------------------------------------------------------
    def _run(self, context: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            server: asyncio.Server = loop.run_until_complete(start_hl7_server(
                self._accept, self._settings.host, self._settings.port,
                # Room for the start byte: a payload of exactly max_message_bytes fits.
                limit=self._settings.max_message_bytes + 1, ssl=context,
                # The handshake is bounded like a frame: a silent TLS peer is dropped soon.
                ssl_handshake_timeout=self._settings.frame_timeout_s if context else None,
            ))
            self._server = server
            self._port = int(server.sockets[0].getsockname()[1])
        except (OSError, ssl.SSLError) as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _shutdown(self) -> None:
        assert self._server is not None and self._loop is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()

        async def finish() -> None:
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            self._loop.stop()  # type: ignore[union-attr]

        self._loop.create_task(finish())

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        hosts = list(self._connections.values())
        refusal = self._policy.connection_refusal(host, certificate_common_name(writer.get_extra_info("peercert")),
                                                  len(hosts), hosts.count(host))
        if refusal is not None:
            writer.close()  # nothing is read: not a byte of an unknown or excess peer is buffered
            self._report_refusal("hl7-connection-refused", peer_text, host, refusal)
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, next(self._ids)))
        self._connections[task] = host
        task.add_done_callback(lambda done: self._connections.pop(done, None))

    def _report_refusal(self, action: str, peer: str, host: str, refusal: Refusal, **fields: object) -> None:
        """A WARNING naming the setting, and the audit record; a flood is counted, not repeated."""
        suppressed = self._throttle.admit(f"{host}|{refusal.setting}")
        if suppressed is None:
            return
        log.warning("%s peer=%s reason=%s%s", action.replace("-", " "), peer, refusal.describe(),
                    f" repeated={suppressed}" if suppressed else "")
        if self._audit is not None and action == "hl7-connection-refused":
            self._audit.record(action, peer=peer, reason=refusal.describe(), repeated=suppressed, **fields)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int) -> None:
        """One connection: read frames until EOF, idle timeout or a transport error."""
        loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        count = 0
        try:
            while True:
                frame = await self._read_frame(reader, conn)
                if frame is None:
                    break
                outcome, ack = await loop.run_in_executor(self._executor, self._handle_frame, frame, peer_text)
                writer.writeblock(ack)  # type: ignore[attr-defined]  # hl7.mllp writer
                await writer.drain()
                count += 1
                log.info("hl7 message conn=%d ack=%s message=%s duplicate=%s%s", conn, outcome.ack_code,
                         outcome.message_id, outcome.duplicate,
                         f" reason={outcome.reason!r}" if outcome.ack_code != "AA" else "")
                self._record(outcome, peer_text)
        except asyncio.TimeoutError:
            log.info("hl7 connection idle conn=%d timeout_s=%s", conn, self._settings.idle_timeout_s)
        except _FrameTimedOut:
            # Never acknowledged, so the sender still holds the message and sends it again.
            log.warning("hl7 connection closed conn=%d peer=%s reason=frame not complete in time"
                        " (hl7.frame_timeout_s)", conn, peer_text)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                # Never acknowledged, so the sender still holds it and will resend.
                log.warning("hl7 connection closed mid-frame conn=%d partial_bytes=%d", conn, len(exc.partial))
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("hl7 connection error conn=%d error=%s", conn, type(exc).__name__)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
                pass
            log.debug("hl7 connection closed conn=%d messages=%d", conn, count)

    async def _read_frame(self, reader: asyncio.StreamReader, conn: int) -> bytes | _Oversized | _Unframed | None:
        """The next frame's payload; None at a clean end of stream.

        Between frames the connection may stay silent for ``idle_timeout_s``; once a
        frame's first byte is in, the frame must end within ``frame_timeout_s``.
        """
        while True:
            first = await asyncio.wait_for(reader.read(1), self._settings.idle_timeout_s)
            if not first:
                return None
            try:
                block = first + await asyncio.wait_for(reader.readuntil(END_BLOCK), self._settings.frame_timeout_s)
            except asyncio.TimeoutError as exc:
                raise _FrameTimedOut from exc
            except asyncio.LimitOverrunError as exc:
                return await self._discard_oversized(reader, exc, first)
            except asyncio.IncompleteReadError as exc:
                if not (first + exc.partial).strip(b"\r\n\t \x00"):
                    return None
                raise asyncio.IncompleteReadError(first + exc.partial, None) from exc
            start = block.rfind(START_BLOCK)
            if start < 0:
                payload = block[:-2].strip(b"\r\n\t \x00")
                if payload.startswith(b"MSH"):
                    return _Unframed(payload)
                log.warning("hl7 framing error conn=%d discarded_bytes=%d reason=no start block", conn, len(block))
                continue
            if block[:start].strip(b"\r\n\t \x00"):
                # An earlier frame was abandoned mid-way; it was never acknowledged.
                log.warning("hl7 framing error conn=%d discarded_bytes=%d reason=unterminated frame", conn, start)
            return block[start + 1:-2]

    async def _discard_oversized(self, reader: asyncio.StreamReader, exc: asyncio.LimitOverrunError,
                                 first: bytes) -> _Oversized:
        """Drop a frame over the limit up to its end block, keeping its head for the ACK."""
        try:
            return await asyncio.wait_for(self._skip_to_end(reader, exc, first), self._settings.frame_timeout_s)
        except asyncio.TimeoutError as timed_out:
            raise _FrameTimedOut from timed_out

    async def _skip_to_end(self, reader: asyncio.StreamReader, exc: asyncio.LimitOverrunError,
                           first: bytes) -> _Oversized:
        timeout = self._settings.frame_timeout_s
        head = first
        while True:
            if "is found" in str(exc):
                data = await asyncio.wait_for(reader.readexactly(exc.consumed + len(END_BLOCK)), timeout)
                head = head if len(head) > 1 else head + data[:4096]
                return _Oversized(head)
            data = await asyncio.wait_for(reader.readexactly(exc.consumed), timeout)
            head = head if len(head) > 1 else head + data[:4096]
            try:
                await asyncio.wait_for(reader.readuntil(END_BLOCK), timeout)
                return _Oversized(head)
            except asyncio.LimitOverrunError as again:
                exc = again

    def _record(self, outcome: AckOutcome, peer: str) -> None:
        """The audit record of one frame: who sent what, and what was answered."""
        if self._audit is None:
            return
        header = outcome.header
        self._audit.record("hl7-received", peer=peer, ack=outcome.ack_code, message_id=outcome.message_id,
                           duplicate=outcome.duplicate,
                           sender=header.sender if header else None,
                           control_id=header.control_id if header else None,
                           message_type=header.type_name if header else None,
                           reason=outcome.reason if outcome.ack_code != "AA" else None)

    # --- store thread ---------------------------------------------------------------
    def _handle_frame(self, frame: bytes | _Oversized | _Unframed, peer: str = "") -> tuple[AckOutcome, bytes]:
        """Check, store and build the ACK for one frame (runs on the store thread)."""
        if isinstance(frame, _Oversized):
            limit = self._settings.max_message_bytes
            return self._reject(frame.head.lstrip(START_BLOCK), "AE", "207",
                                f"message larger than the {limit} byte limit (hl7.max_message_bytes)")
        if isinstance(frame, _Unframed):
            return self._reject(frame.data, "AE", "100", "framing error: message without MLLP start block")
        try:
            checked = check_message(frame)
        except MessageRejected as rejected:
            return self._reject(frame, rejected.ack_code, rejected.error_code, rejected.reason,
                                rejected.log_reason)
        refusal = self._policy.message_refusal(checked.header)
        if refusal is not None:
            self._report_refusal("hl7-message-refused", peer, peer.rsplit(":", 1)[0], refusal)
            return self._reject(frame, "AR", "207", refusal.describe())
        try:
            stored = self._store.store(checked, frame)
        except StorageFullError as exc:
            log.error("hl7 message not stored reason=storage_full")
            return self._reject(frame, "AE", "207", f"message not stored: {exc}")
        except (OSError, SQLAlchemyError) as exc:
            log.error("hl7 message not stored reason=%s", type(exc).__name__)
            return self._reject(frame, "AE", "207", f"message not stored: {type(exc).__name__}")
        if not stored.duplicate and self._processor is not None:
            self._processor.submit(stored.message_id)
        outcome = AckOutcome("AA", "duplicate" if stored.duplicate else "", stored.message_id, stored.duplicate,
                             checked.header)
        return outcome, self._ack(checked.header, "AA", "")

    def _reject(self, frame: bytes, code: str, error_code: str, reason: str,
                log_reason: str | None = None) -> tuple[AckOutcome, bytes]:
        header: MessageHeader | None
        try:
            header = read_header(split_frame_text(frame))
        except MessageRejected:
            header = None
        return AckOutcome(code, log_reason or reason, None, header=header), self._ack(header, code, reason, error_code)

    def _ack(self, header: MessageHeader | None, code: str, text: str, error_code: str = "") -> bytes:
        return build_ack(header, code, text, error_code, self._settings.sending_application,
                         self._settings.sending_facility)
