"""Long lists of UIDs as SQL ``IN (...)`` lists, a bounded batch at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

_BATCH = 400  # bound parameters per query, well under SQLite's limit


def in_list_batches(uids: Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """For each batch of ``uids``: the placeholders (``:u0, :u1, ...``) and their values."""
    for start in range(0, len(uids), _BATCH):
        batch = uids[start:start + _BATCH]
        yield ", ".join(f":u{i}" for i in range(len(batch))), {f"u{i}": uid for i, uid in enumerate(batch)}
