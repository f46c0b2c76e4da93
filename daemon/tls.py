"""TLS contexts for the node's listeners (DICOM, HL7 MLLP) and its outbound HL7 client.

One rule for every listener: TLS 1.2 or newer; a certificate needs its key; a client CA
makes it mutual TLS (callers must present a certificate signed by it).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from domain.errors import ConfigurationError


def server_context(section: str, cert: Path | None, key: Path | None,
                   client_ca: Path | None) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when ``cert`` is not configured.

    Raises
    ------
    ConfigurationError
        A key or client CA without a certificate, or a certificate without its key
        (``section`` names the config section in the message).
    """
    if cert is None:
        if client_ca is not None or key is not None:
            raise ConfigurationError(f"{section}.tls_key/tls_client_ca need {section}.tls_cert")
        return None
    if key is None:
        raise ConfigurationError(f"{section}.tls_cert needs {section}.tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext | None:
    """A client context that verifies the server against ``ca`` (None: plain TCP).

    ``cert``/``key`` add a client certificate for mutual TLS.
    """
    if ca is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
