"""Real alert receivers for tests: an SMTP server (aiosmtpd) and an HTTP webhook server,
each on a free loopback port, recording what they received."""

from __future__ import annotations

import email
import email.message
import http.server
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from tests.support.peers import free_port


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """Answers every POST with ``status`` (200 by default) and records it."""

    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    requests: list[ReceivedRequest] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    @classmethod
    def start(cls, status: int = 200) -> HttpReceiver:
        holder: dict[str, HttpReceiver] = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver = holder["r"]
                if receiver.status < 300:
                    receiver.requests.append(ReceivedRequest(self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        receiver = cls(server, thread, status=status)
        holder["r"] = receiver
        thread.start()
        return receiver

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Collect:
    def __init__(self, messages: list[email.message.Message]) -> None:
        self.messages = messages

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


@dataclass
class SmtpReceiver:
    controller: Controller
    port: int
    messages: list[email.message.Message]

    @classmethod
    def start(cls) -> SmtpReceiver:
        messages: list[email.message.Message] = []
        # aiosmtpd's controller checks it started by connecting to its port, so it cannot
        # take port 0: it gets a free one picked here.
        port = free_port()
        controller = Controller(_Collect(messages), hostname="127.0.0.1", port=port)
        controller.start()
        return cls(controller, port, messages)

    def stop(self) -> None:
        self.controller.stop()
