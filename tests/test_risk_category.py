import pytest

from domain.prediction import ExpansionPrediction, risk_category

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database


def _prediction(p: float, validated: bool) -> ExpansionPrediction:
    return ExpansionPrediction(p, "m", "1", "test weights", validated, (), (), False)


def test_unvalidated_weights_never_give_a_clinical_category() -> None:
    assert risk_category(_prediction(0.99, validated=False), 0.5) == "not_validated"


def test_validated_weights_are_split_at_the_threshold() -> None:
    assert risk_category(_prediction(0.5, validated=True), 0.5) == "high"
    assert risk_category(_prediction(0.49, validated=True), 0.5) == "low"


def test_no_predictor_is_unavailable() -> None:
    assert risk_category(None, 0.5) == "unavailable"
