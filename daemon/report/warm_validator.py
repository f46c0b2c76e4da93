"""pixelmed's DicomSRValidator kept warm in one long-lived JVM.

A one-shot ``DicomSRValidator`` run starts a JVM and compiles the validator's XSLT
templates: 5-10 s of CPU, on the critical path of every report. This process does it
once (``java/HemexSrValidatorServer.java``, run in the JDK's source-file mode) and then
validates each SR in a fraction of a second, with the same checks and the same output.

Without a JDK (source-file mode needs its compiler) or when the server cannot start, the
caller falls back to the one-shot command: slower, never less checked.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from domain.errors import ReportBuildError

log = logging.getLogger(__name__)

SERVER_SOURCE = Path(__file__).with_name("java") / "HemexSrValidatorServer.java"
_READY, _END = "@@HEMEX-READY@@", "@@HEMEX-END@@"
# pixelmed 2022 compiles XSLT past the JDK 17 default XPath limits.
_JAVA_OPTIONS = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"]
_DEFAULT_JAR = Path("/usr/share/java/pixelmed.jar")


def pixelmed_classpath() -> str | None:
    """The class path the installed ``DicomSRValidator`` command uses, or None."""
    command = shutil.which("DicomSRValidator")
    if command is not None:
        try:
            found = re.search(r"-cp\s+(\S+)", Path(command).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            found = None
        if found:
            return found.group(1)
    return str(_DEFAULT_JAR) if _DEFAULT_JAR.exists() else None


class WarmSrValidator:
    """One JVM that validates SR files on request; thread-safe, one request at a time.

    ``start`` returns at once (the JVM warms up in the background); ``validate`` waits
    for it. ``available`` is False when the server could not start: use the one-shot
    command then.
    """

    def __init__(self, startup_timeout_s: float = 120.0) -> None:
        self._startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ready = threading.Event()
        self._failed = False
        self.warm_ups = 0  # warm-up validations done (tests and benches read it)

    @property
    def available(self) -> bool:
        return not self._failed and shutil.which("java") is not None and pixelmed_classpath() is not None

    @property
    def pid(self) -> int | None:
        """The JVM's process ID while it runs (for monitoring; tests kill it)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self, warm_up_with: Path | None = None) -> None:
        """Start the JVM (returns at once; it warms up in the background).

        ``warm_up_with``: an SR to validate once, output unused, before any report does.
        The JVM's first validation of a measurement report runs its XSLT before the JIT
        has compiled it (0.6 s against 0.1-0.2 s later); with it the first report after a
        restart does not pay that.
        """
        with self._lock:
            if self._process is None and self.available:
                self._spawn()
        if warm_up_with is not None and self._process is not None:
            threading.Thread(target=self._warm_up, args=(warm_up_with,), name="hemex-sr-validator-warm-up",
                             daemon=True).start()

    def wait_until_ready(self, timeout_s: float) -> bool:
        """True once the started JVM takes requests (benches)."""
        return self._ready.wait(timeout_s)

    def _warm_up(self, path: Path) -> None:
        started = time.monotonic()
        try:
            self.validate(path, timeout_s=self._startup_timeout_s)
        except ReportBuildError:
            # Its text may quote the validator's output on the SR: not for the log.
            log.info("warm SR validator not warmed up; the first report's validation is its first pass")
            return
        self.warm_ups += 1
        log.info("warm SR validator warmed up seconds=%.2f", time.monotonic() - started)

    def validate(self, path: Path, timeout_s: float) -> str:
        """The validator's output for the SR file at ``path``.

        Raises
        ------
        ReportBuildError
            The server is not available, died, or did not answer within ``timeout_s``
            (it is then restarted for the next request).
        """
        with self._lock:
            if self._process is None:
                if not self.available:
                    raise ReportBuildError("the warm SR validator is not available")
                self._spawn()
            process = self._process
            assert process is not None and process.stdin is not None
            if not self._ready.is_set():
                self._wait_ready(timeout_s=max(timeout_s, self._startup_timeout_s))
            try:
                process.stdin.write(str(path) + "\n")
                process.stdin.flush()
            except OSError as exc:
                self._discard()
                raise ReportBuildError(f"the warm SR validator died: {exc}") from exc
            output: list[str] = []
            while True:
                try:
                    line = self._lines.get(timeout=timeout_s)
                except queue.Empty:
                    self._discard()
                    raise ReportBuildError(f"DicomSRValidator did not finish within {timeout_s:g} s") from None
                if line is None:
                    self._discard()
                    raise ReportBuildError("the warm SR validator died: " + " / ".join(output[-3:]))
                if line == _END:
                    return "\n".join(output)
                output.append(line)

    def close(self) -> None:
        """Stop the JVM."""
        with self._lock:
            self._discard()

    # --- the process ----------------------------------------------------------------
    def _spawn(self) -> None:
        classpath = pixelmed_classpath()
        env = {k: v for k, v in os.environ.items() if k not in ("JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS")}
        self._lines = queue.Queue()
        self._ready.clear()
        self._process = subprocess.Popen(
            ["java", *_JAVA_OPTIONS, "-cp", str(classpath), str(SERVER_SOURCE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            encoding="utf-8", errors="replace", env=env, start_new_session=True)
        threading.Thread(target=self._read, args=(self._process, self._lines), name="hemex-sr-validator",
                         daemon=True).start()
        log.info("warm SR validator starting pid=%d", self._process.pid)

    def _read(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if line == _READY:
                self._ready.set()
                continue
            lines.put(line)
        lines.put(None)

    def _wait_ready(self, timeout_s: float) -> None:
        waited = self._ready.wait(timeout_s)
        process = self._process
        if waited and process is not None and process.poll() is None:
            return
        tail = []
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                tail.append(line)
        self._discard()
        self._failed = True
        log.warning("warm SR validator unavailable (one-shot DicomSRValidator used instead): %s",
                    " / ".join(tail[-3:]) or "it did not start")
        raise ReportBuildError("the warm SR validator could not start")

    def _discard(self) -> None:
        process, self._process = self._process, None
        self._ready.clear()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
