"""Read values back out of an SR dataset, as a PACS viewer would."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset


def walk_content(ds: Dataset) -> Iterator[Dataset]:
    """Every content item of an SR, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from walk_content(item)


def sr_numeric_values(ds: Dataset) -> dict[str, float]:
    """Concept name meaning -> numeric value of every NUM item (first occurrence wins)."""
    values: dict[str, float] = {}
    for item in walk_content(ds):
        if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
            values.setdefault(name, float(item.MeasuredValueSequence[0].NumericValue))
    return values


def sr_texts(ds: Dataset) -> list[str]:
    """Every TEXT value of an SR."""
    return [str(item.TextValue) for item in walk_content(ds) if item.ValueType == "TEXT"]
