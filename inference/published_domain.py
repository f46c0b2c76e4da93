"""How an input departs from the data Tanioka et al. 2024 published their model on.

Their cohorts (SEEDS.md, study A): non-contrast head CT with slices of 2 mm or less, a
matrix of 512 x 512 or more, 120 kVp; a field of view their preprocessing keeps whole
(256 mm); intraparenchymal hematoma masks drawn by experts; all five clinical
variables of Multimodal CNN Model 2 known. Each function below names, in words for the
SR and the alert, one way an input leaves that domain. A gantry tilt does not: the
authors converted tilted series by resampling, as we do (``tilt_statement``).
"""

from __future__ import annotations

from domain.imaging import CTVolume, HematomaMask
from inference.gantry_tilt import gantry_tilt_deg, is_sheared
from inference.tanioka_layout import LasView
from inference.tanioka_preprocessing import TaniokaGeometry

PUBLISHED_MAX_SLICE_MM = 2.0
PUBLISHED_MIN_MATRIX = 512
PUBLISHED_KVP = 120.0
# Slack for values written with rounding (2.0000001 mm, 119.99 kVp).
_SLACK = 1e-3


def outside_published_domain(volume: CTVolume, mask: HematomaMask, geometry: TaniokaGeometry,
                             variables_missing: tuple[str, ...],
                             image_only_fallback: bool) -> tuple[str, ...]:
    """One sentence per way this input departs from the published domain; () if none."""
    statements = []
    thickness = volume.slice_thickness_mm or volume.spacing_mm[0]
    if thickness > PUBLISHED_MAX_SLICE_MM + _SLACK:
        statements.append(
            f"source slices {thickness:g} mm thick: the published cohorts used slices of "
            f"{PUBLISHED_MAX_SLICE_MM:g} mm or thinner (resampled to {geometry.slice_mm:g} mm here)")
    rows, columns = volume.hu.shape[1:]
    if min(rows, columns) < PUBLISHED_MIN_MATRIX:
        statements.append(
            f"image matrix {rows} x {columns}: the published cohorts were "
            f"{PUBLISHED_MIN_MATRIX} x {PUBLISHED_MIN_MATRIX} or larger")
    if volume.kvp is not None and abs(volume.kvp - PUBLISHED_KVP) > _SLACK:
        statements.append(f"tube voltage {volume.kvp:g} kVp: the published cohorts were "
                          f"scanned at {PUBLISHED_KVP:g} kVp")
    field = _field_of_view_mm(volume)
    kept = geometry.canvas_px * geometry.pixel_mm
    # The preprocessing crops once the zoomed field exceeds canvas + 1 pixels (513).
    if field > (geometry.canvas_px + 1) * geometry.pixel_mm + _SLACK:
        statements.append(
            f"field of view {field:.0f} mm: wider than the {kept:g} mm the published "
            "preprocessing keeps, so the image was cropped about its centre (the authors' "
            "code cannot process it)")
    statements.append(
        f"hematoma mask made automatically by {mask.method_name} {mask.method_version}: the "
        "published model was trained and tested on masks drawn by experts")
    if image_only_fallback:
        statements.append(
            "image-only CNN Model 2 ran because clinical variables are missing ("
            + ", ".join(variables_missing) + "): the published best model, Multimodal CNN "
            "Model 2, uses all five")
    return tuple(statements)


def tilt_statement(volume: CTVolume) -> str | None:
    """What was done about a gantry tilt, or None for an untilted series."""
    if not is_sheared(volume.affine_lps, volume.hu.shape[0]):
        return None
    return (f"gantry tilt of {gantry_tilt_deg(volume.affine_lps):.1f} degrees corrected: the "
            "predictor input was resampled onto an orthogonal grid as the authors' dicom2nifti "
            "conversion did; volume and SEG use the acquired slices")


def _field_of_view_mm(volume: CTVolume) -> float:
    """The wider in-plane extent of the array the preprocessing starts from."""
    view = LasView.of(volume)
    return max(view.shape[axis] * view.spacing_mm[axis] for axis in (0, 1))
