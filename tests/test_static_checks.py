"""ruff and mypy over the whole code base, so CI enforces what STYLE.md asks for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "daemon", "domain", "inference", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_run_one_way_down_the_data_path() -> None:
    """[tool.importlinter] in pyproject.toml: layers, and inference free of daemon."""
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_sql_outside_the_repositories() -> None:
    """SQL lives in daemon/state only (one repository module per aggregate)."""
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in sorted((ROOT / "daemon").rglob("*.py")) if "state" not in path.relative_to(ROOT).parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if "execute(" in line]
    assert offenders == []
