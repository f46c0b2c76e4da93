"""A whole stack is complete when the association that brought it is released, not after
the confirm period; an aborted association completes nothing. Real peers on 127.0.0.1:
dcmtk's storescu, and pynetdicom as a sender that aborts. The images are tiny synthetic
CT slices (8 x 8 pixels) without Images in Acquisition, as many scanners send them; the
listener runs no completion timer, so only the release can complete a series here."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import text

from tests.support.dicom_listener import Listener, start_receive_listener, storescu, tiny_ct
from tests.support.peers import wait_until


def _series(folder: Path, count: int) -> tuple[str, list[Path]]:
    study, series = generate_uid(), generate_uid()
    paths = []
    for index in range(count):
        path = tiny_ct(folder / f"{index}.dcm", study, series, index)
        ds = pydicom.dcmread(path)
        del ds.ImagesInAcquisition
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return series, paths


def _completion(listener: Listener, series_uid: str) -> tuple[str, str | None]:
    """The series' state and completion reason, as an administrator would read them."""
    with listener.db.engine.connect() as conn:
        state, reason = conn.execute(text("SELECT state, completion_reason FROM series WHERE series_uid = :uid"),
                                     {"uid": series_uid}).one()
    return str(state), reason


def test_a_released_whole_stack_is_complete_without_the_confirm_period(tmp_path: Path) -> None:
    listener = start_receive_listener(tmp_path / "node")
    try:
        series_uid, paths = _series(tmp_path / "ct", 12)
        assert storescu(listener.port, paths).returncode == 0
        wait_until(lambda: _completion(listener, series_uid)[0] == "complete", timeout_s=10)
        assert _completion(listener, series_uid) == ("complete", "whole stack of 12 slices, association released")
    finally:
        listener.stop()


def test_an_aborted_association_completes_nothing(tmp_path: Path) -> None:
    listener = start_receive_listener(tmp_path / "node")
    try:
        series_uid, paths = _series(tmp_path / "ct", 12)
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="HEMEX")
        assert assoc.is_established
        for path in paths:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
        assoc.abort()
        wait_until(lambda: not assoc.is_alive(), timeout_s=10)
        # A later orderly release of another association does not speak for this series.
        other_uid, other = _series(tmp_path / "other", 12)
        assert storescu(listener.port, other).returncode == 0
        wait_until(lambda: _completion(listener, other_uid)[0] == "complete", timeout_s=10)
        assert _completion(listener, series_uid) == ("receiving", None)
    finally:
        listener.stop()
