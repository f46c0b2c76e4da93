"""pynetdicom's association server, hardened against peers that hold it up.

pynetdicom's ``AssociationServer`` wraps each accepted socket in TLS inside its one
accept thread, with no timeout: one silent TCP connection froze every new association
for as long as it stayed open. Here:

- ``get_request`` only accepts; the TLS handshake runs in the connection's own thread
  (``process_request_thread``) with ``dicom.tls_handshake_timeout_s``;
- ``verify_request`` (still in the accept thread, so nothing else is spent on a refused
  peer) counts open connections, in any phase, in all and per peer address, and refuses
  one over ``dicom.max_associations`` / ``dicom.max_associations_per_peer`` with an
  A-ASSOCIATE-RJ (transient, local limit exceeded);
- every accepted socket is a ``GuardedSocket``: a ``PduStreamGuard`` sees each byte
  before pynetdicom does and aborts the association on a PDU or data set over its limit
  or a phase over its timeout (daemon/receive/pdu_guard.py).

These are pynetdicom's documented extension points (``AE.make_server(server_class=...)``,
``socketserver``'s ``get_request``/``verify_request``/``process_request_thread``) and the
standard library's ``SSLContext.sslsocket_class``; pynetdicom's own code is unchanged.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from daemon.receive.pdu_guard import GuardViolation, PduLimits, PduStreamGuard

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ, rejected-transient (2), service provider presentation (3), local limit exceeded (2).
LOCAL_LIMIT_REJECT = struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x02, 0x03, 0x02)
# A-ABORT from the service provider (source 2), reason not specified (0).
PROVIDER_ABORT = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x00)


@dataclass(frozen=True)
class ConnectionBudget:
    max_connections: int
    max_per_peer: int
    tls_handshake_timeout_s: float


# Called with (event, peer address, calling AE title, reason, setting): "refused" before
# association, "tls-failed", or "aborted" by the guard.
RefusalHandler = Callable[[str, str, str, str, "str | None"], None]


class _GuardedRecv:
    """Every ``recv`` goes through the connection's ``PduStreamGuard`` (when it has one)."""

    guard: PduStreamGuard | None = None
    network_timeout_s: float = 60.0
    on_violation: Callable[[GuardViolation, PduStreamGuard], None] | None = None
    _violated = False
    peer_closed = False  # the peer closed, or the guard aborted: no longer counts in the budget
    on_gone_before_request: Callable[[], None] | None = None  # set once the association exists

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        guard = self.guard
        if guard is None:
            return super().recv(bufsize, flags)  # type: ignore[misc]
        if self._violated:
            return b""
        # Until the A-ASSOCIATE request is whole, each read waits only until the ACSE
        # deadline, so a peer that sends part of it and falls silent is dropped on time.
        # After that the socket keeps network_timeout_s (no settimeout per read: pynetdicom
        # reads 4 KiB at a time) and the DIMSE and PDU deadlines are checked on each read.
        timing = not guard.associated
        try:
            if timing:
                deadline = guard.deadline()
                remaining = self.network_timeout_s if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.settimeout(min(self.network_timeout_s, remaining))  # type: ignore[attr-defined]
            data = super().recv(bufsize, flags)  # type: ignore[misc]
        except TimeoutError:
            timed_out = guard.expired(time.monotonic()) or GuardViolation(
                "no data from the peer in time", "dicom.network_timeout_s")
            return self._abort(timed_out, guard)
        if not data:
            self._gone(guard)
        violation = guard.feed(data, time.monotonic())
        if violation is not None:
            return self._abort(violation, guard)
        if timing and guard.associated:
            self.settimeout(self.network_timeout_s)  # type: ignore[attr-defined]
        return data

    def _gone(self, guard: PduStreamGuard) -> None:
        self.peer_closed = True
        if not guard.associated and self.on_gone_before_request is not None:
            self.on_gone_before_request()

    def _abort(self, violation: GuardViolation, guard: PduStreamGuard) -> bytes:
        """Tell the peer (A-ABORT), stop reading, and report; pynetdicom sees the
        connection close and ends the association."""
        self._violated = True
        self._gone(guard)
        try:
            self.settimeout(1.0)  # type: ignore[attr-defined]
            self.sendall(PROVIDER_ABORT)  # type: ignore[attr-defined]
            self.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        except OSError:
            pass  # the peer went away first
        if self.on_violation is not None:
            self.on_violation(violation, guard)
        return b""


