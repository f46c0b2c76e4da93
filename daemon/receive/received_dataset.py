"""A received data set, read from the file pynetdicom wrote it to, with bounded memory.

Every element is decoded once to prove the object can be read later, except values
longer than ``DEFER_BYTES`` (Pixel Data above all): those are only checked to lie inside
the file, never read. A 600 MB CT object therefore costs a few kilobytes of header here,
not 600 MB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from domain.errors import InvalidInputError

# Values longer than this are not read while checking (their bounds are).
DEFER_BYTES = 64 * 1024
# Deeper nesting than this is refused. CT objects nest a handful of levels; pydicom's
# recursive reader meets Python's recursion limit at about 150.
MAX_SEQUENCE_DEPTH = 32
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
INFLATE_CHUNK_BYTES = 1024 * 1024

# What pydicom raises on damaged bytes while it decodes a received data set (found by
# bench/fuzz_parsers.py). They are caught around the decoding only: the node's own code
# raises InvalidInputError or nothing, and anything else is a bug that pynetdicom logs
# with its traceback (status 0xC211), not a refusal.
PYDICOM_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, KeyError, EOFError, OSError, AttributeError,
    NotImplementedError, struct.error, BytesLengthException, zlib.error,
)


@dataclass(frozen=True)
class ReceivedDataset:
    """The decoded data set; ``pixel_data_bytes`` is the Pixel Data value's length
    (None without Pixel Data; the value itself may not have been read)."""

    dataset: Dataset
    pixel_data_bytes: int | None


def read_received(path: Path, offset: int, transfer_syntax: UID, max_bytes: int) -> ReceivedDataset:
    """Decode the data set at ``offset`` of ``path`` (encoded in ``transfer_syntax``).

    Raises
    ------
    InvalidInputError
        The bytes cannot be decoded, a value runs past the end of the data, sequences
        nest deeper than ``MAX_SEQUENCE_DEPTH``, or a deflated data set inflates past
        ``max_bytes``. Messages name what is wrong, never a value (values may be PHI).
    """
    with open(path, "rb") as fp:
        fp.seek(offset)
        source: BinaryIO = fp
        end = path.stat().st_size
        try:
            if transfer_syntax.is_deflated:
                source = BytesIO(_inflated(fp, max_bytes))
                end = len(source.getbuffer())
            dataset = read_dataset(source, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian,
                                   defer_size=DEFER_BYTES)
            _check_elements(dataset, end, depth=0)
        except RecursionError as exc:
            raise InvalidInputError("sequences nested too deeply to decode") from exc
        except PYDICOM_DECODE_ERRORS as exc:
            raise InvalidInputError(f"undecodable dataset ({type(exc).__name__})") from exc
    return ReceivedDataset(dataset, _pixel_data_bytes(dataset))


def _inflated(fp: BinaryIO, max_bytes: int) -> bytes:
    """A deflated data set inflated, refused once it passes ``max_bytes`` (a zip bomb of a
    few kilobytes would otherwise inflate to gigabytes in memory)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while chunk := fp.read(INFLATE_CHUNK_BYTES):
        out += inflater.decompress(chunk, max_bytes + 1 - len(out))
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise InvalidInputError(f"deflated data set inflates past {max_bytes} bytes (dicom.max_instance_bytes)")
    out += inflater.flush()
    if len(out) > max_bytes:
        raise InvalidInputError(f"deflated data set inflates past {max_bytes} bytes (dicom.max_instance_bytes)")
    return bytes(out)


def _check_elements(dataset: Dataset, end: int, depth: int) -> None:
    """Decode every element; deferred (long) values are only checked to end inside the data."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise InvalidInputError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, UNDEFINED_LENGTH):
            if raw.value_tell + raw.length > end:
                raise InvalidInputError(f"value of {_name(tag)} truncated: it runs {raw.value_tell + raw.length - end}"
                                        " bytes past the end of the data set")
            continue
        element = dataset[tag]
        if element.VR == "SQ":
            for item in element.value:
                _check_elements(item, end, depth + 1)
        else:
            element.value  # noqa: B018 - reading the value is the check


def _pixel_data_bytes(dataset: Dataset) -> int | None:
    raw = dataset.get_item(PIXEL_DATA, keep_deferred=True)
    if raw is None:
        return None
    if isinstance(raw, RawDataElement) and raw.value is None:
        return int(raw.length)
    value = dataset[PIXEL_DATA].value
    return len(value) if value is not None else 0


def _name(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
