"""Who is asking: the console's access decision for one request.

Three modes (``console.auth``):

- ``none`` (the default): no login, but only for requests from this host (a loopback
  address) that no proxy forwarded: a reverse proxy on the same host would otherwise make
  every user of the network look local. The local user may act.
- ``accounts``: a login form against the accounts file; the session cookie (signed,
  HttpOnly, SameSite=Strict) names the account, which must still exist at each request.
- ``proxy``: the hospital's reverse proxy logs the user in (SSO) and names them in
  ``proxy_user_header``; only requests from ``trusted_proxies`` are believed.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from werkzeug.datastructures import Headers

from daemon.config import ConsoleSettings
from daemon.console.accounts import AccountsFile, Role

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")
MAX_FAILED_LOGINS = 5
LOCKOUT_S = 300.0


@dataclass(frozen=True)
class ConsoleUser:
    """The person behind a request; ``via`` says how they were recognised."""

    name: str
    role: Role
    via: str  # "local" | "account" | "proxy"

    @property
    def may_act(self) -> bool:
        """Whether they may change something (retry dead letters)."""
        return self.role == "admin"


class Refused(Exception):
    """The request is refused outright (not a matter of logging in)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def request_user(settings: ConsoleSettings, remote_addr: str, headers: Headers,
                 session: Mapping[str, object], accounts: AccountsFile | None) -> ConsoleUser | None:
    """The user of a request, or None when they must log in first (``accounts`` mode).

    Raises
    ------
    Refused
        The request may not reach the console at all (the reason says why).
    """
    if settings.auth == "none":
        if not is_loopback(remote_addr) or any(name in headers for name in FORWARDING_HEADERS):
            raise Refused(403, "The console answers only on the node's own host until an administrator"
                               " sets [console] auth to \"accounts\" or \"proxy\" (docs/admin.md).")
        return ConsoleUser("local user", "admin", "local")
    if settings.auth == "proxy":
        if not _in_networks(remote_addr, settings.trusted_proxies):
            raise Refused(403, "This console is reached through the hospital's sign-on proxy only.")
        name = headers.get(settings.proxy_user_header, "").strip()
        if not name:
            raise Refused(401, f"The sign-on proxy sent no user name ({settings.proxy_user_header}).")
        return ConsoleUser(name, "admin" if name in settings.admin_users else "viewer", "proxy")
    user = session.get("user")
    if not isinstance(user, str) or accounts is None:
        return None
    account = accounts.accounts().get(user)
    if account is None:
        return None  # removed since the login: the session ends
    return ConsoleUser(account.name, account.role, "account")


class LoginThrottle:
    """After ``MAX_FAILED_LOGINS`` failures for one name from one address, that pair waits
    ``LOCKOUT_S`` seconds (argon2 makes each guess slow; this bounds how many there are)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], list[float]] = {}

    def locked(self, name: str, address: str) -> bool:
        with self._lock:
            recent = self._recent((name, address))
            return len(recent) >= MAX_FAILED_LOGINS

    def failed(self, name: str, address: str) -> None:
        with self._lock:
            self._recent((name, address)).append(self._clock())

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop((name, address), None)

    def _recent(self, key: tuple[str, str]) -> list[float]:
        cutoff = self._clock() - LOCKOUT_S
        recent = [t for t in self._failures.get(key, []) if t >= cutoff]
        self._failures[key] = recent
        return recent
