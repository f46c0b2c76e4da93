"""Series selection rules, on header-only datasets built in the test."""

import pytest
from pydicom.dataset import Dataset

from daemon.analyse.series_selection import SeriesCandidate, select_series
from daemon.config import SeriesSelectionSettings

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

RULES = SeriesSelectionSettings()


def _header(**overrides: object) -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ConvolutionKernel = "H30s"
    ds.SeriesDescription = "Head NC"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = 5.0
    for key, value in overrides.items():
        setattr(ds, key, value)
    return ds


def test_thinnest_soft_tissue_axial_series_is_chosen_and_others_explained() -> None:
    candidates = [
        SeriesCandidate("1.1", 32, _header(SliceThickness=5.0)),
        SeriesCandidate("1.2", 160, _header(SliceThickness=1.0)),
        SeriesCandidate("1.3", 160, _header(SliceThickness=1.0, ConvolutionKernel="H70h")),
        SeriesCandidate("1.4", 3, _header(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])),
        SeriesCandidate("1.5", 160, _header(ImageOrientationPatient=[1, 0, 0, 0, 0, -1])),
        SeriesCandidate("1.6", 160, _header(ContrastBolusAgent="Iomeron")),
        SeriesCandidate("1.7", 160, _header(Modality="MR")),
    ]
    selection = select_series(candidates, RULES)
    assert selection.chosen_series_uid == "1.2"
    reasons = {s.series_uid: s.reason for s in selection.skipped}
    assert set(reasons) == {"1.1", "1.3", "1.4", "1.5", "1.6", "1.7"}
    assert "kernel" in reasons["1.3"]
    assert "localizer" in reasons["1.4"]
    assert "not axial" in reasons["1.5"]
    assert "contrast" in reasons["1.6"]
    assert "modality" in reasons["1.7"]
    assert "thicker" in reasons["1.1"]


def test_no_eligible_series_gives_reasons_for_all() -> None:
    selection = select_series([SeriesCandidate("2.1", 5, _header())], RULES)
    assert selection.chosen_series_uid is None
    assert "fewer than" in selection.skipped[0].reason


def test_bone_description_and_thick_slices_are_skipped() -> None:
    selection = select_series(
        [
            SeriesCandidate("3.1", 40, _header(SeriesDescription="Head BONE 1mm")),
            SeriesCandidate("3.2", 40, _header(SliceThickness=8.0)),
        ],
        RULES,
    )
    assert selection.chosen_series_uid is None
    reasons = {s.series_uid: s.reason for s in selection.skipped}
    assert "description" in reasons["3.1"]
    assert "thickness" in reasons["3.2"]


def test_non_contrast_descriptions_are_not_taken_for_contrast() -> None:
    for description in ("HEAD NON-CONTRAST 2.5mm", "CT HEAD W/O CONTRAST", "Head NON CONTRAST",
                        "HEAD WITHOUT CONTRAST", "NONCONTRAST HEAD"):
        selection = select_series([SeriesCandidate("1.1", 40, _header(SeriesDescription=description))], RULES)
        assert selection.chosen_series_uid is not None, description
    for description in ("CT HEAD WITH CONTRAST", "HEAD C+ 1mm", "CONTRAST HEAD"):
        selection = select_series([SeriesCandidate("1.1", 40, _header(SeriesDescription=description))], RULES)
        assert selection.chosen_series_uid is None, description
        assert "description" in selection.skipped[0].reason
