"""The key image as a picture: the CT slice where the hematoma is largest, in a brain
window, with the mask's outline and the key figures burned in under a "not for diagnosis"
banner.

One picture serves three readers: the DICOM Secondary Capture that every PACS viewer
shows (many render neither a SEG nor a TID 1500 SR), the PNG that goes with e-mail and
webhook alerts, and the web console. No patient name or identifier is burned in, because
the PNG leaves the PACS with alerts: the study is named by its non-PHI handle only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from domain.analysis import StudyAnalysis
from domain.prediction import NO_MODEL_CONFIGURED

# Centre and width (HU) of the usual brain window: fresh blood (50-90 HU) shows bright
# against brain (20-45 HU).
BRAIN_WINDOW_HU = (40.0, 80.0)
MIN_WIDTH_PX = 512
OUTLINE_RGB = (255, 40, 40)
BANNER_RGB = (176, 0, 0)
PANEL_RGB = (0, 0, 0)
TEXT_RGB = (255, 255, 255)
BANNER_TEXT = "NOT FOR DIAGNOSIS - automated result, not verified by a radiologist"
COMPLETION_WORDS = {"PARTIAL": "preliminary", "COMPLETE": "final"}


@dataclass(frozen=True)
class KeyImageCaptions:
    """What is burned in: the banner above the image and the figures below it."""

    banner: str
    lines: tuple[str, ...]


def key_image_captions(analysis: StudyAnalysis, slice_number: int, slice_count: int) -> KeyImageCaptions:
    """The banner and figure lines for ``analysis`` (no PHI; every value names its method).

    ``slice_number`` is 1-based, counted along the slice normal (foot to head).
    """
    m = analysis.measurements
    ivh = {True: "present", False: "not seen", None: "not assessed"}[m.intraventricular_extension]
    lines = [
        f"Hematoma volume {m.volume_ml:.1f} mL (planimetry; ABC/2 {m.abc2_ml:.1f} mL)",
        f"Method {m.method_name} {m.method_version}; red outline = its mask on this slice",
        f"Intraventricular extension: {ivh}",
        _brain_line(analysis),
        expansion_risk_line(analysis),
        (f"{COMPLETION_WORDS.get(analysis.completion, analysis.completion)} report, hemex"
         f" {analysis.software_version}; slice {slice_number} of {slice_count}; study {analysis.identity.handle}"),
    ]
    return KeyImageCaptions(BANNER_TEXT, tuple(lines))


def expansion_risk_line(analysis: StudyAnalysis) -> str:
    """The expansion risk in words, with its model and whether it is clinically validated."""
    prediction = analysis.prediction
    if prediction is None:
        return f"Expansion risk: not available ({analysis.prediction_unavailable or NO_MODEL_CONFIGURED})"
    model = f"{prediction.model_name} {prediction.model_version}"
    if not prediction.clinically_validated:
        return (f"Expansion risk: {prediction.probability:.0%} by {model}:"
                " NOT CLINICALLY VALIDATED, research output only")
    return f"Expansion risk: {analysis.risk_category} ({prediction.probability:.0%}, {model}, clinically validated)"


def _brain_line(analysis: StudyAnalysis) -> str:
    brain = analysis.brain_score
    if brain is None:
        return "BRAIN score: not computed"
    if brain.points is None:
        return "BRAIN score: incomplete (missing " + ", ".join(brain.missing) + ")"
    risk = f", published expansion risk {brain.published_risk:.0%}" if brain.published_risk is not None else ""
    return f"BRAIN score: {brain.points} points{risk}"


def render_key_image(hu: np.ndarray, mask: np.ndarray, captions: KeyImageCaptions,
                     orientation: tuple[str, str] | None = None) -> np.ndarray:
    """The picture: RGB uint8, shape (rows, columns, 3).

    The slice is scaled up by a whole factor (nearest neighbour) to at least
    ``MIN_WIDTH_PX`` wide, so the captions stay legible on small images; the outline is
    drawn inside the mask's border, so it never covers blood outside the mask. With
    ``orientation`` (Patient Orientation of rows and columns, e.g. ("L", "P")) the
    patient directions are marked at the edges of the image, as viewers mark them.

    Raises
    ------
    ValueError
        ``hu`` and ``mask`` are not 2-D arrays of one shape.
    """
    if hu.ndim != 2 or hu.shape != mask.shape:
        raise ValueError(f"a 2-D slice and its mask are needed, got {hu.shape} and {mask.shape}")
    factor = max(1, math.ceil(MIN_WIDTH_PX / hu.shape[1]))
    centre, width = BRAIN_WINDOW_HU
    gray = np.clip((hu.astype(np.float32) - (centre - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    gray = np.kron(gray, np.ones((factor, factor), np.uint8))
    big_mask = np.kron(mask.astype(np.uint8), np.ones((factor, factor), np.uint8)).astype(bool)
    thickness = max(1, gray.shape[1] // 256)
    outline = big_mask & ~ndimage.binary_erosion(big_mask, iterations=thickness, border_value=0)
    image = np.repeat(gray[:, :, None], 3, axis=2)
    image[outline] = OUTLINE_RGB
    return _with_captions(image, captions, orientation)


def png_bytes(picture: np.ndarray) -> bytes:
    """``picture`` (RGB uint8) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(picture, mode="RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _opposite(direction: str) -> str:
    return direction.translate(str.maketrans("LRAPHF", "RLPAFH"))


def _with_captions(image: np.ndarray, captions: KeyImageCaptions,
                   orientation: tuple[str, str] | None) -> np.ndarray:
    width = image.shape[1]
    size = max(13, width // 34)
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin, line_height = size // 2, int(size * 1.35)
    banner = _wrapped([captions.banner], font, measure, width - 2 * margin)
    lines = _wrapped(list(captions.lines), font, measure, width - 2 * margin)
    banner_height = len(banner) * line_height + margin
    panel_height = len(lines) * line_height + margin
    canvas = Image.new("RGB", (width, banner_height + image.shape[0] + panel_height), PANEL_RGB)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, banner_height - 1), fill=BANNER_RGB)
    for index, line in enumerate(banner):
        draw.text((margin, margin // 2 + index * line_height), line, fill=TEXT_RGB, font=font)
    canvas.paste(Image.fromarray(image, mode="RGB"), (0, banner_height))
    if orientation is not None:
        rows_direction, columns_direction = orientation
        middle_y, middle_x = banner_height + image.shape[0] // 2, width // 2
        for text, anchor, xy in ((_opposite(rows_direction), "lm", (margin, middle_y)),
                                 (rows_direction, "rm", (width - margin, middle_y)),
                                 (_opposite(columns_direction), "mt", (middle_x, banner_height + margin // 2)),
                                 (columns_direction, "mb", (middle_x, banner_height + image.shape[0] - margin // 2))):
            draw.text(xy, text, fill=TEXT_RGB, font=font, anchor=anchor)
    top = banner_height + image.shape[0] + margin // 2
    for index, line in enumerate(lines):
        draw.text((margin, top + index * line_height), line, fill=TEXT_RGB, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _wrapped(lines: list[str], font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
             measure: ImageDraw.ImageDraw, max_width: int) -> list[str]:
    """Each line broken at spaces so that no piece is wider than ``max_width`` pixels."""
    out: list[str] = []
    for line in lines:
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and measure.textlength(candidate, font=font) > max_width:
                out.append(current)
                current = "  " + word
            else:
                current = candidate
        out.append(current)
    return out
