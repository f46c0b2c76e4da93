"""Who may reach the web console, over real HTTP on loopback (cheroot, the node's server).

Each mode of [console] auth: "none" (this host only, nothing forwarded), "accounts"
(argon2-hashed local accounts, login form, CSRF, throttling, roles) and "proxy" (the
hospital's sign-on proxy names the user). The database is a fresh node database with no
study: these tests are about the door, tests/test_console_browser.py about the rooms.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from daemon.audit_log import AuditLog
from daemon.config import ConsoleSettings, load_settings
from daemon.console.accounts import AccountsFile
from daemon.console.auth import MAX_FAILED_LOGINS, Refused, is_loopback, request_user
from daemon.console.blueprint import ConsoleDependencies, console_blueprint
from daemon.state.database import Database
from daemon.web.app_factory import build_web_app
from daemon.web.server import WebServer

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN, VIEWER = ("dr.admin", "admin-password-1"), ("oncall", "viewer-password-1")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Answer:
    status: int
    body: str
    headers: Any


class Browserless:
    """An HTTP client with a cookie jar that does not follow redirects."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self._send(urllib.request.Request(self.base + path, headers=headers or {}))

    def post(self, path: str, form: dict[str, str] | list[tuple[str, str]]) -> Answer:
        data = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(self.base + path, data=data, method="POST"))

    def csrf_token(self, path: str = "/login") -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.get(path).body)
        assert found, "no CSRF token in the form"
        return found.group(1)

    def login(self, name: str, password: str) -> Answer:
        return self.post("/login", {"csrf_token": self.csrf_token(), "name": name, "password": password,
                                    "next": "/studies"})

    def _send(self, request: urllib.request.Request) -> Answer:
        try:
            with self._opener.open(request, timeout=10) as response:
                return Answer(response.status, response.read().decode(), response.headers)
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read().decode(), exc.headers)


@dataclass
class Console:
    port: int
    audit_path: Path
    accounts: AccountsFile

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@contextmanager
def _serve(tmp_path: Path, **console: Any) -> Iterator[Console]:
    settings = load_settings(None, data_dir=tmp_path / "node", console=console)
    db = Database(settings.database_path)
    audit = AuditLog(settings.log_dir)
    accounts = AccountsFile(settings.console_accounts_path)
    deps = ConsoleDependencies(settings=settings, db=db, audit=audit,
                               accounts=accounts if settings.console.auth == "accounts" else None,
                               deliver_now=lambda: None)
    server = WebServer("127.0.0.1", 0, build_web_app([console_blueprint(deps)], b"s" * 32))
    server.start()
    try:
        yield Console(server.port, audit.path, accounts)
    finally:
        server.stop()
        audit.close()
        db.close()


@pytest.fixture
def accounts_console(tmp_path: Path) -> Iterator[Console]:
    with _serve(tmp_path, auth="accounts") as console:
        console.accounts.set(*ADMIN[:1], "admin", ADMIN[1])
        console.accounts.set(*VIEWER[:1], "viewer", VIEWER[1])
        yield console


# --- auth = "none": this host only ------------------------------------------------------

def test_without_login_the_console_answers_this_host_and_nobody_forwarded(tmp_path: Path) -> None:
    with _serve(tmp_path) as console:
        client = Browserless(console.port)
        page = client.get("/studies")
        assert page.status == 200 and "local user (admin)" in page.body
        assert "console open on this host only" in page.body
        # A reverse proxy on this host would make every network user look local: refused.
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            refused = client.get("/studies", {header: "10.20.30.40"})
            assert refused.status == 403, header
            assert "[console] auth" in refused.body


def test_without_login_any_other_address_is_refused() -> None:
    settings = ConsoleSettings()
    for address in ("10.0.0.7", "192.168.1.20", "2001:db8::1", ""):
        with pytest.raises(Refused) as refused:
            request_user(settings, address, Headers(), {}, None)
        assert refused.value.status == 403
    assert request_user(settings, "127.0.0.1", Headers(), {}, None) is not None
    assert is_loopback("::1") and is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.0.2")
    assert not is_loopback("::ffff:10.0.0.1") and not is_loopback("not an address")


# --- auth = "accounts" --------------------------------------------------------------------

