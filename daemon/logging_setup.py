"""Operational logging: key=value (or JSON) lines to stderr and a rotating file."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import traceback
from pathlib import Path

from daemon.config import LoggingSettings
from domain.durable_files import ensure_private_dir
from domain.redaction import mask_quoted

# Loggers whose messages are the node's own, written not to carry PHI (reviewed lines).
_OWN_LOGGERS = ("daemon", "inference", "domain", "hemex", "bench")


class _QuotedValueFilter(logging.Filter):
    """Masks quoted values in what libraries log, and in every traceback.

    pydicom warns "Invalid value for VR DA: '00000000'" for a bad birth date, highdicom
    quotes the value it refuses; either would put a patient's data in hemex.log and on
    stderr. A traceback's last line carries the exception's message, whoever logs it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_OWN_LOGGERS):
            record.msg, record.args = mask_quoted(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_quoted("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **({"exception": self.formatException(record.exc_info)} if record.exc_info else {}),
        })


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Log files readable by the owner only, including each file made at rotation."""

    def _open(self):  # type: ignore[no-untyped-def]
        os.close(os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        return super()._open()


def configure_logging(settings: LoggingSettings, log_dir: Path) -> None:
    """Configure the root logger: stderr and ``log_dir/hemex.log``."""
    ensure_private_dir(log_dir)
    formatter: logging.Formatter = (
        _JsonFormatter() if settings.json_format
        else logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler()
    file_handler = _PrivateRotatingFileHandler(
        log_dir / "hemex.log", maxBytes=20 * 1024 * 1024, backupCount=10, encoding="utf-8"
    )
    for handler in (console, file_handler):
        handler.setFormatter(formatter)
        handler.addFilter(_QuotedValueFilter())
        root.addHandler(handler)
    root.setLevel(settings.level)
    # Library warnings (pydicom's invalid-value warnings quote the value) go through the
    # handlers above and their filter, not straight to stderr.
    logging.captureWarnings(True)
    # pynetdicom logs every PDU at INFO; keep its association summaries only. highdicom
    # logs each source image's SOP Instance UID at INFO.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # highdicom logs each copied module at INFO with the source's SOP Instance UID; the
    # operational log names studies by their handle only.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
