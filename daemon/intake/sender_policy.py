"""Who may send HL7 to the node, and how many connections each may hold.

A connection is admitted when it comes from an address in ``hl7.allowed_peers``, or
presents (mutual TLS) a client certificate whose subject CN is in
``hl7.allowed_client_certificates``, and while the listener holds fewer than
``hl7.max_connections`` connections in all and ``hl7.max_connections_per_peer`` from
that address. A message is accepted only from a sending application (MSH-3, optionally
with its facility, MSH-4) in ``hl7.allowed_senders`` when that list is not empty.

Every refusal names the setting behind it, so the log line tells the administrator what
to change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from daemon.config import Hl7Settings
from daemon.intake.hl7_parsing import MessageHeader


@dataclass(frozen=True)
class Refusal:
    reason: str
    setting: str

    def describe(self) -> str:
        return f"{self.reason} ({self.setting})"


def certificate_common_name(peercert: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), if any."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class SenderPolicy:
    """The ``[hl7]`` allow-lists and connection budgets as decisions."""

    def __init__(self, settings: Hl7Settings) -> None:
        self._networks = settings.allowed_networks()
        self._certificates = frozenset(settings.allowed_client_certificates)
        self._senders = frozenset(entry.strip() for entry in settings.allowed_senders)
        self._max_total = settings.max_connections
        self._max_per_peer = settings.max_connections_per_peer

    def connection_refusal(self, host: str, certificate_cn: str | None, open_total: int,
                           open_from_peer: int) -> Refusal | None:
        """Why a new connection from ``host`` is refused, or None to admit it.

        ``open_total``/``open_from_peer`` count the connections already open.
        """
        if not self._address_allowed(host) and (certificate_cn is None or certificate_cn not in self._certificates):
            if certificate_cn is not None:
                return Refusal(f"address not allowed and certificate {certificate_cn!r} not listed",
                               "hl7.allowed_peers / hl7.allowed_client_certificates")
            return Refusal("address not allowed", "hl7.allowed_peers")
        if open_total >= self._max_total:
            return Refusal(f"{open_total} connections open", "hl7.max_connections")
        if open_from_peer >= self._max_per_peer:
            return Refusal(f"{open_from_peer} connections open from this peer", "hl7.max_connections_per_peer")
        return None

    def message_refusal(self, header: MessageHeader) -> Refusal | None:
        """Why a message from this sending application is refused (AR), or None."""
        if not self._senders:
            return None
        separator = header.encoding_chars[:1] or "^"
        application = header.sending_application.split(separator)[0].strip()
        facility = header.sending_facility.split(separator)[0].strip()
        if application in self._senders or f"{application}^{facility}" in self._senders:
            return None
        return Refusal("sending application not allowed", "hl7.allowed_senders")

    def _address_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)