class GuardedSocket(_GuardedRecv, socket.socket):
    """A plain TCP connection whose bytes pass the guard."""


class GuardedSSLSocket(_GuardedRecv, ssl.SSLSocket):  # type: ignore[misc]  # recv(bufsize=1024) default
    """A TLS connection whose (decrypted) bytes pass the guard."""


class GuardedAssociationServer(ThreadedAssociationServer):
    """``ThreadedAssociationServer`` with connection budgets, TLS off the accept thread
    and a ``PduStreamGuard`` on every connection (module docstring).

    Built by ``AE.make_server(server_class=GuardedAssociationServer, ...)`` with the
    extra keyword arguments below; ``ssl_context`` is taken here, not by pynetdicom.
    """

    def __init__(self, ae: AE, address: tuple[str, int], ae_title: str, contexts: list[Any],
                 ssl_context: ssl.SSLContext | None = None, evt_handlers: list[evt.EventHandlerType] | None = None,
                 request_handler: Any = None, *, budget: ConnectionBudget, limits: PduLimits,
                 on_refusal: RefusalHandler) -> None:
        self._tls = ssl_context
        if ssl_context is not None:
            ssl_context.sslsocket_class = GuardedSSLSocket
        self._budget = budget
        self._limits = limits
        self._on_refusal = on_refusal
        self._pending: dict[int, str] = {}  # connections not yet handed to an Association
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.acceptor_thread: threading.Thread | None = None  # set by start_association_server
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers, request_handler)

    # --- accept thread -----------------------------------------------------------------
    def get_request(self) -> tuple[socket.socket, Any]:  # type: ignore[override]
        """Accept only: no TLS here (a silent peer would hold the accept thread)."""
        assert self.socket is not None
        raw, address = self.socket.accept()
        # A socket of our own class: it can carry the connection's bookkeeping, and its
        # guard (set once the connection is handed on) sees every byte.
        guarded = GuardedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        guarded.settimeout(self._budget.tls_handshake_timeout_s if self._tls else self._limits.network_timeout_s)
        return guarded, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Within the budget: count the connection as pending; else refuse it at once."""
        host = str(client_address[0])
        open_total, open_from_peer = self._open_connections(host)
        if open_total >= self._budget.max_connections:
            reason, setting = f"{open_total} connections open", "dicom.max_associations"
        elif open_from_peer >= self._budget.max_per_peer:
            reason, setting = f"{open_from_peer} connections open from this peer", "dicom.max_associations_per_peer"
        else:
            with self._pending_lock:
                connection_id = next(self._ids)
                self._pending[connection_id] = host
            request.hemex_connection_id = connection_id
            request.hemex_connected_at = time.monotonic()
            return True
        if self._tls is None:
            try:
                request.setblocking(False)
                request.send(LOCAL_LIMIT_REJECT)
            except OSError:
                pass
        self._on_refusal("refused", _peer_text(client_address), "", reason, setting)
        return False  # socketserver closes it

    def _open_connections(self, host: str) -> tuple[int, int]:
        """Connections that count against the budgets: pending ones (accepted, not yet
        handed to an association) and associations whose connection is still open.

        A connection the peer already closed does not count, though pynetdicom may keep
        its thread a moment longer: a monitoring probe that connects and closes must not
        take a scanner's slot.
        """
        with self._pending_lock:
            pending = dict(self._pending)
        associations = [assoc.requestor.address for assoc in self.active_associations
                        if _connection_open(assoc, pending)]
        everything = list(pending.values()) + associations
        return len(everything), sum(1 for address in everything if address == host)

    # --- the connection's own thread ---------------------------------------------------
    def process_request_thread(self, request: Any, client_address: Any) -> None:
        connection_id = getattr(request, "hemex_connection_id", 0)
        connected_at = getattr(request, "hemex_connected_at", time.monotonic())
        try:
            sock: Any = request if self._tls is None else self._handshake(request, client_address)
            if sock is None:
                return
            sock.hemex_connection_id = connection_id
            guard = PduStreamGuard(self._limits, connected_at)
            sock.guard = guard
            sock.network_timeout_s = self._limits.network_timeout_s
            sock.on_violation = lambda violation, g: self._on_refusal(
                "aborted", _peer_text(client_address), g.calling_ae, violation.reason, violation.setting)
            sock.settimeout(self._limits.network_timeout_s)
            self.finish_request(sock, client_address)
            self._end_promptly_if_gone(sock, guard)
        except Exception:  # noqa: BLE001 - socketserver's contract: report, close, keep serving
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        finally:
            with self._pending_lock:
                self._pending.pop(connection_id, None)

    def _end_promptly_if_gone(self, sock: Any, guard: PduStreamGuard) -> None:
        """A connection that ends before its A-ASSOCIATE request would keep pynetdicom's
        association thread waiting for the request until acse_timeout_s (its reader has
        stopped; nothing wakes it). An empty item on the queue it waits on is what its own
        timeout returns: the thread ends at once. A connect-and-close flood then costs no
        lingering threads."""
        assoc: Any = next((a for a in self.active_associations
                           if getattr(getattr(a.dul, "socket", None), "socket", None) is sock), None)
        if assoc is None:
            return
        sock.on_gone_before_request = lambda: assoc.dul.to_user_queue.put(None)
        if sock.peer_closed and not guard.associated:
            sock.on_gone_before_request()

    def _handshake(self, raw: GuardedSocket, client_address: Any) -> GuardedSSLSocket | None:
        """The TLS handshake within tls_handshake_timeout_s, or None (socket closed)."""
        assert self._tls is not None
        try:
            sock = self._tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            sock.settimeout(self._budget.tls_handshake_timeout_s)
            sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            setting = "dicom.tls_handshake_timeout_s" if isinstance(exc, TimeoutError) else None
            self._on_refusal("tls-failed", _peer_text(client_address), "", f"TLS handshake failed: {reason}",
                             setting)
            self.shutdown_request(raw)
            return None
        assert isinstance(sock, GuardedSSLSocket)
        return sock


def _connection_open(assoc: Any, pending: dict[int, str]) -> bool:
    """Whether an association's connection still counts (and is not already counted as pending)."""
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if sock is None or getattr(sock, "peer_closed", False):
        return False
    if getattr(sock, "hemex_connection_id", None) in pending:
        return False
    guard = getattr(sock, "guard", None)
    if isinstance(sock, GuardedSocket) and guard is not None and not guard.associated:
        # Before its request the connection may have been closed without pynetdicom having
        # read the end yet: a peek (bypassing the guard) tells. select first: Python waits
        # up to the socket's timeout before any recv, even one asked not to wait.
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return not readable or socket.socket.recv(sock, 1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):
            return False
    return True


def _peer_text(client_address: Any) -> str:
    return f"{client_address[0]}:{client_address[1]}"


def start_association_server(ae: AE, address: tuple[str, int], ssl_context: ssl.SSLContext | None,
                             handlers: list[evt.EventHandlerType], budget: ConnectionBudget, limits: PduLimits,
                             on_refusal: RefusalHandler) -> GuardedAssociationServer:
    """Start the server in a background thread named like pynetdicom's ("AcceptorServer@...")
    (``server.acceptor_thread``)."""
    server = ae.make_server(address, evt_handlers=handlers, ssl_context=ssl_context,
                            server_class=GuardedAssociationServer, budget=budget, limits=limits,
                            on_refusal=on_refusal)
    assert isinstance(server, GuardedAssociationServer)
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{time.strftime('%Y%m%d%H%M%S')}",
                              daemon=True)
    server.acceptor_thread = thread
    thread.start()
    ae._servers.append(server)  # so AE.shutdown() and server.shutdown() find it, as start_server does
    return server
