"""When is a series fully received? A decision of its own, tested with an injected clock.

Association release is not "series done" (pynetdicom issue #369): scanners send one
series over several associations, or several series over one. A series is complete

1. when its expected number of images (Images in Acquisition) is in, when known;
2. else, when the slices received form one evenly spaced stack without gaps
   (``is_whole_stack``): at once when the association that brought them has ended with
   an orderly release (``released``: the peer said it has nothing more to send on it;
   the tracker decides when that counts), otherwise after a short confirm period
   without a new image;
3. else after the quiet period without a new image.

Images that arrive after completion reopen the series (a corrected report follows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.config import SeriesCompletionSettings
from domain.study import SeriesProgress

# Spacing between neighbouring slices may differ from the median by this fraction (plus
# a hundredth of a millimetre of rounding in Image Position (Patient)).
_SPACING_TOLERANCE = 0.05
_ROUNDING_MM = 0.01


@dataclass(frozen=True)
class CompletionDecision:
    complete: bool
    reason: str
    # When not complete: when to look again (epoch seconds).
    recheck_at: float | None = None


def is_whole_stack(positions: Sequence[float | None], min_slices: int) -> bool:
    """True when the slice positions form one evenly spaced stack without a gap.

    False when a position is missing, repeated (two reconstructions in one series, a
    re-sent slice under a new UID), or any spacing differs from the median spacing by
    more than 5 %: a missing slice leaves a double gap.
    """
    if len(positions) < min_slices or any(p is None for p in positions):
        return False
    ordered = sorted(float(p) for p in positions if p is not None)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    median = sorted(gaps)[len(gaps) // 2]
    if median <= _ROUNDING_MM:
        return False
    limit = median * _SPACING_TOLERANCE + _ROUNDING_MM
    return all(abs(gap - median) <= limit for gap in gaps)


def decide_completion(progress: SeriesProgress, now: float, settings: SeriesCompletionSettings,
                      positions: Sequence[float | None] | None = None,
                      released: bool = False) -> CompletionDecision:
    """Decide whether a series is complete at time ``now``.

    ``positions`` are the slice positions of its instances; None when not looked up
    (the decision right after an instance is stored: only the count rule applies).
    ``released``: the association that brought its images has just been released.
    """
    count = progress.instance_count
    if (settings.use_expected_image_count and progress.expected_images is not None
            and count >= progress.expected_images):
        return CompletionDecision(True, f"expected image count reached ({count})")
    quiet_until = progress.last_received_at + settings.quiet_period_s
    if now >= quiet_until:
        return CompletionDecision(True, f"quiet for {settings.quiet_period_s:g} s after {count} images")
    if settings.use_slice_positions and progress.expected_images is None:
        if released and positions is not None and is_whole_stack(positions, settings.min_stack_slices):
            return CompletionDecision(True, f"whole stack of {count} slices, association released")
        confirm_until = progress.last_received_at + settings.confirm_s
        if now < confirm_until:
            return CompletionDecision(False, "receiving", recheck_at=confirm_until)
        if positions is not None and is_whole_stack(positions, settings.min_stack_slices):
            return CompletionDecision(True, f"whole stack of {count} slices, {settings.confirm_s:g} s without"
                                            " a new image")
    return CompletionDecision(False, "receiving", recheck_at=quiet_until)
