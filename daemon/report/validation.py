"""Read every report object back and check it against the standard before it is sent.

Checks, in order, for each dataset:
1. it encodes as a DICOM file and reads back with pydicom;
2. dicom3tools' ``dciodvfy`` (it exits 0 whatever it finds, so its output is read:
   any line starting with "Error" fails);
3. for SR, pixelmed's ``DicomSRValidator`` (template and context group checks; lines
   starting with "Error" fail, and so does a run that never reports "IOD validation
   complete", e.g. a Java exception).

pixelmed 2022 compiles its XSLT templates past the JDK 17 default XPath limits, so the
limits are lifted for that JVM only (``JDK_JAVA_OPTIONS``); C1-only JIT halves its CPU.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pydicom
from pydicom import Dataset

from daemon.report.warm_validator import WarmSrValidator
from domain.durable_files import write_atomically
from domain.errors import ReportBuildError

log = logging.getLogger(__name__)

DCIODVFY = "dciodvfy"
SR_VALIDATOR = "DicomSRValidator"
_PIXELMED_JAVA_OPTIONS = (
    "-Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathTotalOpLimit=0"
    " -XX:TieredStopAtLevel=1"
)
_PIXELMED_DONE = "IOD validation complete"


def encode_dataset(ds: Dataset) -> bytes:
    """``ds`` as the bytes of a DICOM file (preamble, DICM, file meta).

    Raises
    ------
    ReportBuildError
        When pydicom cannot encode the dataset.
    """
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise ReportBuildError(f"{_describe(ds)} cannot be encoded: {exc}") from exc
    return buffer.getvalue()


def write_dataset(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file at ``path``, atomically (whole file or nothing).

    Raises
    ------
    ReportBuildError
        When the dataset cannot be encoded.
    StorageFullError
        When the disk is full.
    """
    write_atomically(Path(path), encode_dataset(ds))


def validate_report_objects(
    datasets: Sequence[Dataset],
    *,
    require_tools: bool = False,
    timeout_s: float = 120.0,
    sr_validator: WarmSrValidator | None = None,
    encoded: Sequence[bytes] | None = None,
) -> None:
    """Read each dataset back from its encoded bytes and run the standard validators.

    Parameters
    ----------
    datasets:
        SR and SEG objects (highdicom or plain pydicom datasets).
    encoded:
        Their files' bytes (``encode_dataset``), when the caller has them already: the
        very bytes it will write are checked, and nothing is encoded twice.
    require_tools:
        True (tests): a missing ``dciodvfy`` or ``DicomSRValidator`` is an error.
        False (daemon default): a missing tool is skipped with a warning.
    timeout_s:
        Limit for each validator run.
    sr_validator:
        A warm DicomSRValidator (the node keeps one); the one-shot command runs when
        none is given or it is not available.

    Raises
    ------
    ReportBuildError
        When an object does not read back, a validator reports errors (the message
        lists them), times out, or a required tool is missing.
    """
    tools = {name: shutil.which(name) for name in (DCIODVFY, SR_VALIDATOR)}
    for name, found in tools.items():
        if found is None:
            if require_tools:
                raise ReportBuildError(f"validator {name} is not installed")
            log.warning("report validation skipped tool=%s reason=not-installed", name)
    files = list(zip(datasets, encoded if encoded is not None else [encode_dataset(ds) for ds in datasets],
                     strict=True))
    for ds, data in files:
        _read_back(ds, data)
    with tempfile.TemporaryDirectory(prefix="hemex-validate-") as tmp:
        jobs: list[tuple[str, Dataset, Callable[[], str]]] = []
        for index, (ds, data) in enumerate(files):
            path = Path(tmp) / f"object{index}.dcm"
            path.write_bytes(data)
            if tools[DCIODVFY]:
                command = [str(tools[DCIODVFY]), str(path)]
                jobs.append((DCIODVFY, ds, partial(_run, DCIODVFY, command, None, timeout_s)))
            if tools[SR_VALIDATOR] and str(ds.get("Modality", "")) == "SR":
                jobs.append((SR_VALIDATOR, ds, partial(validate_sr_file, path, sr_validator, timeout_s)))
        # Two at a time: the node shares small machines.
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda job: job[2](), jobs))
    problems = []
    for (tool, ds, _), output in zip(jobs, results):
        errors = validator_errors(tool, output)
        if errors:
            problems.append(f"{tool} on {_describe(ds)}: " + " | ".join(errors[:20]))
    if problems:
        raise ReportBuildError("report objects failed validation: " + "; ".join(problems))


def validate_sr_file(path: Path, warm: WarmSrValidator | None, timeout_s: float) -> str:
    """DicomSRValidator's output for the SR file at ``path``: from the warm JVM when there
    is one (and it answers), else from the one-shot command."""
    if warm is not None and warm.available:
        try:
            return warm.validate(path, timeout_s)
        except ReportBuildError as exc:  # it died or hung: it restarts next time; check this SR one-shot
            log.warning("warm SR validator failed (%s): one-shot DicomSRValidator instead", exc)
    env = dict(os.environ)
    env["JDK_JAVA_OPTIONS"] = (env.get("JDK_JAVA_OPTIONS", "") + " " + _PIXELMED_JAVA_OPTIONS).strip()
    return _run(SR_VALIDATOR, [shutil.which(SR_VALIDATOR) or SR_VALIDATOR, str(path)], env, timeout_s)


def validator_errors(tool: str, output: str) -> list[str]:
    """The error lines of a validator's combined output (warnings are not errors)."""
    errors = [line.strip() for line in output.splitlines() if line.lstrip().startswith("Error")]
    if tool == SR_VALIDATOR and _PIXELMED_DONE not in output:
        tail = [line.strip() for line in output.splitlines() if line.strip()][-3:]
        errors.append("validation did not complete: " + " / ".join(tail))
    return errors


def _read_back(ds: Dataset, data: bytes) -> None:
    try:
        back = pydicom.dcmread(io.BytesIO(data))
        back.decode()  # every text element, with the declared character set
    except Exception as exc:  # any parse failure means an unreadable object; re-raised
        raise ReportBuildError(f"{_describe(ds)} does not read back: {exc}") from exc
    if str(back.SOPInstanceUID) != str(ds.SOPInstanceUID):
        raise ReportBuildError(f"{_describe(ds)} read back with another SOP Instance UID")


def _run(tool: str, command: list[str], env: dict[str, str] | None, timeout_s: float) -> str:
    # Own process group: DicomSRValidator is a shell script around a JVM, and a timeout
    # must stop the JVM too, not only the shell.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ReportBuildError(f"{tool} did not finish within {timeout_s:g} s") from exc
    return stdout + "\n" + stderr


def _describe(ds: Dataset) -> str:
    return f"{ds.get('Modality', '?')} {ds.get('SOPInstanceUID', '?')}"
