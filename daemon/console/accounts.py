"""Local console accounts: one file, one ``name:role:argon2-hash`` line per account.

Passwords are hashed with argon2id (argon2-cffi's defaults, the OWASP recommendation);
the file holds no password. ``hemex console-user`` writes it; the node reads it again
whenever it changes, so an added, changed or removed account applies at the next request
without a restart. A removed account's sessions end at their next request.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain.durable_files import ensure_private_dir
from domain.errors import ConfigurationError

Role = Literal["viewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "admin")
MIN_PASSWORD_CHARS = 10
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_HEADER = "# hemex console accounts: name:role:argon2 hash, one a line. Edit with `hemex console-user`.\n"


@dataclass(frozen=True)
class ConsoleAccount:
    """One local account: its name, its role (viewer: looks; admin: also acts) and hash."""

    name: str
    role: Role
    password_hash: str


class AccountsFile:
    """The accounts file at ``path`` (it need not exist yet).

    Safe to share between threads: the parsed accounts are replaced whole when the file's
    modification time or size changes.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._hasher = PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, ConsoleAccount] = {}
        # Verified against when the name is unknown, so that a wrong name takes as long
        # as a wrong password and does not tell which names exist.
        self._decoy = self._hasher.hash("hemex-decoy-password")

    def accounts(self) -> dict[str, ConsoleAccount]:
        """Every account, by name (empty when the file does not exist).

        Raises
        ------
        ConfigurationError
            A line of the file is malformed (the message gives its number, no hash).
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._accounts = _parse(self.path.read_text(encoding="utf-8"), self.path)
                self._stamp = stamp
            return dict(self._accounts)

    def verify(self, name: str, password: str) -> ConsoleAccount | None:
        """The account when ``password`` is its password, else None."""
        account = self.accounts().get(name)
        try:
            self._hasher.verify(account.password_hash if account else self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return account

    def set(self, name: str, role: Role, password: str) -> None:
        """Add the account, or change its role and password.

        Raises
        ------
        ValueError
            A name with other characters than letters, digits and ``._@-``, an unknown
            role, or a password shorter than ``MIN_PASSWORD_CHARS``.
        """
        if not _NAME.match(name):
            raise ValueError("account names are 1 to 64 letters, digits and . _ @ -")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_CHARS:
            raise ValueError(f"passwords have at least {MIN_PASSWORD_CHARS} characters")
        accounts = self.accounts()
        accounts[name] = ConsoleAccount(name, role, self._hasher.hash(password))
        self._write(accounts)

    def remove(self, name: str) -> bool:
        """Remove the account; False when there was none of that name."""
        accounts = self.accounts()
        if accounts.pop(name, None) is None:
            return False
        self._write(accounts)
        return True

    def _write(self, accounts: dict[str, ConsoleAccount]) -> None:
        """Replace the file atomically, keeping its mode, owner and group (a new file is 0600)."""
        text = _HEADER + "".join(f"{a.name}:{a.role}:{a.password_hash}\n" for a in sorted(accounts.values(),
                                                                                       key=lambda a: a.name))
        ensure_private_dir(self.path.parent)  # the data directory, when that is where it lives
        previous = self.path.stat() if self.path.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if previous is not None:
                os.chmod(tmp, previous.st_mode & 0o777)
                if os.geteuid() == 0:
                    os.chown(tmp, previous.st_uid, previous.st_gid)
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise


def _parse(text: str, path: Path) -> dict[str, ConsoleAccount]:
    accounts: dict[str, ConsoleAccount] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, password_hash = rest.partition(":")
        if not _NAME.match(name) or role not in ROLES or not password_hash.startswith("$argon2"):
            raise ConfigurationError(f"{path} line {number}: not a name:role:argon2-hash line")
        accounts[name] = ConsoleAccount(name, role, password_hash)  # type: ignore[arg-type]
    return accounts
