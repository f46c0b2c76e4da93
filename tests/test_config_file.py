"""config.toml is the documented list of every setting: it loads, and it names them all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from daemon.config import Settings, load_settings

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

CONFIG = Path(__file__).resolve().parents[1] / "config.toml"


def _setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_setting_paths(annotation, f"{prefix}{name}."))
        else:
            paths.append(prefix + name)
    return paths


def test_every_setting_appears_in_config_toml() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    missing = []
    for path in _setting_paths(Settings):
        key = re.escape(path.rsplit(".", 1)[-1])
        # "key = ...", commented "# key = ..." for optional values, or a [table]/[[array]].
        if not re.search(rf"^#?\s*({key}\s*=|\[\[?{re.escape(path)}\]\]?)", text, re.MULTILINE):
            missing.append(path)
    assert missing == []


def test_config_toml_loads_and_equals_the_embedded_defaults() -> None:
    """The file documents the defaults: the node behaves the same with or without it."""
    from_file = load_settings(CONFIG).model_dump()
    defaults = Settings().model_dump()
    assert from_file == defaults
