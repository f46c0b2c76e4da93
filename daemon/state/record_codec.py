"""Domain records to JSON and back, for the hand-offs stored in the database.

pydantic's TypeAdapter reads the dataclasses' own type hints, so a record that changes
shape needs no codec change, and a stored record that no longer fits fails loudly.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(record_type: type) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(record_type)
    if adapter is None:
        adapter = _ADAPTERS[record_type] = TypeAdapter(record_type)
    return adapter


def to_json(record: object) -> str:
    """``record`` (a domain dataclass) as JSON text."""
    return _adapter(type(record)).dump_json(record).decode("utf-8")


def from_json(record_type: type[T], data: str) -> T:
    """The ``record_type`` stored as ``data`` by ``to_json``."""
    value: T = _adapter(record_type).validate_json(data)
    return value
