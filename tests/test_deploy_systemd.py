"""deploy/hemex.service and hemex.sysusers: valid for systemd, hardened, and they create
what the node needs (its user, its state directory) instead of assuming an administrator did."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import build_parser
from tests.support.required_tools import required_tool

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "hemex.service"
SYSUSERS = ROOT / "deploy" / "hemex.sysusers"
INSTALLED_HEMEX = "/opt/hemex/.venv/bin/hemex"


def _service_settings(text: str) -> dict[str, list[str]]:
    """``[Service]`` keys and their values, in order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _unit_for_this_machine(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart on this venv's hemex: verify checks that the binary exists."""
    hemex = Path(sys.executable).parent / "hemex"
    if not hemex.exists():
        pytest.fail(f"{hemex} missing: the test venv has no hemex console script (deploy/ensure-venv.sh)")
    text = UNIT.read_text() if text is None else text
    assert INSTALLED_HEMEX in text
    path = tmp_path / "hemex.service"
    path.write_text(text.replace(INSTALLED_HEMEX, str(hemex)))
    return path


def _verify(unit: Path) -> tuple[int, list[str]]:
    analyze = required_tool("systemd-analyze", "Debian's systemd package")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            check=False)
    # Only what concerns this unit: verify also loads the units it depends on from the host.
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if "hemex" in line]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    returncode, complaints = _verify(_unit_for_this_machine(tmp_path))
    assert returncode == 0 and complaints == [], complaints


def test_verify_reports_a_misspelt_setting(tmp_path: Path) -> None:
    # verify exits 0 on unknown keys; the test above must read its output, and this shows
    # that the output does name the unit.
    bad = UNIT.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHom=yes")
    _, complaints = _verify(_unit_for_this_machine(tmp_path, bad))
    assert any("ProtectHom" in line for line in complaints), complaints


def test_unit_exposure_stays_low(tmp_path: Path) -> None:
    analyze = required_tool("systemd-analyze", "Debian's systemd package")
    # Exposure 0.0 (locked down) to 10.0 (unprotected); --threshold takes it times ten.
    result = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", "--no-pager",
                             str(_unit_for_this_machine(tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, overall or result.stderr


def test_sysusers_file_creates_the_units_user(tmp_path: Path) -> None:
    sysusers = required_tool("systemd-sysusers", "Debian's systemd package")
    (tmp_path / "etc").mkdir()
    # --root: the user goes into tmp_path/etc/passwd, not the machine's.
    subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], check=True, capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    service = _service_settings(UNIT.read_text())
    (user,) = service["User"]
    assert service["Group"] == [user] and user in users
    _, _, uid, _, _, home, shell = users[user]
    assert 0 < int(uid) < 1000, "a system user"
    assert shell == "/usr/sbin/nologin"
    assert home == "/var/lib/" + service["StateDirectory"][0]


def test_unit_creates_its_state_directory_and_is_hardened() -> None:
    service = _service_settings(UNIT.read_text())
    assert service["StateDirectory"] == ["hemex"]
    # The node's data_dir is that state directory, whatever the configuration file says.
    assert "HEMEX_DATA_DIR=%S/hemex" in service["Environment"]
    for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                       ("CapabilityBoundingSet", "")]:
        assert service[key] == [value], key


def test_unit_runs_the_serve_command_on_the_etc_configuration() -> None:
    (exec_start,) = _service_settings(UNIT.read_text())["ExecStart"]
    program, *arguments = shlex.split(exec_start)
    assert program == INSTALLED_HEMEX
    args = build_parser().parse_args(arguments)
    assert args.command == "serve" and args.config == Path("/etc/hemex/config.toml")
