"""Durable file writes: temp file in the same folder, fsync, rename, fsync the folder.

``write_atomically(..., durable=False)`` is the same write without the fsyncs: the file is
handed to the operating system (it survives the death of the process, not a power cut)
and ``sync_file_system`` later makes a batch of such writes durable with one call.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from domain.errors import StorageFullError


def ensure_private_dir(path: Path, *, durable: bool = False) -> Path:
    """Create ``path`` (and any missing parents) readable by the owner only (0700).

    ``Path.mkdir(parents=True, mode=...)`` applies the mode to the last folder only; the
    parents it creates get the umask default (often 0755), so each is made here. With
    ``durable`` the folder holding each new folder is fsynced, so that the new folder's
    name survives a power cut too (a file's folder fsync covers only the file's name).
    """
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another thread made it between the check and the mkdir
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        if durable:
            fsync_folder(folder.parent)
    return path


def free_bytes(path: Path) -> int:
    """Free space on the file system holding ``path``."""
    return shutil.disk_usage(path).free


TEMP_SUFFIX = ".tmp"  # ``.<name>.<host>.<pid>.<thread>.tmp`` beside the target, until its rename
# This host, in a form without dots: several nodes may share one data directory (NFS), and
# a temporary file is another process's to remove only when that process is gone, which
# only its own host can tell.
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
COPY_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileTail:
    """File content given as ``prefix`` followed by ``source`` from byte ``offset`` to its
    end: a received object's file meta and the data set pynetdicom wrote to disk, copied
    in chunks so the object is never held in memory.

    ``consume_source``: the source (with no prefix, from offset 0) may be moved into place
    rather than copied, when it lies on the target's file system.
    """

    prefix: bytes
    source: Path
    offset: int
    consume_source: bool = False

    @property
    def size(self) -> int:
        return len(self.prefix) + max(0, self.source.stat().st_size - self.offset)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_content(fd: int, content: bytes | FileTail) -> None:
    if isinstance(content, bytes):
        _write_all(fd, content)
        return
    _write_all(fd, content.prefix)
    with open(content.source, "rb") as source:
        source.seek(content.offset)
        while chunk := source.read(COPY_CHUNK_BYTES):
            _write_all(fd, chunk)


def process_running(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (any user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphan_temp_file(path: Path) -> bool:
    """True for the temporary file of an atomic write whose process (on this host) is gone."""
    name = path.name
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 3)
    if len(parts) != 4 or parts[1] != HOST_TAG or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    return pid != os.getpid() and not process_running(pid)


def fsync_folder(folder: Path) -> None:
    """fsync a folder: the names created, renamed or removed in it reach the disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _moved(source: Path, target: Path, *, durable: bool) -> bool:
    """Move ``source`` onto ``target`` (with ``durable``: fsync, rename, fsync of the
    folder); False when they lie on different file systems (the caller copies instead)."""
    try:
        fd = os.open(source, os.O_RDONLY)
        try:
            if durable:
                os.fsync(fd)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        os.replace(source, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"no space left to write {target.name}") from exc
        raise
    if durable:
        fsync_folder(target.parent)
    return True


def write_atomically(target: Path, data: bytes | FileTail, *, durable: bool = True) -> None:
    """Write ``data`` to ``target`` so that it is either wholly there or absent.

    With ``durable`` (the default) the file is fsynced before the rename and its folder
    after it, so it is on the disk when this returns; without, it is in the operating
    system's hands (it survives the death of this process, not a power cut, until
    ``sync_file_system`` or the kernel's own writeback).

    Raises
    ------
    StorageFullError
        When the disk (or quota) is full; nothing is left behind.
    """
    ensure_private_dir(target.parent, durable=durable)
    if isinstance(data, FileTail) and data.consume_source and not data.prefix and data.offset == 0 \
            and _moved(data.source, target, durable=durable):
        return
    tmp = target.with_name(f".{target.name}.{HOST_TAG}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_content(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        if durable:
            fsync_folder(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"no space left to write {target.name}") from exc
        raise


def _syncfs_function() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs  # Linux (glibc, musl)
        return function
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs_function()


def sync_file_system(path: Path) -> None:
    """Make every write on the file system holding ``path`` durable (Linux ``syncfs``).

    One call flushes the data and names of all the files written since the last one,
    which is what a batch of ``durable=False`` writes needs; since Linux 5.8 it reports a
    write-back error as fsync does. Elsewhere it falls back to ``os.sync`` (all file
    systems, and no error report).

    Raises
    ------
    OSError
        The kernel reported a write-back error: some data written may not be on disk.
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs failed: {os.strerror(code)}")
    finally:
        os.close(fd)
