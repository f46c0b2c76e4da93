"""Limits on what a DICOM peer may send, checked on the byte stream as it arrives.

pynetdicom reads a whole PDU into memory once it has read the PDU's length (up to 4 GiB,
whatever the maximum PDU size it announced), and blocks in that read for as long as the
peer takes. ``PduStreamGuard`` sees every byte the listener receives before pynetdicom
does and refuses, before anything is read or buffered:

- a PDU longer than allowed (P-DATA-TF: ``dicom.maximum_pdu_size``; any other PDU: 1 MiB);
- a data set longer than ``dicom.max_instance_bytes`` (counted over its fragments);
- a peer too slow for a phase: the A-ASSOCIATE request not complete within
  ``dicom.acse_timeout_s`` of the connection, a DIMSE message not complete within
  ``dicom.dimse_timeout_s`` of its first fragment, a PDU not complete within
  ``dicom.network_timeout_s`` of its first byte.

It is pure (bytes and times in, a verdict out), so it is tested and fuzzed alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
PDU_TYPES = frozenset(range(0x01, 0x08))
PDU_HEADER_BYTES = 6
PDV_HEADER_BYTES = 6  # item length (4), presentation context ID (1), message control header (1)
# Association, release and abort PDUs: an A-ASSOCIATE-RQ with 128 presentation contexts
# and a dozen transfer syntaxes each stays far below this.
MAX_CONTROL_PDU_BYTES = 1024 * 1024
MAX_COMMAND_BYTES = 64 * 1024  # a command set is a few hundred bytes


@dataclass(frozen=True)
class PduLimits:
    """The listener's limits (``[dicom]`` settings)."""

    max_pdu_bytes: int
    max_instance_bytes: int
    acse_timeout_s: float
    dimse_timeout_s: float
    network_timeout_s: float


@dataclass(frozen=True)
class GuardViolation:
    """Why the association is aborted; ``setting`` names the limit, when one is configurable."""

    reason: str
    setting: str | None = None

    def describe(self) -> str:
        return f"{self.reason} ({self.setting})" if self.setting else self.reason


