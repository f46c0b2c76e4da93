"""The node's one exception tree, converted once at each boundary.

At the DICOM edge a ``HemexError`` becomes a C-STORE status, at the HL7 edge an AE/AR
ACK, inside the job runner a job in the failed state with the message as its reason.
"""

from __future__ import annotations


class HemexError(Exception):
    """Base of every error the node raises on purpose."""


class ConfigurationError(HemexError):
    """The configuration is invalid; the daemon does not start."""


class ListenerPortError(ConfigurationError):
    """A listener's address cannot be bound (in use, not this host's, or privileged)."""


class StorageFullError(HemexError):
    """Not enough free disk space to store what was received (DICOM A700, HL7 AE)."""


class InvalidInputError(HemexError):
    """Received data that cannot be accepted (malformed, wrong modality, too large)."""


class UnsupportedSeriesError(HemexError):
    """A series that cannot be analysed: tilted, inconsistent geometry, too few slices."""


class NoAnalysableSeriesError(HemexError):
    """No series of a study meets the selection rules."""


class ReportBuildError(HemexError):
    """The SR or SEG could not be built or failed validation."""


class DeliveryError(HemexError):
    """A peer (PACS, EHR, SMTP, webhook) refused or could not be reached; retried."""


class PermanentDeliveryError(DeliveryError):
    """A peer refused in a way retrying cannot fix; goes to the dead-letter list."""


class ModelError(HemexError):
    """Model weights missing, mismatched, or their model card is invalid."""