def test_pages_need_a_login_and_a_wrong_password_is_refused_and_audited(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    first = client.get("/studies?hours=48")
    assert first.status == 302 and first.headers["Location"].startswith("/login?next=/studies")
    wrong = client.login(ADMIN[0], "not-the-password")
    assert wrong.status == 401 and "Unknown name or wrong password" in wrong.body
    unknown = client.login("nobody", "whatever-password")
    # Which names exist is not told: the same page (but for the form's fresh CSRF token).
    token = re.compile(r'name="csrf_token" value="[^"]+"')
    assert unknown.status == 401 and token.sub("", unknown.body) == token.sub("", wrong.body)
    assert client.get("/studies").status == 302
    actions = [(r["action"], r["user"]) for r in accounts_console.audit()]
    assert ("console-login-failed", ADMIN[0]) in actions and ("console-login-failed", "nobody") in actions


def test_login_opens_the_pages_and_the_session_cookie_is_guarded(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    answer = client.login(*ADMIN)
    assert answer.status == 302 and answer.headers["Location"] == "/studies"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/studies")
    assert page.status == 200 and "dr.admin (admin)" in page.body
    for name, value in (("Content-Security-Policy", "default-src 'none'"), ("X-Frame-Options", "DENY"),
                        ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")):
        assert value in page.headers[name]
    assert any(r["action"] == "console-login" and r["user"] == ADMIN[0] for r in accounts_console.audit())
    logout = client.post("/logout", {"csrf_token": client.csrf_token("/studies")})
    assert logout.status == 302 and client.get("/studies").status == 302


def test_a_form_without_its_csrf_token_is_refused(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    assert client.post("/login", {"name": ADMIN[0], "password": ADMIN[1]}).status == 400
    client.login(*ADMIN)
    assert client.post("/deliveries/retry", {"all": "1"}).status == 400


def test_a_viewer_sees_but_may_not_retry(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    client.login(*VIEWER)
    page = client.get("/deliveries")
    assert page.status == 200 and "oncall (viewer)" in page.body
    assert client.post("/deliveries/retry", {"csrf_token": client.csrf_token("/studies"), "all": "1"}).status == 403
    assert not any(r["action"] == "console-dead-letters-retried" for r in accounts_console.audit())


def test_a_removed_account_is_logged_out_at_its_next_request(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    client.login(*VIEWER)
    assert client.get("/studies").status == 200
    assert accounts_console.accounts.remove(VIEWER[0])
    assert client.get("/studies").status == 302


def test_repeated_failures_lock_the_name_for_a_while(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    for _ in range(MAX_FAILED_LOGINS):
        assert client.login(VIEWER[0], "guess-guess-guess").status == 401
    locked = client.login(*VIEWER)  # even the right password, while locked
    assert locked.status == 429 and "Too many failed logins" in locked.body


def test_login_redirects_only_within_the_console(accounts_console: Console) -> None:
    client = Browserless(accounts_console.port)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = client.post("/login", {"csrf_token": client.csrf_token(), "name": ADMIN[0], "password": ADMIN[1],
                                        "next": target})
        assert answer.status == 302 and answer.headers["Location"] == "/studies", target


def test_console_user_command_writes_argon2_hashes_and_no_password(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'data_dir = "{tmp_path / "node"}"\n[console]\nauth = "accounts"\n', encoding="utf-8")

    def hemex(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon.cli", "console-user", *args, "--config", str(config)],
                              input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
                              cwd=REPO_ROOT)

    assert hemex("set", "dr.admin", "--role", "admin", "--password-stdin", password="correct horse battery").returncode == 0
    assert hemex("set", "short", "--password-stdin", password="2short").returncode == 2
    listed = hemex("list")
    assert listed.stdout.split() == ["dr.admin", "admin"]
    path = tmp_path / "node" / "console-accounts"
    text = path.read_text()
    assert "$argon2id$" in text and "correct horse battery" not in text
    assert path.stat().st_mode & 0o777 == 0o600
    account = AccountsFile(path).verify("dr.admin", "correct horse battery")
    assert account is not None and account.role == "admin"
    assert AccountsFile(path).verify("dr.admin", "wrong horse battery") is None
    assert hemex("remove", "dr.admin").returncode == 0 and hemex("list").stdout == ""


# --- auth = "proxy" ------------------------------------------------------------------------

def test_the_sign_on_proxy_names_the_user_and_only_it_is_believed(tmp_path: Path) -> None:
    with _serve(tmp_path, auth="proxy", admin_users=["dr.house"]) as console:
        client = Browserless(console.port)
        admin = client.get("/deliveries", {"X-Remote-User": "dr.house"})
        assert admin.status == 200 and "dr.house (admin)" in admin.body
        viewer = client.get("/studies", {"X-Remote-User": "nurse.joy"})
        assert viewer.status == 200 and "nurse.joy (viewer)" in viewer.body
        assert client.get("/studies").status == 401  # the proxy named nobody
    with _serve(tmp_path / "other", auth="proxy", trusted_proxies=["10.9.8.7"]) as console:
        # Not from the proxy's address: a header anyone can set is not believed.
        assert Browserless(console.port).get("/studies", {"X-Remote-User": "dr.house"}).status == 403
