"""External programs the tests run: found, or else a skip on a developer's machine and a
failure in CI, where deploy/install-system-packages.sh and the test extra install them all."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

# Console scripts of the test extra (hadolint, shellcheck...) sit beside the interpreter,
# which is not on PATH when the venv's python is run without activating it.
_SEARCH_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def required_tool(name: str, installed_by: str) -> str:
    """Path of the program ``name``; skips the test without it, or fails it when ``CI`` is set.

    Parameters
    ----------
    name:
        Executable name, looked up beside the test interpreter, then on PATH and in sbin.
    installed_by:
        What installs it, for the message (a Debian package or a pyproject extra).
    """
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is not None:
        return found
    missing(f"{name} not found (installed by {installed_by}; run bash deploy/test.sh)")


def in_ci() -> bool:
    """True in CI (``CI=true``, as CI services set it), where no test may skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> NoReturn:
    """Skip the test for want of something the test install provides; fail it in CI."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
