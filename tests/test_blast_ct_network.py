"""BLAST-CT's network in Keras against the authors' PyTorch code, without torch.

The references in tests/fixtures/blast_ct/ were made by make_reference.py there, with
blast-ct 2.1.0's own DeepMedic module and the shared state dicts, on patches of a
synthetic head drawn around the real lesion label map of ../shared/data/blast_ct_v1.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from inference.masking.blast_ct.convert_weights import keras_weights
from inference.masking.blast_ct.grid import window
from inference.masking.blast_ct.network import build_deepmedic, input_size_for, output_size
from inference.masking.blast_ct.torch_state_dict import StateDictError, read_state_dict
from inference.masking.blast_ct.weight_files import WEIGHTS_DIR, EnsembleMember, load_member
from tests.support.blast_ct_phantom import (
    SCAN_0,
    digest,
    require_shared,
    scan0_head_hu,
    scan0_labels,
)

# Opens no node database: run once, not again on the PostgreSQL pass (tests/conftest.py).
pytestmark = pytest.mark.no_database

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "blast_ct"
SAVED_MODELS = SCAN_0.parents[1] / "saved_models"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def normalised_phantom(reference: dict[str, np.ndarray]) -> np.ndarray:
    require_shared(SCAN_0)
    hu = scan0_head_hu(*scan0_labels())
    assert digest(hu) == str(reference["phantom_digest"]), "the phantom changed: rerun make_reference.py"
    return window(hu)


def _patch(image: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    box = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(start, size))
    return image[box][None, ..., None].astype(np.float32)


def test_network_has_blast_ct_parameter_count() -> None:
    model = build_deepmedic(input_size_for((15, 15, 15)))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 1_030_033
    assert model.output.shape[1:] == (15, 15, 15, 5)


def test_input_sizes_follow_blast_ct() -> None:
    assert output_size((110, 110, 110)) == (30, 30, 30)   # blast-ct's own tile
    assert output_size((85, 90, 95)) == (5, 10, 15)
    assert input_size_for((60, 105, 105)) == (140, 185, 185)
    for bad in ((80, 90, 90), (101, 110, 110)):
        with pytest.raises(ValueError, match="not valid"):
            output_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["zip", "legacy"])
def test_state_dict_reader_reads_both_torch_formats(name: str) -> None:
    ours = read_state_dict(FIXTURES / f"state_dict_small_{name}.pt")
    with np.load(FIXTURES / "state_dict_small_expected.npz") as expected:
        assert sorted(ours) == sorted(expected.files)
        for key in expected.files:
            assert ours[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(ours[key], expected[key])  # incl. a transposed tensor


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo should never run",))


def test_state_dict_reader_refuses_anything_but_tensors(tmp_path: Path) -> None:
    stream = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"weight": _RunsCode()}):
        pickle.dump(part, stream, protocol=2)
    path = tmp_path / "hostile.pt"
    path.write_bytes(stream.getvalue())
    with pytest.raises(StateDictError, match="refusing to load posix.system|refusing to load nt.system"):
        read_state_dict(path)
    (tmp_path / "short.pt").write_bytes(stream.getvalue()[:40])
    with pytest.raises(StateDictError):
        read_state_dict(tmp_path / "short.pt")


@pytest.mark.parametrize("number", range(1, 13))
def test_shipped_weights_are_the_authors_state_dicts(number: int) -> None:
    require_shared(SAVED_MODELS)
    source = SAVED_MODELS / f"model_{number}.pt"
    member = load_member(number)
    assert member.card.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert member.card.clinically_validated is False
    assert "not validated on spontaneous intracerebral hemorrhage" in member.card.validation
    expected = keras_weights(read_state_dict(source))
    assert sorted(member.weights) == sorted(expected)
    for layer, arrays in expected.items():
        for ours, theirs in zip(member.weights[layer], arrays):
            assert ours.dtype == np.float32
            np.testing.assert_array_equal(ours, theirs)


def test_weights_folder_ships_licence_and_notice() -> None:
    assert "Apache License" in (WEIGHTS_DIR / "LICENSE").read_text()
    notice = (WEIGHTS_DIR / "NOTICE").read_text()
    assert "Monteiro" in notice and "biomedia-mira/blast-ct" in notice


@pytest.fixture(scope="module")
def members() -> dict[int, EnsembleMember]:
    return {number: load_member(number) for number in (1, 6, 12)}


def test_probabilities_equal_blast_ct_where_every_pathway_crops(
        reference: dict[str, np.ndarray], normalised_phantom: np.ndarray,
        members: dict[int, EnsembleMember]) -> None:
    # Output 5 x 10 x 15: the coarse pathways' upsampled outputs are cropped on two axes.
    patch = _patch(normalised_phantom, reference["patch_a_start"], reference["patch_a_size"])
    model = build_deepmedic(patch.shape[1:4])  # type: ignore[arg-type]
    for number, member in members.items():
        member.apply_to(model)
        ours = np.asarray(model.predict_on_batch(patch))[0]
        theirs = reference["patch_a_probabilities"][number - 1]
        assert ours.shape == theirs.shape == (5, 10, 15, 5)
        assert np.abs(ours - theirs).max() < TOLERANCE, number


def test_probabilities_equal_blast_ct_on_its_own_tile(
        reference: dict[str, np.ndarray], normalised_phantom: np.ndarray,
        members: dict[int, EnsembleMember]) -> None:
    patch = _patch(normalised_phantom, reference["patch_b_start"], reference["patch_b_size"])
    model = build_deepmedic(patch.shape[1:4])  # type: ignore[arg-type]
    for index, number in enumerate(reference["patch_b_models"]):
        members[int(number)].apply_to(model)
        ours = np.asarray(model.predict_on_batch(patch))[0][::3, ::3, ::3]
        assert np.abs(ours - reference["patch_b_probabilities_every_3rd"][index]).max() < TOLERANCE
