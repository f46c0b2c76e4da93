"""highdicom's tables of the DICOM standard, loaded before the first report needs them.

highdicom reads its SOP class, IOD, module and attribute tables (JSON, about 0.5 s) the
first time a SEG or SR is built, and keeps them (``functools.lru_cache``). Loaded at
start-up in the background, that time is not spent on the first study after a restart.
The loaders are not part of highdicom's documented API: if a release renames them, the
first report loads the tables itself, as before, and the node logs that it could not.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

_LOADERS = ("get_sop_class_iod_map", "get_iod_module_map", "get_module_attribute_map", "get_anatomic_region_map")


def load_highdicom_tables() -> bool:
    """Fill highdicom's table caches; False when its loaders are not where expected."""
    try:
        from highdicom import _standard_utils as tables

        loaders = [getattr(tables, name) for name in _LOADERS]
    except (ImportError, AttributeError):
        log.info("highdicom tables not preloaded: loaders not found; the first report loads them")
        return False
    started = time.monotonic()
    for load in loaders:
        load()
    log.info("highdicom tables loaded seconds=%.2f", time.monotonic() - started)
    return True
