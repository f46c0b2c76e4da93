import pytest

from tests.support.peers import Orthanc

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def test_orthanc_starts_empty_and_answers_rest(orthanc: Orthanc) -> None:
    assert orthanc.instances() == []
    assert orthanc.get("/system")["DicomAet"] == "ORTHANC"
