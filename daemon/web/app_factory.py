"""The node's web application, assembled from the blueprints of the modules that serve
something over HTTP: the route registry.

Each module keeps its routes in a Flask ``Blueprint`` of its own (``daemon.ops.metrics``:
``/metrics`` and ``/healthz``; ``daemon.console``: the console pages) and decides its own
protection; ``daemon.app`` hands them all to ``build_web_app`` (``Node.web_blueprints``).
A module that adds routes (an alert-acknowledgement link, say) adds its blueprint to that
list and nothing else; a plain WSGI application joins through ``wsgi_blueprint``.

Every form that changes something carries a CSRF token (Flask-WTF's ``CSRFProtect``,
checked on every POST); every response says not to cache it, not to frame it and not to
send a referrer, and allows no script.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers.response import Response as BaseResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self';"
                               " frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def wsgi_blueprint(name: str, path_prefix: str, app: WSGIApplication) -> Blueprint:
    """A plain WSGI application served at ``path_prefix`` and every path below it.

    The application sees the request's environ unchanged (``PATH_INFO`` is the full
    path) and answers it itself: its own protection, and no console CSRF token, since a
    link in an e-mail or a form of its own cannot carry one (``csrf_exempt`` is set).
    """
    blueprint = Blueprint(name, __name__)
    blueprint.csrf_exempt = True  # type: ignore[attr-defined]
    prefix = "/" + path_prefix.strip("/")
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

    def delegate(rest: str = "") -> BaseResponse:
        return Response.from_app(app, request.environ, buffered=True)

    blueprint.add_url_rule(prefix, f"{name}_root", delegate, methods=methods, strict_slashes=False)
    blueprint.add_url_rule(f"{prefix}/<path:rest>", name, delegate, methods=methods)
    return blueprint


def build_web_app(blueprints: Sequence[Blueprint], secret_key: bytes, *, secure_cookies: bool = False,
                  session_hours: float = 12.0) -> Flask:
    """The WSGI application serving every blueprint in ``blueprints``.

    Parameters
    ----------
    blueprints
        The routes, each module's own (registered in this order).
    secret_key
        Signs the session cookie and the CSRF tokens (kept in the data directory, so that a
        restart does not log everyone out).
    secure_cookies
        Send the session cookie over HTTPS only (behind a TLS reverse proxy).
    session_hours
        How long a login lasts.
    """
    app = Flask("hemex", static_folder=None, template_folder=None)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="hemex_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the session that holds it
        MAX_CONTENT_LENGTH=64 * 1024,  # the console's forms are small
    )
    csrf = CSRFProtect(app)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
        if getattr(blueprint, "csrf_exempt", False):
            csrf.exempt(blueprint)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
