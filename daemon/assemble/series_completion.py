"""When is a series fully received? A decision of its own, tested with an injected clock.

Association release is not "series done" (pynetdicom issue #369): scanners send one
series over several associations, or several series over one. A series is complete
when its expected number of images is in (when known and trusted), or after a quiet
period with no new image.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import SeriesCompletionSettings
from domain.study import SeriesProgress


@dataclass(frozen=True)
class CompletionDecision:
    complete: bool
    reason: str
    # When not complete: when to look again (epoch seconds).
    recheck_at: float | None = None


def decide_completion(
    progress: SeriesProgress, now: float, settings: SeriesCompletionSettings
) -> CompletionDecision:
    """Decide whether a series is complete at time ``now``."""
    if (
        settings.use_expected_image_count
        and progress.expected_images is not None
        and progress.instance_count >= progress.expected_images
    ):
        return CompletionDecision(True, f"expected image count reached ({progress.instance_count})")
    quiet_until = progress.last_received_at + settings.quiet_period_s
    if now >= quiet_until:
        return CompletionDecision(
            True, f"quiet for {settings.quiet_period_s:g} s after {progress.instance_count} images"
        )
    return CompletionDecision(False, "receiving", recheck_at=quiet_until)
