"""The project's metadata builds without a warning: pip shows the build backend's warnings
at every install (about fifty lines for the deprecated TOML-table license)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_builds_without_warnings_and_names_the_spdx_license(tmp_path: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    for name in ["pyproject.toml", project["readme"], *project["license-files"]]:
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "out").mkdir()
    # The backend's own PEP 517 hook, as pip calls it, on a copy: it writes egg-info
    # beside pyproject.toml.
    result = subprocess.run(
        [sys.executable, "-c", "import setuptools.build_meta as b; print(b.prepare_metadata_for_build_wheel('out'))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    metadata = (tmp_path / "out" / result.stdout.split()[-1] / "METADATA").read_text()
    assert f"License-Expression: {project['license']}" in metadata
    assert "License-File: LICENSE" in metadata


def test_wheel_carries_the_console_pages(tmp_path: Path) -> None:
    """A non-editable install (`pip install /opt/hemex`, the container images) has the
    console's templates and stylesheet, which are not Python files."""
    import zipfile

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    for name in ["pyproject.toml", project["readme"], *project["license-files"]]:
        shutil.copy(ROOT / name, tmp_path / name)
    for package in ("daemon", "domain", "inference"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import setuptools.build_meta as b; print(b.build_wheel('out'))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    names = set(zipfile.ZipFile(tmp_path / "out" / result.stdout.split()[-1]).namelist())
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "daemon" / "console").rglob("*")
             if p.suffix in (".html", ".css")}
    assert pages and pages <= names, sorted(pages - names)
