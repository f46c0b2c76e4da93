"""The BRAIN score (Wang et al., Stroke 2015) as reports read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BrainScore:
    """BRAIN score points (0-24) and the published risk of expansion at that score.

    ``points`` is None when a component is missing; ``missing`` names those components
    and ``components`` the points given to each known one. ``published_risk`` is None
    where the paper's value could not be verified; ``note`` then says why.
    """

    points: int | None
    published_risk: float | None
    components: dict[str, int]
    missing: tuple[str, ...]
    reference: str = "Wang X et al. Stroke 2015;46:376-381 (BRAIN score)"
    note: str = ""