class PduStreamGuard:
    """Follows one connection's incoming bytes; ``feed`` says when a limit is passed."""

    def __init__(self, limits: PduLimits, connected_at: float) -> None:
        self._limits = limits
        self._connected_at = connected_at
        self._associated = False  # the first PDU (the A-ASSOCIATE-RQ) is complete
        self._header = bytearray()
        self._pdu_type = 0
        self._pdu_left = 0
        self._pdu_started: float | None = None
        self._item_header = bytearray()
        self._item_left = 0
        self._message_started: float | None = None  # a message is being received
        self._command_started: float | None = None
        self._last = False
        self._is_command = False
        self._command_bytes = 0
        self._dataset_bytes = 0
        self._after_last_fragment = True
        self.calling_ae = ""  # from the A-ASSOCIATE-RQ, for the log and the audit
        self.called_ae = ""
        self._request_head = bytearray()

    @property
    def associated(self) -> bool:
        """The A-ASSOCIATE request is whole (the association phase's deadline is past use)."""
        return self._associated

    # --- deadlines ---------------------------------------------------------------------
    def deadline(self) -> float | None:
        """The earliest moment by which more must have arrived, or None."""
        deadlines = []
        if not self._associated:
            deadlines.append(self._connected_at + self._limits.acse_timeout_s)
        if self._pdu_started is not None:
            deadlines.append(self._pdu_started + self._limits.network_timeout_s)
        if self._message_started is not None:
            deadlines.append(self._message_started + self._limits.dimse_timeout_s)
        return min(deadlines) if deadlines else None

    def expired(self, now: float) -> GuardViolation | None:
        """The phase whose time ran out at ``now``, if any."""
        if not self._associated and now >= self._connected_at + self._limits.acse_timeout_s:
            return GuardViolation("no complete A-ASSOCIATE request in time", "dicom.acse_timeout_s")
        if self._message_started is not None and now >= self._message_started + self._limits.dimse_timeout_s:
            return GuardViolation("DIMSE message not complete in time", "dicom.dimse_timeout_s")
        if self._pdu_started is not None and now >= self._pdu_started + self._limits.network_timeout_s:
            return GuardViolation("PDU not complete in time", "dicom.network_timeout_s")
        return None

    # --- bytes -------------------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> GuardViolation | None:
        """Account for ``data``, the next bytes received; a violation aborts the association."""
        expired = self.expired(now)
        if expired is not None:
            return expired
        view = memoryview(data)
        while view:
            if self._pdu_left == 0:
                take = min(PDU_HEADER_BYTES - len(self._header), len(view))
                self._header += view[:take]
                view = view[take:]
                if self._pdu_started is None:
                    self._pdu_started = now
                if len(self._header) == PDU_HEADER_BYTES:
                    violation = self._start_pdu()
                    if violation is not None:
                        return violation
                continue
            take = min(self._pdu_left, len(view))
            chunk, view = view[:take], view[take:]
            violation = self._pdu_body(chunk, now)
            if violation is not None:
                return violation
            self._pdu_left -= take
            if self._pdu_left == 0:
                violation = self._end_pdu()
                if violation is not None:
                    return violation
        return None

    def _start_pdu(self) -> GuardViolation | None:
        pdu_type, _, length = struct.unpack(">BBL", self._header)
        self._header.clear()
        if pdu_type not in PDU_TYPES:
            return GuardViolation(f"unknown PDU type 0x{pdu_type:02X}")
        if not self._associated and pdu_type != A_ASSOCIATE_RQ:
            return GuardViolation(f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE request")
        if pdu_type == P_DATA_TF and length > self._limits.max_pdu_bytes:
            return GuardViolation(f"P-DATA-TF PDU of {length} bytes, over the {self._limits.max_pdu_bytes}"
                                  " byte maximum", "dicom.maximum_pdu_size")
        if pdu_type != P_DATA_TF and length > MAX_CONTROL_PDU_BYTES:
            return GuardViolation(f"PDU type 0x{pdu_type:02X} of {length} bytes, over the"
                                  f" {MAX_CONTROL_PDU_BYTES} byte limit")
        self._pdu_type, self._pdu_left = pdu_type, length
        if length == 0:
            return self._end_pdu()
        return None

    def _end_pdu(self) -> GuardViolation | None:
        if self._pdu_type == P_DATA_TF and (self._item_left or self._item_header):
            return GuardViolation("P-DATA-TF PDU ends inside a presentation data value item")
        if self._pdu_type == A_ASSOCIATE_RQ and not self._associated:
            self._associated = True
            head = bytes(self._request_head)
            self.called_ae = head[4:20].decode("ascii", "replace").strip()
            self.calling_ae = head[20:36].decode("ascii", "replace").strip()
        self._pdu_started = None
        return None

    def _pdu_body(self, chunk: memoryview, now: float) -> GuardViolation | None:
        if self._pdu_type == A_ASSOCIATE_RQ and len(self._request_head) < 36:
            self._request_head += chunk[:36 - len(self._request_head)]
        if self._pdu_type != P_DATA_TF:
            return None
        while chunk:
            if self._item_left == 0:
                take = min(PDV_HEADER_BYTES - len(self._item_header), len(chunk))
                self._item_header += chunk[:take]
                chunk = chunk[take:]
                if len(self._item_header) == PDV_HEADER_BYTES:
                    violation = self._start_item(now)
                    if violation is not None:
                        return violation
                continue
            take = min(self._item_left, len(chunk))
            chunk = chunk[take:]
            self._item_left -= take
            if self._item_left == 0:
                self._end_item()
        return None

    def _start_item(self, now: float) -> GuardViolation | None:
        length, _context_id, control = struct.unpack(">LBB", self._item_header)
        self._item_header.clear()
        if length < 2:
            return GuardViolation(f"presentation data value item of length {length}")
        data_bytes = length - 2
        is_command = bool(control & 0x01)
        if is_command and self._after_last_fragment:  # the first fragment of a new message
            self._command_started = now
            self._message_started, self._command_bytes, self._dataset_bytes = now, 0, 0
        elif not is_command and self._message_started is None:
            # The data set of the message whose command set is in: its timer runs on.
            self._message_started = self._command_started if self._command_started is not None else now
        self._after_last_fragment = False
        self._last = bool(control & 0x02)
        self._is_command = is_command
        if is_command:
            self._command_bytes += data_bytes
            if self._command_bytes > MAX_COMMAND_BYTES:
                return GuardViolation(f"command set over {MAX_COMMAND_BYTES} bytes")
        else:
            self._dataset_bytes += data_bytes
            if self._dataset_bytes > self._limits.max_instance_bytes:
                return GuardViolation(f"data set over the {self._limits.max_instance_bytes} byte limit",
                                      "dicom.max_instance_bytes")
        self._item_left = data_bytes
        if data_bytes == 0:
            self._end_item()
        return None

    def _end_item(self) -> None:
        if self._last:
            # A whole command set (a data set may follow, as for C-STORE, or not, as for
            # C-ECHO: the timer pauses and resumes with the data set) or a whole data set.
            self._message_started = None
            self._after_last_fragment = True
