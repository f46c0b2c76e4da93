"""Read a PyTorch state dict (``torch.save`` of name -> tensor) into numpy, without torch.

``torch.load`` unpickles arbitrary objects; this reader accepts only what a state dict of
plain tensors holds (an OrderedDict, tensors rebuilt from storages, storage types) and
refuses anything else, so a weight file cannot run code. Both of torch's file formats:

- the legacy format (torch < 1.6, BLAST-CT's 2020 release): pickles written one after
  the other (magic number, protocol version, system info, the object, the storage keys),
  then each storage as an int64 element count and its raw little-endian bytes;
- the zip format (torch >= 1.6): ``<name>/data.pkl`` and each storage in ``<name>/data/<key>``.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"), "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class StateDictError(ValueError):
    """The file is not a state dict of plain tensors in a known torch format."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        if self.storage.data is None:
            raise StateDictError(f"storage {self.storage.key} was never read")
        flat = self.storage.data
        itemsize = flat.dtype.itemsize
        if self.shape and self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) >= flat.size:
            raise StateDictError(f"tensor runs past the end of storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.shape,
                                               strides=tuple(s * itemsize for s in self.stride))
        return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                    *_ignored: Any) -> _TensorRef:
    # torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
    return _TensorRef(storage, int(offset), tuple(int(n) for n in shape), tuple(int(s) for s in stride))


def _rebuild_parameter(tensor: _TensorRef, *_ignored: Any) -> _TensorRef:
    return tensor


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the few globals a tensor state dict refers to."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise StateDictError(f"refusing to load {module}.{name}: not part of a tensor state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: no view_metadata
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise StateDictError(f"unexpected persistent id {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise StateDictError("storage views (pre-2018 torch files) are not supported")
        key = str(pid[2])
        if key not in self._storages:
            self._storages[key] = _Storage(key, pid[1].dtype, int(pid[4]))
        return self._storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Name -> numpy array (a copy, native byte order) of every tensor in the state dict at ``path``.

    Raises
    ------
    StateDictError
        When the file holds anything but tensors in a (nested) dict, or is truncated.
    """
    data = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        return _read_zip(data)
    return _read_legacy(data)


def _read_legacy(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    try:
        header = [_RestrictedUnpickler(stream, {}).load() for _ in range(3)]
    except (pickle.UnpicklingError, EOFError) as exc:
        raise StateDictError(f"not a torch file: {exc}") from exc
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL or not isinstance(header[2], dict):
        raise StateDictError("not a legacy torch file (wrong magic number or protocol)")
    if not header[2].get("little_endian", True):
        raise StateDictError("big-endian torch files are not supported")
    storages: dict[str, _Storage] = {}
    try:
        result = _RestrictedUnpickler(stream, storages).load()
        keys = _RestrictedUnpickler(stream, storages).load()
    except (pickle.UnpicklingError, EOFError) as exc:
        raise StateDictError(f"truncated torch file: {exc}") from exc
    for key in keys:
        storage = storages[str(key)]
        count_bytes = stream.read(8)
        if len(count_bytes) != 8:
            raise StateDictError("truncated torch file")
        (count,) = struct.unpack("<q", count_bytes)
        raw = stream.read(count * storage.dtype.itemsize)
        if count != storage.numel or len(raw) != count * storage.dtype.itemsize:
            raise StateDictError(f"storage {key}: size does not match its header")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _tensors(result)


def _read_zip(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise StateDictError("zip torch file without a single <name>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        try:
            result = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise StateDictError(f"unreadable data.pkl: {exc}") from exc
        for key, storage in storages.items():
            try:
                raw = archive.read(f"{prefix}data/{key}")
            except KeyError as exc:
                raise StateDictError(f"storage {key} missing from the archive") from exc
            if len(raw) != storage.numel * storage.dtype.itemsize:
                raise StateDictError(f"storage {key}: size does not match its header")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _tensors(result)


def _tensors(result: Any) -> dict[str, np.ndarray]:
    if not isinstance(result, dict):
        raise StateDictError(f"the file holds a {type(result).__name__}, not a state dict")
    tensors: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if not isinstance(value, _TensorRef):
            raise StateDictError(f"entry {name!r} is not a tensor")
        tensors[str(name)] = value.materialise()
    return tensors
