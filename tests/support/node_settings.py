"""Settings for a node started inside a test: every port on loopback, short timers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config import Settings, load_settings
from tests.support.peers import Orthanc


def loopback_node_settings(data_dir: Path, pacs: Orthanc | None = None, **overrides: Any) -> Settings:
    """A node on free 127.0.0.1 ports that accepts storescu, sends to ``pacs`` and
    retries fast; ``overrides`` replace whole values or, for sections, single keys."""
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "dicom": {"host": "127.0.0.1", "port": 0, "allowed_calling_ae_titles": ["STORESCU"]},
        "series": {"quiet_period_s": 1.0},
        "outbox": {"poll_interval_s": 0.5, "retry_initial_s": 0.5, "retry_max_s": 2.0},
        "hl7": {"host": "127.0.0.1", "port": 0, "wait_for_clinical_s": 0.0},
    }
    if pacs is not None:
        settings["destinations"] = [{"name": "pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1",
                                     "port": pacs.dicom_port}]
    for key, value in overrides.items():
        base = settings.get(key)
        settings[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    return load_settings(None, **settings)
