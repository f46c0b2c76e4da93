"""Configuration errors in words an administrator can act on.

A bad configuration file or environment variable stops the node with one message that
names the file and line (or the environment variable) and the setting, in the
configuration's own dotted names (``dicom.port``, ``destinations[0].port``); never a
traceback, an internal class name or a link to a library's documentation. A value is
quoted back only when it is short, the setting is not a secret and the key is a known
one (``pasword = "..."`` is a password under a typo).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError

ENV_PREFIX = "HEMEX_"
ENV_DELIMITER = "__"
_MAX_QUOTED_CHARS = 60
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TABLE_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

Location = tuple[str | int, ...]


def describe_toml_error(path: Path, text: str, error: ValueError) -> str:
    """One message for a TOML syntax error: the file, the line, the line's text, a hint."""
    message = str(error)
    found = _TOML_POSITION.search(message)
    if found is None:
        return f"{path}: not valid TOML: {message}"
    line_number = int(found.group(1))
    reason = _TOML_POSITION.sub("", message).strip()
    lines = text.splitlines()
    shown = lines[line_number - 1] if 0 < line_number <= len(lines) else ""
    hint = ""
    if reason == "Invalid value" and re.match(r"^\s*[\w.-]+\s*=\s*[A-Za-z]", shown) and not re.search(
            r"=\s*(true|false|inf|nan)\b", shown):
        hint = '\n  text values need quotes, e.g. ae_title = "HEMEX"'
    return (f"{path} line {line_number}: not valid TOML ({reason}, column {found.group(2)}):\n"
            f"  {line_number} | {shown}{hint}")


def describe_validation_error(error: ValidationError, model: type[BaseModel], config_file: Path | None,
                              overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """One message listing every invalid setting and where its value came from.

    Parameters
    ----------
    error
        What pydantic found.
    model
        The settings model (secret fields are found through its annotations).
    config_file
        The TOML file read, or None for embedded defaults.
    overrides
        Values given on the command line (``--data-dir``), which beat every other source.
    environ
        The environment (``os.environ`` when None).
    """
    environ = os.environ if environ is None else environ
    text = config_file.read_text(encoding="utf-8") if config_file is not None else ""
    where = f" in {config_file}" if config_file is not None else " (embedded defaults)"
    lines = [f"invalid configuration{where}:"]
    for item in error.errors(include_url=False):
        loc: Location = tuple(item["loc"])
        name = setting_name(loc)
        source = _source(loc, config_file, text, overrides, environ)
        # An unknown key's value is never quoted: it may be a password under a mistyped key.
        hidden = item["type"] in ("missing", "extra_forbidden") or not loc or is_secret(model, loc)
        value = "" if hidden else _quoted(item.get("input"))
        detail = "; ".join(part for part in (f"got {value}" if value else "", source) if part)
        prefix = f"{name}: " if loc else ""
        lines.append(f"  {prefix}{_reason(item)}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


def setting_name(loc: Location) -> str:
    """``("destinations", 0, "port")`` -> ``destinations[0].port``."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def is_secret(model: type[BaseModel], loc: Location) -> bool:
    """True when ``loc`` names a ``SecretStr`` setting (or lies inside one)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return False
        current = _model_or_type(fields[part].annotation)
        if current is SecretStr:
            return True
    return False


def env_variable_for(loc: Location, environ: Mapping[str, str]) -> str | None:
    """The environment variable that set ``loc`` (or the section holding it), if any.

    pydantic-settings reads ``HEMEX_DICOM__PORT`` for ``dicom.port`` and
    ``HEMEX_DESTINATIONS`` (JSON) for the whole list, case-insensitively.
    """
    keys = {key.upper(): key for key in environ}
    names = [str(part) for part in loc if not isinstance(part, int)]
    for length in range(len(names), 0, -1):
        candidate = ENV_PREFIX + ENV_DELIMITER.join(names[:length]).upper()
        if candidate in keys:
            return keys[candidate]
    return None


def toml_line_of(text: str, loc: Location) -> int | None:
    """The line of ``text`` that sets ``loc`` or, failing that, its nearest enclosing table."""
    best: tuple[int, int] | None = None  # (matched length, line number)
    table: Location = ()
    counters: dict[Location, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE_HEADER.match(line)
        if header:
            path: Location = tuple(part.strip().strip('"') for part in header.group(2).split("."))
            if header.group(1) == "[[":
                index = counters.get(path, -1) + 1
                counters[path] = index
                path = (*path, index)
            table = path
            best = _better(best, loc, table, number)
            continue
        key = _KEY_LINE.match(line)
        if key and not line.lstrip().startswith("#"):
            parts = tuple(part.strip().strip("\"'") for part in key.group(1).split("."))
            best = _better(best, loc, (*table, *parts), number)
    return None if best is None else best[1]


def _better(best: tuple[int, int] | None, loc: Location, found: Location, number: int) -> tuple[int, int] | None:
    if len(found) > len(loc) or tuple(loc[:len(found)]) != found:
        return best
    return (len(found), number) if best is None or len(found) > best[0] else best


def _source(loc: Location, config_file: Path | None, text: str, overrides: Mapping[str, Any],
            environ: Mapping[str, str]) -> str:
    if loc and loc[0] in overrides:
        return "from the command line"
    variable = env_variable_for(loc, environ) if loc else None
    if variable is not None:
        return f"from environment variable {variable}"
    if config_file is not None and loc:
        line = toml_line_of(text, loc)
        if line is not None:
            return f"{config_file.name} line {line}"
    return ""


def _reason(item: Mapping[str, Any]) -> str:
    message = str(item["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if item["type"] == "extra_forbidden":
        return "unknown setting (misspelt, or in the wrong [section]?)"
    if item["type"] == "missing":
        return "required, but not set"
    return message


def _quoted(value: object) -> str:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return ""
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED_CHARS else ""


def _model_or_type(annotation: Any) -> Any:
    """The model (or SecretStr) inside ``X``, ``X | None``, ``list[X]``."""
    if isinstance(annotation, type):
        return annotation
    for arg in get_args(annotation):
        found = _model_or_type(arg)
        if isinstance(found, type) and (issubclass(found, BaseModel) or found is SecretStr):
            return found
    return annotation
