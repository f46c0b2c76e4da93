"""The node's web application as a route registry: blueprints of several modules on one
server, a plain WSGI application joined through ``wsgi_blueprint``, the security headers.
Over real HTTP (cheroot on loopback)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from flask import Blueprint

from daemon.web.app_factory import build_web_app, wsgi_blueprint
from daemon.web.server import WebServer


def _echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A plain WSGI application that says what it was asked."""
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.dumps({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                       "body": environ["wsgi.input"].read(size).decode()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _request(port: int, path: str, data: bytes | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def test_modules_add_their_routes_and_a_wsgi_app_keeps_its_own_paths_and_forms() -> None:
    hello = Blueprint("hello", __name__)
    hello.add_url_rule("/hello", "hello", lambda: "hello")
    form = Blueprint("form", __name__)
    form.add_url_rule("/form", "form", lambda: "posted", methods=["POST"])
    app = build_web_app([hello, form, wsgi_blueprint("ack", "/alerts/ack", _echo_app)], b"k" * 32)
    server = WebServer("127.0.0.1", 0, app)
    server.start()
    try:
        status, body, headers = _request(server.port, "/hello")
        assert (status, body) == (200, "hello")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        # A blueprint's form needs its CSRF token; the WSGI app's does not (its own rules).
        assert _request(server.port, "/form", b"x=1")[0] == 400
        status, body, _ = _request(server.port, "/alerts/ack/tok-123?x=1", b"confirm=yes")
        assert status == 200
        assert json.loads(body) == {"method": "POST", "path": "/alerts/ack/tok-123", "body": "confirm=yes"}
        assert json.loads(_request(server.port, "/alerts/ack/tok-456")[1])["path"] == "/alerts/ack/tok-456"
        assert _request(server.port, "/elsewhere")[0] == 404
    finally:
        server.stop()
