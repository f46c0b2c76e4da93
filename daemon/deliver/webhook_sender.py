"""Webhook channel: POST a stored JSON alert to a configured URL.

2xx -> delivered. 408, 429, 5xx, timeouts and connection errors -> ``DeliveryError``
(retried). Other 4xx and any 3xx (redirects are not followed: a POST must not silently
become a GET elsewhere) -> ``PermanentDeliveryError``. The bearer token is read from the
configuration (or its file) at send time and never logged.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from daemon.config import WebhookTarget, read_secret
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebhookChannel:
    """``send(destination, path)`` channel; ``destination`` is a ``WebhookTarget.name``."""

    def __init__(self, targets: Sequence[WebhookTarget]) -> None:
        self._targets = {t.name: t for t in targets}
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, destination: str, path: Path) -> None:
        """POST the JSON file at ``path`` to the target named ``destination``.

        Raises
        ------
        DeliveryError
            Timeout, connection error, 408, 429 or 5xx.
        PermanentDeliveryError
            Unknown target, other 3xx/4xx, or an unreadable token file.
        """
        target = self._targets.get(destination)
        if target is None:
            raise PermanentDeliveryError(f"no webhook named {destination!r}")
        body = Path(path).read_bytes()
        headers = {"Content-Type": "application/json", "User-Agent": "hemex"}
        try:
            token = read_secret(target.token, target.token_file)
        except OSError as exc:
            raise PermanentDeliveryError(f"token file of webhook {destination} unreadable: {exc.strerror}") from exc
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=target.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"webhook {destination} unreachable: {reason}") from exc
        if 200 <= status < 300:
            log.info("webhook sent destination=%s status=%d", destination, status)
            return
        if status >= 500 or status in RETRYABLE_CLIENT_ERRORS:
            raise DeliveryError(f"webhook {destination} answered HTTP {status}")
        raise PermanentDeliveryError(f"webhook {destination} refused the alert: HTTP {status}")
