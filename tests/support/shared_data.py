"""Where the read-only shared data lies: ``../shared/data`` beside the repository, as CI
lays it out (``HEMEX_SHARED_DATA`` overrides). In CI a missing folder fails the test that
needs it; on a developer's machine it skips it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.required_tools import missing

_REPOSITORY = Path(__file__).absolute().parents[2]


def shared_data(*parts: str) -> Path:
    """``<shared>/data/<parts>``; fails in CI, skips elsewhere, when it is not there."""
    candidates = [Path(os.environ["HEMEX_SHARED_DATA"])] if os.environ.get("HEMEX_SHARED_DATA") else []
    # Both the path as given and the resolved one: a checkout reached through a symlink
    # has its ../shared beside the link, not beside the target.
    candidates += [_REPOSITORY.parent / "shared" / "data", _REPOSITORY.resolve().parent / "shared" / "data"]
    for root in candidates:
        if (root / Path(*parts)).exists():
            return root / Path(*parts)
    missing(f"shared data {'/'.join(parts)} not found in any of {[str(c) for c in candidates]}")
