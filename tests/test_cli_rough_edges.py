"""What an administrator meets at the command line, run as they run it (`hemex ...` in a
child process): configuration errors as one message naming the file and line or the
environment variable, port clashes stopped before any port opens, exit code 2 and never
a traceback; quick commands that do not load TensorFlow; `status` outside the node's
folder saying where it looked."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.analyse.models import configured_predictor
from daemon.config import load_settings
from domain.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]
INTERNALS = ("Traceback", "_SettingsFromFile", "errors.pydantic.dev", "pydantic")


def _hemex(*args: str, cwd: Path = REPO_ROOT, timeout_s: float = 120,
           **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _assert_no_internals(text: str) -> None:
    for internal in INTERNALS:
        assert internal not in text, text


def _loopback_config(path: Path, body: str) -> Path:
    path.write_text(f'data_dir = "{path.parent / "data"}"\n{body}', encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_toml_syntax_error_names_file_and_line_and_exits_2(tmp_path: Path, command: str) -> None:
    config = _loopback_config(tmp_path / "site.toml", "\n[dicom]\nae_title = HEMEX\n")
    result = _hemex(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{config} line 4: not valid TOML" in result.stderr
    assert "4 | ae_title = HEMEX" in result.stderr and "need quotes" in result.stderr
    _assert_no_internals(result.stderr)


def test_invalid_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    config = _loopback_config(tmp_path / "site.toml", "")
    result = _hemex("check-config", "--config", str(config), HEMEX_DICOM__PORT="abc")
    assert result.returncode == 2
    assert f"invalid configuration in {config}" in result.stderr
    assert "dicom.port:" in result.stderr and "from environment variable HEMEX_DICOM__PORT" in result.stderr
    assert "got 'abc'" in result.stderr
    _assert_no_internals(result.stderr)


def test_invalid_values_in_the_file_name_their_lines(tmp_path: Path) -> None:
    config = _loopback_config(tmp_path / "site.toml", (
        '[dicom]\nport = "x"\n\n'
        '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\n\n'
        '[[destinations]]\nname = "archive"\nae_title = "ARCH"\nhost = "10.0.0.6"\nport = 0\n\n'
        '[alerts]\nmin_volume = 30\n'))
    result = _hemex("check-config", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any("dicom.port:" in line and "site.toml line 3" in line for line in lines), result.stderr
    assert any("destinations[1].port:" in line and "site.toml line 15" in line for line in lines), result.stderr
    assert any("alerts.min_volume: unknown setting" in line and "line 18" in line for line in lines), result.stderr
    _assert_no_internals(result.stderr)


def test_a_secret_is_never_quoted_back(tmp_path: Path) -> None:
    config = _loopback_config(tmp_path / "site.toml", "[alerts.email]\npassword = 987654321\n")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)
    assert "alerts.email.password" in str(raised.value)
    assert "987654321" not in str(raised.value)


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = _hemex("check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and f"configuration file not found: {tmp_path / 'absent.toml'}" in result.stderr


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_two_listeners_on_one_port_are_refused_before_anything_opens(tmp_path: Path, command: str) -> None:
    config = _loopback_config(tmp_path / "site.toml",
                              '[dicom]\nhost = "127.0.0.1"\nport = 2575\n[hl7]\nhost = "0.0.0.0"\nport = 2575\n')
    result = _hemex(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "dicom.port and hl7.port are both 2575" in result.stderr
    _assert_no_internals(result.stderr)


def test_metrics_port_clash_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="dicom.port and metrics.port are both 9464"):
        load_settings(None, dicom={"port": 9464}, metrics={"port": 9464})
    # Different addresses may share a number; port 0 (any free port) never clashes.
    load_settings(None, dicom={"host": "127.0.0.1", "port": 9464}, metrics={"host": "127.0.0.2", "port": 9464})
    load_settings(None, dicom={"port": 0}, hl7={"port": 0}, metrics={"port": 0})


def test_serve_on_a_port_another_program_holds_exits_2_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config = _loopback_config(tmp_path / "site.toml", (
            f'[dicom]\nhost = "127.0.0.1"\nport = {taken}\n[hl7]\nhost = "127.0.0.1"\nport = 0\n'
            '[metrics]\nport = 0\n'))
        result = _hemex("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"hemex: cannot listen on 127.0.0.1:{taken} (dicom.port): address already in use" in result.stderr
    assert "node stopped" in result.stderr  # what had opened (HL7) was closed again
    assert "Traceback" not in result.stderr


@pytest.mark.sqlite_only  # `status` on a missing SQLite file is the case here
def test_quick_commands_do_not_import_tensorflow(tmp_path: Path) -> None:
    """Building the parser and running check-config, status and --version load neither
    Keras nor TensorFlow (measured with `python -X importtime -m daemon.cli --help`)."""
    config = _loopback_config(tmp_path / "site.toml", "")
    probe = (
        "import sys, contextlib, io\n"
        "from daemon.cli import build_parser, main\n"
        "build_parser()\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['check-config', '--config', {str(config)!r}]) == 0\n"
        f"    assert main(['status', '--config', {str(config)!r}]) == 2\n"
        "    try:\n"
        "        main(['--version'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def test_help_speaks_to_the_administrator() -> None:
    result = _hemex("--help")
    assert result.returncode == 0
    assert "--config" in result.stdout and "HEMEX_" in result.stdout
    for developer_text in ("wires", "parses arguments", "module"):
        assert developer_text not in result.stdout


@pytest.mark.sqlite_only  # `status` on a missing SQLite file is the case here
def test_status_outside_the_node_folder_says_where_it_looked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _hemex("status", cwd=elsewhere)
    assert result.returncode == 2
    assert f"no node database at {elsewhere / 'var' / 'hemex.sqlite3'}" in result.stderr
    assert "--config" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_up_says_when_no_expansion_weights_are_configured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.analyse.models"):
        assert configured_predictor(load_settings(None)) is None
    assert "no expansion model weights configured" in caplog.text
    assert "prediction.weights_path" in caplog.text and "docs/model.md" in caplog.text


def test_readme_runs_hemex_from_the_virtual_environment() -> None:
    """Only `.venv/bin/hemex` exists after the README's install; a bare `hemex status`
    would be "command not found"."""
    commands = ("serve|check-config|status|dead-letters|retry-dead|replay|echo|train|evaluate|console-user"
                "|performance|export-training-set|alerts")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    bare = re.findall(rf"(?<![/\w-])hemex (?:{commands})\b", readme)
    assert bare == []
