"""Compressed CT from a scanner: dcmtk's storescu sends JPEG Lossless, JPEG-LS, JPEG 2000
and RLE files (and a multi-frame image) to the real listener; what is stored decodes
(pylibjpeg / pyjpegls plugins) to exactly the HU that were sent.

Synthetic phantom slices (tests/support/phantoms.py), compressed in the test by dcmtk's
dcmcjpeg (JPEG Lossless, process 14 SV1) and by pydicom's encoders.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from inference.series_to_volume import volume_from_datasets
from tests.support.dicom_listener import Listener, start_receive_listener, storescu
from tests.support.phantoms import PhantomSeries, make_head_ct_series

SLICES = 6
STORESCU_PROPOSE = {JPEGLosslessSV1: "-xs", JPEGLSLossless: "-xt", JPEG2000Lossless: "-xv", RLELossless: "-xr"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    return make_head_ct_series(tmp_path_factory.mktemp("ct"), slices=SLICES, rows=128, pixel_mm=1.8,
                               slice_mm=5.0)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    running = start_receive_listener(tmp_path)
    yield running
    running.stop()


def _compressed_copies(phantom: PhantomSeries, folder: Path, syntax: UID) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in phantom.paths:
        target = folder / source.name
        if syntax == JPEGLosslessSV1:  # pydicom has no JPEG Lossless encoder; dcmtk has
            subprocess.run(["dcmcjpeg", "--encode-lossless-sv1", str(source), str(target)], check=True,
                           capture_output=True, timeout=60)
        else:
            ds = pydicom.dcmread(source)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            ds.compress(syntax)
            ds.save_as(target, enforce_file_format=True)
        paths.append(target)
    return paths


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless],
                         ids=lambda uid: uid.name)
def test_compressed_series_is_stored_as_sent_and_decodes_to_the_same_hu(
        listener: Listener, phantom: PhantomSeries, tmp_path: Path, syntax: UID) -> None:
    files = _compressed_copies(phantom, tmp_path / "compressed", syntax)
    # As a scanner configured to send compressed: propose that syntax first.
    result = storescu(listener.port, files, "STORESCU", STORESCU_PROPOSE[syntax])
    assert result.returncode == 0, result.stderr
    rows = listener.instances()
    assert len(rows) == SLICES
    stored = [pydicom.dcmread(row.path) for row in rows]
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in stored} == {syntax}  # kept as sent
    sent = volume_from_datasets([pydicom.dcmread(p) for p in phantom.paths])
    assert np.array_equal(volume_from_datasets(stored).hu, sent.hu)


def test_multi_frame_ct_is_accepted_and_decodes(listener: Listener, phantom: PhantomSeries,
                                                tmp_path: Path) -> None:
    slices = [pydicom.dcmread(p) for p in phantom.paths]
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(slices, series_instance_uid=hd.UID(), series_number=5,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    path = tmp_path / "multiframe.dcm"
    multi.save_as(path, enforce_file_format=True)
    result = storescu(listener.port, [path], "STORESCU", "-R")
    assert result.returncode == 0, result.stderr
    rows = listener.instances()
    assert [row.sop_class_uid for row in rows] == [multi.SOPClassUID]
    stored = pydicom.dcmread(rows[0].path)
    assert np.array_equal(volume_from_datasets([stored]).hu, volume_from_datasets(slices).hu)
