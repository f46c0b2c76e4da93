"""Hostile and careless peers on loopback: raw sockets from another loopback address.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to
127.0.0.2 reaches a listener on 127.0.0.1 as a second host would: the node sees another
peer address than the scanner's 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

ATTACKER_HOST = "127.0.0.2"


def connect_from(port: int, source: str = ATTACKER_HOST, timeout_s: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


@contextmanager
def idle_connections(port: int, count: int, source: str = ATTACKER_HOST) -> Iterator[list[socket.socket]]:
    """``count`` connections that send nothing, held open for the block."""
    sockets = []
    try:
        for _ in range(count):
            try:
                sockets.append(connect_from(port, source))
            except OSError:
                break  # the listener's backlog is full: enough are held
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the peer closes (or resets) ``sock`` within ``within_s``; data is read and dropped."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def pdu_header(pdu_type: int, length: int) -> bytes:
    """The 6-byte header of a DICOM upper-layer PDU (PS3.8 9.3)."""
    return struct.pack(">BBL", pdu_type, 0, length)


def deeply_nested_dataset(depth: int, uid_elements: bytes) -> bytes:
    """An Explicit VR Little Endian data set: ``uid_elements`` then ``depth`` nested
    Content Sequences of undefined length (the shape the probes sent)."""
    sequence = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
    item, item_end = b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sequence_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    inner = b"\x08\x00\x00\x01SH\x02\x00ab"  # Code Value "ab"
    for _ in range(depth):
        inner = sequence + item + inner + item_end + sequence_end
    return uid_elements + inner
