from tests.support.peers import Orthanc


def test_orthanc_starts_empty_and_answers_rest(orthanc: Orthanc) -> None:
    assert orthanc.instances() == []
    assert orthanc.get("/system")["DicomAet"] == "ORTHANC"
