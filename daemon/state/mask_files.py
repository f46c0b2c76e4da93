"""The analyse stage's mask on disk (``mask.npz``): the hematoma mask, each class the
method separated, and the grid and source images it lies on, for the report stage and
for the final report that reuses a preliminary report's mask."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from domain.durable_files import write_atomically
from domain.imaging import HematomaMask, VolumeGeometry

MASK_FILE_NAME = "mask.npz"
_OPTIONAL = ("intraventricular", "extra_axial", "perilesional_oedema")


def save_mask(folder: Path, geometry: VolumeGeometry, mask: HematomaMask) -> Path:
    """Write ``mask`` on ``geometry`` to ``folder/mask.npz`` atomically; returns the path."""
    arrays: dict[str, np.ndarray] = {
        "mask": np.packbits(mask.mask, axis=None),
        "shape": np.asarray(geometry.shape, np.int64),
        "affine_lps": geometry.affine_lps,
        "spacing_mm": np.asarray(geometry.spacing_mm, np.float64),
        "sop_instance_uids": np.asarray(geometry.sop_instance_uids, dtype=np.str_),
        "source_frames": np.asarray(geometry.source_frames, np.int64),
        "uids": np.asarray([geometry.series_instance_uid, geometry.study_instance_uid], dtype=np.str_),
        "method": np.asarray([mask.method_name, mask.method_version, str(int(mask.learned))], dtype=np.str_),
        # What the report must say about the method (model origin, validation): a final
        # report that reuses this mask says it too.
        "notes": np.asarray(mask.notes, dtype=np.str_),
    }
    for name in _OPTIONAL:
        extra = getattr(mask, name)
        if extra is not None:
            arrays[name] = np.packbits(extra, axis=None)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    path = folder / MASK_FILE_NAME
    write_atomically(path, buffer.getvalue())
    return path


def load_mask(folder: Path) -> tuple[VolumeGeometry, HematomaMask]:
    """The geometry and mask ``save_mask`` wrote to ``folder``."""
    with np.load(folder / MASK_FILE_NAME) as data:
        shape = tuple(int(v) for v in data["shape"])
        count = int(np.prod(shape))

        def unpack(name: str) -> np.ndarray:
            # unpackbits gives 0/1 bytes: viewed as booleans without a copy.
            return np.unpackbits(data[name], count=count).view(np.bool_).reshape(shape)

        series_uid, study_uid = (str(v) for v in data["uids"])
        geometry = VolumeGeometry(
            shape=(shape[0], shape[1], shape[2]), affine_lps=data["affine_lps"],
            spacing_mm=(float(data["spacing_mm"][0]), float(data["spacing_mm"][1]), float(data["spacing_mm"][2])),
            sop_instance_uids=tuple(str(v) for v in data["sop_instance_uids"]),
            series_instance_uid=series_uid, study_instance_uid=study_uid,
            source_frames=tuple(int(v) for v in data["source_frames"]))
        name, version, learned = (str(v) for v in data["method"])
        optional = {key: unpack(key) if key in data.files else None for key in _OPTIONAL}
        notes = tuple(str(v) for v in data["notes"]) if "notes" in data.files else ()
        mask = HematomaMask(unpack("mask"), name, version, learned=learned == "1",
                            intraventricular=optional["intraventricular"], extra_axial=optional["extra_axial"],
                            perilesional_oedema=optional["perilesional_oedema"], notes=notes)
    return geometry, mask
