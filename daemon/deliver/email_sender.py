"""E-mail channel: send a stored alert message over SMTP to the configured recipients.

The stored file is an RFC 5322 message with Subject, Message-ID and body; From, To and
Date are set here from the current configuration. Every SMTP step has a timeout.
5xx replies -> ``PermanentDeliveryError``; 4xx replies, refused or dropped connections
and timeouts -> ``DeliveryError``. The password is read at send time and never logged.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from daemon.config import EmailSettings, read_secret
from domain.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)

class EmailChannel:
    """``send(destination, path)`` channel for ``[alerts.email]``."""

    def __init__(self, settings: EmailSettings, ssl_context: ssl.SSLContext | None = None,
                 addresses: Mapping[str, Sequence[str]] | None = None) -> None:
        self._settings = settings
        self._ssl_context = ssl_context or ssl.create_default_context()
        # Destinations other than "email" (the configured recipients): roster contacts
        # ("contact:<name>") and the admin ("admin"), each with its own addresses.
        self._addresses = {name: list(values) for name, values in (addresses or {}).items()}

    def send(self, destination: str, path: Path) -> None:
        """Send the message stored at ``path``.

        Raises
        ------
        DeliveryError
            Connection refused or dropped, timeout, or a 4xx reply.
        PermanentDeliveryError
            A 5xx reply (including a failed login), no recipients, or e-mail disabled.
        """
        settings = self._settings
        recipients = self._addresses.get(destination, settings.recipients)
        if not settings.enabled or not recipients:
            raise PermanentDeliveryError(f"e-mail is disabled or {destination!r} has no recipients")
        message = email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.SMTP)
        for header in ("From", "To", "Date"):
            del message[header]
        message["From"] = settings.sender
        message["To"] = ", ".join(recipients)
        message["Date"] = email.utils.formatdate(localtime=False)
        try:
            self._deliver(message, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(code >= 500 for code in codes):
                raise PermanentDeliveryError(f"SMTP refused every recipient (codes {sorted(set(codes))})") from exc
            raise DeliveryError(f"SMTP refused the recipients for now (codes {sorted(set(codes))})") from exc
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:
                raise PermanentDeliveryError(f"SMTP server refused: {exc.smtp_code}") from exc
            raise DeliveryError(f"SMTP server deferred: {exc.smtp_code}") from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, dropped, timed out, TLS failed
            raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port} unreachable:"
                                f" {type(exc).__name__}") from exc
        log.info("email sent destination=%s recipients=%d", destination, len(recipients))

    def _deliver(self, message: email.message.Message, recipients: list[str]) -> None:
        settings = self._settings
        smtp: smtplib.SMTP
        if settings.use_ssl:
            smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s,
                                    context=self._ssl_context)
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s)
        with smtp:
            if settings.starttls and not settings.use_ssl:
                smtp.starttls(context=self._ssl_context)
            if settings.username:
                smtp.login(settings.username, read_secret(settings.password, settings.password_file) or "")
            smtp.send_message(message, from_addr=settings.sender, to_addrs=recipients)
