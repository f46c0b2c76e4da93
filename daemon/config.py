"""The node's one typed configuration model.

Precedence (highest first): keyword arguments from the CLI, environment variables
(``HEMEX_<SECTION>__<KEY>``, e.g. ``HEMEX_DICOM__PORT=11112``), the TOML file given to
``hemex serve --config``, then the defaults below (the "embedded defaults" the node runs
on when no file is given). Every field is validated at start-up; a bad value stops the
daemon with a non-zero exit and a message naming the field.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import urllib.parse
from datetime import time
from itertools import combinations
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daemon.config_errors import describe_toml_error, describe_validation_error
from domain.errors import ConfigurationError
from domain.followup import FollowupRules
from domain.oncall import Shift, parse_weekday
from inference.parameters import (
    BlastCtParameters,
    DeviceChoice,
    GeometryLimits,
    MaskingChoice,
    PredictorOptions,
    ThresholdParameters,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (pydantic-settings depends on tomli there)
    import tomli as tomllib


def masked_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``***``.

    Scheme, user, host, port and path stay, so an operator can still tell which endpoint
    it is; put tokens in ``token``/``token_file``, not in the path.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]  # host and port as written (IPv6 brackets kept)
        netloc = f"{parts.username or ''}:***@{host}"
    query = "&".join(f"{name}=***" for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _Section(BaseModel):
    # hide_input_in_errors: a validation error names the field and the problem but never
    # echoes the value, which may be a password typed under a mistyped key.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# Every network step and validator run has a finite timeout of at least a second: 0 or a
# negative value would mean "no timeout" to some libraries and "fail at once" to others.
Timeout = Annotated[float, Field(ge=1.0, le=86400.0)]


class DicomListenerSettings(_Section):
    """The C-STORE / C-ECHO SCP scanners send to."""

    ae_title: str = "HEMEX"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=0, le=65535)  # 0 = any free port (tests); see Node.dicom_port
    # Calling AE titles allowed to C-STORE (any may associate and C-ECHO); empty = any.
    allowed_calling_ae_titles: list[str] = ["STORESCU", "CT_SCANNER"]
    # Refuse C-STORE (0x0124) on an association that called another AE title than
    # ``ae_title`` (C-ECHO still answers, as for any calling AE title).
    require_called_ae_title: bool = True
    # Connections at once, in any phase (TLS handshake, association request, association),
    # in all and from one peer address; more are refused at once (A-ASSOCIATE-RJ, local
    # limit exceeded), so silent or slow peers cannot hold every slot.
    max_associations: int = Field(32, ge=1, le=1000)
    max_associations_per_peer: int = Field(8, ge=1, le=1000)
    # Phase timeouts: the TLS handshake; the A-ASSOCIATE request, counted from the TCP
    # connection; a DIMSE message (command and data set), from its first fragment; any PDU
    # once begun, and silence (no byte at all) within an association.
    tls_handshake_timeout_s: Timeout = 10.0
    acse_timeout_s: Timeout = 10.0
    dimse_timeout_s: Timeout = 600.0
    network_timeout_s: Timeout = 60.0
    # Largest P-DATA PDU the listener announces and accepts (bytes); a longer PDU aborts
    # the association before it is read.
    maximum_pdu_size: int = Field(262144, ge=4096, le=16 * 1024 * 1024)
    # Refuse new instances (status A700, out of resources) below this much free space.
    min_free_disk_mb: int = 500
    # Largest single object accepted (bytes of the encoded data set): the association is
    # aborted as soon as a data set passes it, before the rest is read.
    max_instance_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    # What a C-STORE success promises (docs/promises.md, Durability). "power-loss": the
    # file (and its folder) are fsynced and the row committed durably before the answer.
    # "process-crash": the file is renamed into place and the row committed without
    # waiting for the disk; a background sync makes both durable within
    # write_back_interval_s. Both survive kill -9 of the node; only "power-loss" survives
    # a power cut or kernel crash.
    durability: Literal["power-loss", "process-crash"] = "power-loss"
    write_back_interval_s: float = Field(1.0, gt=0.0, le=60.0)
    # Optional DICOM TLS (issue 5): server certificate and key (PEM); with tls_client_ca
    # set, callers must present a certificate signed by it (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @field_validator("ae_title")
    @classmethod
    def _ae_title_valid(cls, value: str) -> str:
        if not 0 < len(value.strip()) <= 16:
            raise ValueError("AE titles are 1 to 16 characters")
        return value.strip()


class SeriesCompletionSettings(_Section):
    """When a series counts as fully received."""

    # The longest wait: complete after this long without a new image, whatever else.
    quiet_period_s: float = Field(30.0, gt=0)
    # Complete as soon as the expected number of images (Images in Acquisition) is in.
    use_expected_image_count: bool = True
    # Without Images in Acquisition: complete after confirm_s without a new image when the
    # slices received form one evenly spaced stack without gaps (their positions along
    # the image plane's normal). Images that arrive later reopen the series, and a
    # corrected report follows. A stack with a gap or a repeated position waits the
    # quiet period.
    use_slice_positions: bool = True
    confirm_s: float = Field(1.0, gt=0, le=5.0)
    # An association that ends with an orderly A-RELEASE has nothing more to send: a
    # series it brought at least min_stack_slices images of, that no other open
    # association of this node is still bringing, is complete at once when its slices
    # form a whole stack (no confirm period). Turn off for a sender that splits one
    # series over several associations (some routers send in batches): it would get a
    # report on the first batch, then a corrected one.
    complete_on_release: bool = True
    # A stack of fewer slices than this is not trusted to be whole (a scout, a reformat
    # of a few slices): it waits the quiet period.
    min_stack_slices: int = Field(10, ge=2)
    # How often open series are looked at (their timers are kept in the database).
    check_interval_s: float = Field(0.5, ge=0.05, le=10.0)
    # A study none of whose complete series can be analysed gets its "not analysed"
    # notice after this long without a new image of the study (a usable series may still
    # be on its way); a usable series arriving later still gets its report.
    study_settle_s: float = Field(10.0, ge=0)


class SeriesSelectionSettings(_Section):
    """Which series of a study is analysed: axial non-contrast soft-tissue head CT."""

    modalities: list[str] = ["CT"]
    min_slices: int = 20
    max_slice_thickness_mm: float = 5.0
    # Regular expressions (case-insensitive, searched) on Convolution Kernel that mark
    # bone, lung or sharp reconstructions: GE BONE/BONEPLUS/LUNG/DETAIL/EDGE, Siemens
    # H/J/Hr/Br 60 and above, Canon FC30 and above, Philips YC/YD/E/D.
    excluded_kernel_patterns: list[str] = [
        "BONE", "LUNG", "SHARP", "DETAIL", "EDGE", "^[BHIJQ]r?[5-9][0-9]", "^FC[3-9][0-9]", "^(YC|YD|D|E)$",
    ]
    # Regular expressions on Series Description for series that are not a plain axial
    # non-contrast head CT ("CONTRAST" only when not preceded by NON, NO, W/O, WITHOUT).
    excluded_description_patterns: list[str] = [
        "BONE", "LUNG", "CTA", "ANGIO", "(?<!NON)(?<!NON[- ])(?<!NO )(?<!W/O )(?<!WITHOUT )CONTRAST", r"C\+", "POST", "PERF", "SCOUT", "TOPO",
        "LOCALI[SZ]ER", "MIP", "SAG", "COR", "DOSE", "REPORT",
    ]
    # Largest angle between the image plane and the axial plane.
    max_axial_tilt_deg: float = 30.0
    # Body Part Examined values accepted when the attribute is present.
    body_parts: list[str] = ["HEAD", "BRAIN", "SKULL"]


class MaskingSettings(_Section):
    """Which hematoma masking method runs, and each method's parameters."""

    method: Literal["threshold", "blast-ct"] = "threshold"
    # Training-free method (inference/masking/threshold.py, docs/masking.md).
    threshold: ThresholdParameters = ThresholdParameters()
    # BLAST-CT v1's ensemble (inference/masking/blast_ct, docs/masking.md): labels
    # intraparenchymal, intraventricular and extra-axial blood and oedema; trained on
    # traumatic brain injury, about 100 s per head on two CPU cores with 3 members.
    blast_ct: BlastCtParameters = BlastCtParameters()

    def choice(self) -> MaskingChoice:
        """The configured method with its parameters, as inference takes it."""
        parameters: dict[str, object] = {"threshold": self.threshold, "blast-ct": self.blast_ct}
        return MaskingChoice(self.method, parameters[self.method])


class PredictionSettings(_Section):
    """The expansion predictor (Tanioka et al. 2024 Multimodal CNN Model 2)."""

    enabled: bool = True
    # A .keras or .h5 file with a model card (<weights>.card.json / .card.toml) beside it.
    weights_path: Path | None = None
    image_only_weights_path: Path | None = None
    device: DeviceChoice = "auto"
    risk_threshold: float = Field(0.5, ge=0, le=1)

    def predictor_options(self) -> PredictorOptions:
        """The weights and device, as inference takes them."""
        return PredictorOptions(self.weights_path, self.image_only_weights_path, self.device)


class ReportSettings(_Section):
    """What the SR and SEG carry about this node."""

    # Organisation UID root for every UID the node makes; replace with your own.
    uid_root: str = "1.2.826.0.1.3680043.10.1341."
    manufacturer: str = "hemex open-source project"
    institution_name: str = ""
    station_name: str = "HEMEX"
    sr_series_number: int = 9701
    seg_series_number: int = 9702
    # Key Object Selection flagging the slice where the hematoma is largest.
    kos_series_number: int = 9703
    send_key_images: bool = True
    # Secondary Capture of that slice, outline and figures burned in ("not for diagnosis").
    send_key_image_capture: bool = True
    key_capture_series_number: int = 9704
    # Check every SR/SEG with dicom3tools' dciodvfy (and SRs with pixelmed's
    # DicomSRValidator) before it is sent; a tool that is not installed is skipped
    # with a warning. Adds ~10 s of CPU per SR (a JVM start).
    validate_with_dicom3tools: bool = True
    # Keep DicomSRValidator warm in one long-lived JVM (started with the node; needs a
    # JDK, else the one-shot command runs): validation then takes well under a second
    # instead of a JVM start per report.
    warm_sr_validator: bool = True
    validation_timeout_s: Timeout = 120.0

    @field_validator("uid_root")
    @classmethod
    def _uid_root_valid(cls, value: str) -> str:
        root = value.strip()
        root = root if root.endswith(".") else root + "."
        # pydicom makes UIDs of at most 64 characters from prefixes of at most 54.
        if len(root) > 54 or not all(part.isdigit() and (part == "0" or not part.startswith("0"))
                                     for part in root[:-1].split(".")):
            raise ValueError("must be dotted decimal numbers without leading zeros, at most 54 characters"
                             " with its final dot (your organisation's registered root)")
        return root


class DicomDestination(_Section):
    """A PACS (or other C-STORE SCP) the results are sent to."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str = "HEMEX"
    timeout_s: Timeout = 30.0


class OutboxSettings(_Section):
    """Retries of every outbound delivery (DICOM, HL7, webhook, e-mail)."""

    poll_interval_s: float = Field(2.0, gt=0)
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    # After this many failed attempts an item is moved to the dead-letter list.
    max_attempts: int = 200


class WebhookTarget(_Section):
    name: str
    # Printed (check-config, start-up log) with its password and query values masked.
    url: str
    # Sent as "Authorization: Bearer <token>"; prefer HEMEX_ALERTS__... env or token_file.
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout_s: Timeout = 10.0

    @field_serializer("url", when_used="json")
    def _url_masked(self, url: str) -> str:
        return masked_url(url)


class EmailSettings(_Section):
    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = 25
    starttls: bool = False
    use_ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sender: str = "hemex@localhost"
    recipients: list[str] = []
    timeout_s: Timeout = 15.0


class ContactSettings(_Section):
    """A person (or pager group) on the on-call roster, and how to reach them."""

    name: str
    email: list[str] = []
    webhook_url: str | None = None  # printed with its password and query values masked
    webhook_token: SecretStr | None = None
    webhook_token_file: Path | None = None
    timeout_s: Timeout = 10.0

    @field_serializer("webhook_url", when_used="json")
    def _url_masked(self, url: str | None) -> str | None:
        return masked_url(url) if url else url

    @model_validator(mode="after")
    def _reachable(self) -> ContactSettings:
        if not self.email and not self.webhook_url:
            raise ValueError(f"contact {self.name!r} needs an email address or a webhook_url")
        return self

    @property
    def destination(self) -> str:
        """The outbox destination of this contact (e-mail and webhook channels)."""
        return CONTACT_PREFIX + self.name

    def webhook_target(self) -> WebhookTarget | None:
        """The contact's webhook as the webhook channel sends to it, or None."""
        if self.webhook_url is None:
            return None
        return WebhookTarget(name=self.destination, url=self.webhook_url, token=self.webhook_token,
                             token_file=self.webhook_token_file, timeout_s=self.timeout_s)


CONTACT_PREFIX = "contact:"


class ShiftSettings(_Section):
    """One on-call shift (domain/oncall.py): weekdays, local start and end, contacts in
    escalation order. A shift whose end is not after its start runs through midnight."""

    days: list[str] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    start: str = "00:00"
    end: str = "00:00"
    contacts: list[str]

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        time.fromisoformat(value.strip())
        return value.strip()

    @field_validator("days")
    @classmethod
    def _weekdays(cls, value: list[str]) -> list[str]:
        for day in value:
            parse_weekday(day)
        return value

    def shift(self) -> Shift:
        return Shift(frozenset(parse_weekday(d) for d in self.days), time.fromisoformat(self.start),
                     time.fromisoformat(self.end), tuple(self.contacts))


class AcknowledgementSettings(_Section):
    """How an alert is acknowledged, and when an unacknowledged one escalates."""

    # The node's HTTP server as staff reach it (metrics host/port, or a proxy in front of
    # it); each alert's link is <public_url>/alerts/ack/<token>. Empty: no link, the
    # short code only (hemex alerts --ack CODE).
    public_url: str = ""
    # Key that signs the links and makes the short codes (and the pseudonyms of
    # hemex export-training-set). Neither set: <data_dir>/node.key, made at first use.
    secret: SecretStr | None = None
    secret_file: Path | None = None
    link_valid_h: float = Field(168.0, gt=0)
    # An alert nobody acknowledged within this time goes to the next contact of the roster.
    escalate_after_s: float = Field(600.0, ge=10)
    # A new alert for a patient joins the patient's unacknowledged group if that group's
    # first alert is at most this old.
    merge_window_h: float = Field(24.0, ge=0)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value


IdentifierLevel = Literal["none", "accession", "all"]


class AlertSettings(_Section):
    """When and where on-call staff are alerted, and what the alert says."""

    # Identifiers in webhook and e-mail alerts: "none" (the study's non-PHI handle and the
    # findings), "accession" (+ accession number and study date), "all" (+ patient ID,
    # issuer and Study Instance UID). Never the patient's name.
    include_identifiers: IdentifierLevel = "none"
    min_volume_ml: float = 30.0
    # Alert when the expansion risk category is "high" (only from validated weights).
    on_high_expansion_risk: bool = True
    # Alert when a CT could not be analysed (no usable series, or the analysis failed),
    # so that nobody waits for a result that will not come; and again when a usable
    # series arrives later and the study is analysed after all.
    on_not_analysed: bool = True
    # The key image (PNG, figures burned in, no patient name or ID) with each alert:
    # base64 in the webhook payload's "key_image", an attachment of the e-mail.
    attach_key_image: bool = True
    webhooks: list[WebhookTarget] = []
    email: EmailSettings = EmailSettings()
    acknowledgement: AcknowledgementSettings = AcknowledgementSettings()
    # The on-call roster: contacts, and shifts naming them in escalation order. Empty:
    # alerts go to webhooks and email recipients only and do not escalate.
    contacts: list[ContactSettings] = []
    roster: list[ShiftSettings] = []

    @model_validator(mode="after")
    def _roster_names_contacts(self) -> AlertSettings:
        names = [c.name for c in self.contacts]
        if len(set(names)) != len(names):
            raise ValueError("alerts.contacts names must be unique")
        unknown = sorted({n for shift in self.roster for n in shift.contacts} - set(names))
        if unknown:
            raise ValueError(f"alerts.roster names contacts not in alerts.contacts: {', '.join(unknown)}")
        return self

    def shifts(self) -> tuple[Shift, ...]:
        return tuple(s.shift() for s in self.roster)

    def contact(self, name: str) -> ContactSettings | None:
        return next((c for c in self.contacts if c.name == name), None)


class FollowupSettings(_Section):
    """Follow-up CT pairing and the observed change (domain/followup.py, docs/site-performance.md)."""

    enabled: bool = True
    # A later head CT of the same patient this many hours after a baseline is its follow-up.
    min_hours: float = Field(3.0, ge=0)
    max_hours: float = Field(72.0, gt=0)
    # A baseline must have had a hematoma of at least this volume (mL, planimetry).
    min_baseline_volume_ml: float = Field(0.5, ge=0)
    # A fall by more than both, with no procedure message, is read as an unreported evacuation.
    evacuation_drop_ml: float = Field(5.0, ge=0)
    evacuation_drop_fraction: float = Field(0.3, ge=0, le=1)
    # Revised definition: intraventricular blood grown by at least this much (mL).
    ivh_growth_ml: float = Field(1.0, gt=0)
    # Procedure codes (HL7 ADT PR1-3, ORM^O01 OBR-4) that mean a hematoma evacuation, as
    # "SYSTEM:CODE" (system as sent, e.g. I10P, C4, SCT) or "CODE" for any system.
    evacuation_procedure_codes: list[str] = ["I10P:00C00ZZ", "I10P:00C03ZZ", "I10P:00C04ZZ",
                                             "C4:61313", "C4:61315"]
    sr_series_number: int = 9704
    # Alert on-call staff when the follow-up shows expansion.
    alert_on_expansion: bool = True

    @model_validator(mode="after")
    def _window(self) -> FollowupSettings:
        self.rules()
        return self

    def rules(self) -> FollowupRules:
        return FollowupRules(self.min_hours, self.max_hours, self.min_baseline_volume_ml,
                             self.evacuation_drop_ml, self.evacuation_drop_fraction, self.ivh_growth_ml)


class PerformanceSettings(_Section):
    """The site's own accuracy (hemex performance) and the drift warning."""

    # The drift check runs this often (and at start-up), over baselines of the last window_days.
    check_interval_h: float = Field(24.0, gt=0)
    window_days: float = Field(90.0, gt=0)
    # No warning before this many labelled cases (and expansions) of one model version.
    min_cases: int = Field(20, ge=1)
    min_positives: int = Field(5, ge=1)
    # Warn when the observed sensitivity at [prediction] risk_threshold falls below this...
    min_sensitivity: float = Field(0.8, ge=0, le=1)
    # ...or the expected calibration error (weighted |observed - predicted| over bins) exceeds this.
    max_calibration_error: float = Field(0.15, ge=0, le=1)
    calibration_bins: int = Field(5, ge=2, le=20)
    # Sent the drift warning by e-mail (over [alerts.email]'s SMTP server; empty: log and metric only).
    admin_email: list[str] = []
    # BRAIN points at or above which the score counts as "expansion predicted" for its
    # sensitivity and specificity; a site choice, not a published cut-off.
    brain_cutoff_points: int = Field(10, ge=0, le=24)
    bootstrap: int = Field(2000, ge=0)


class Hl7Settings(_Section):
    """HL7 v2 intake over MLLP and the outbound result (issue 3)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(2575, ge=0, le=65535)  # 0 = any free port (tests); see MllpListener.port
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Who may send: connections from these addresses or networks ("10.1.2.0/24")...
    allowed_peers: list[str] = ["127.0.0.1", "::1"]
    # ...or, with mutual TLS, presenting a certificate with one of these subject CNs.
    allowed_client_certificates: list[str] = []
    # Messages whose MSH-3 ("LAB") or MSH-3^MSH-4 ("LAB^HOSP") is listed; empty = any.
    allowed_senders: list[str] = []
    # Open connections at once, in all and from one peer address; more are closed at once.
    max_connections: int = Field(32, ge=1, le=10000)
    max_connections_per_peer: int = Field(4, ge=1, le=10000)
    # A frame, once begun, must end within this; else the connection is closed (the
    # sender still holds the message, never acknowledged, and sends it again).
    frame_timeout_s: Timeout = 30.0
    max_message_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Observations are matched inside this window around the CT acquisition time.
    match_window_before_h: float = 24.0
    match_window_after_h: float = 6.0
    # After a preliminary (image-only) report, wait this long for missing variables.
    wait_for_clinical_s: float = 1800.0
    # Local observation codes mapped to variables, e.g. {"LAB123" = "pt_inr"}.
    local_code_map: dict[str, str] = {}
    outbound_host: str | None = None
    outbound_port: int = 2575
    outbound_timeout_s: Timeout = 15.0
    # --- added for the MLLP listener, matching and ORU (issue 3 helper) ---
    # A connection with no bytes for this long is closed (senders reconnect).
    idle_timeout_s: Timeout = 300.0
    # Below this much free disk space messages are refused with AE (like DICOM A700).
    min_free_disk_mb: int = 200
    # MSH-3/4 of the ACKs and of the outbound ORU^R01, and MSH-5/6 of the ORU.
    sending_application: str = "HEMEX"
    sending_facility: str = ""
    outbound_receiving_application: str = ""
    outbound_receiving_facility: str = ""
    # Require TLS on the outbound ORU connection, checked against this CA (None = plain MLLP).
    outbound_tls_ca: Path | None = None
    outbound_tls_cert: Path | None = None  # client certificate for mutual TLS
    outbound_tls_key: Path | None = None

    @field_validator("allowed_peers")
    @classmethod
    def _networks_valid(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError("each entry must be an IP address or network, e.g. 10.1.2.3 or 10.1.2.0/24") from None
        return value

    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allowed_peers`` as networks."""
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in self.allowed_peers)


class RetentionSettings(_Section):
    """How long images and results are kept (daemon/retention/purge.py).

    A study's files are purged only when every outbox item of the study is delivered and
    no job of it is pending or running, however old they are.
    """

    enabled: bool = True
    # Spool images, counted from the last instance received for the study.
    images_days: float = Field(30.0, gt=0)
    # SR/SEG result folders, counted from when the result was made.
    results_days: float = Field(90.0, gt=0)
    # How often the node runs the purge (and once at start-up).
    interval_h: float = Field(6.0, gt=0, le=168)


class MetricsSettings(_Section):
    """The node's one HTTP server: /metrics and /healthz (daemon/ops/metrics.py) and the
    web console ([console]) share its address."""

    enabled: bool = True  # /metrics and /healthz
    # Loopback by default: the figures are not for the network until the admin opens them.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)  # 0 = any free port (tests); see Node.metrics_port


class DatabaseSettings(_Section):
    """Where the node keeps its state (daemon/state/database.py).

    No ``url``: the embedded SQLite file ``<data_dir>/hemex.sqlite3``. A PostgreSQL URL
    (``postgresql://user@host:5432/hemex``) lets several nodes share one database and one
    data directory (docs/deploy-ha.md); its password comes from ``password`` (or the
    environment, ``HEMEX_DATABASE__PASSWORD``) or ``password_file``, never from the URL.
    """

    url: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # Connections each node keeps open to PostgreSQL (it also opens up to as many more
    # under load).
    pool_size: int = Field(10, ge=1, le=200)
    connect_timeout_s: Timeout = 10.0

    @field_validator("url")
    @classmethod
    def _url_valid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "sqlite:///")):
            raise ValueError("must start with postgresql:// (or sqlite:/// for a file elsewhere)")
        if "@" in value.split("://", 1)[1].split("/", 1)[0] and ":" in value.split("://", 1)[1].split("@", 1)[0]:
            raise ValueError("must not carry a password: use database.password or database.password_file")
        return value


class ClusterSettings(_Section):
    """Several nodes on one PostgreSQL database (docs/deploy-ha.md).

    Jobs and deliveries a node claims carry a lease; a node renews its leases while it
    works, and when it dies another node takes the work over once they expire.
    """

    # This node's name in leases and logs (default: the host name). Must differ between
    # nodes that share a database; a restarted node with the same name takes its own
    # unfinished work back at once.
    node_name: str | None = None
    lease_s: float = Field(60.0, ge=5.0, le=3600.0)
ConsoleAuth = Literal["none", "accounts", "proxy"]


class ConsoleSettings(_Section):
    """The web console for the on-call doctor and the administrator (daemon/console),
    served on the HTTP server of [metrics] (same host and port)."""

    enabled: bool = True
    # none: no login, and only requests from this host (loopback, not forwarded by a proxy)
    # are answered: the state until an administrator configures one of the others.
    # accounts: local accounts (hemex console-user) with argon2-hashed passwords.
    # proxy: the user name the hospital's reverse proxy puts in proxy_user_header after its
    # own login; requests from any other address than trusted_proxies are refused.
    auth: ConsoleAuth = "none"
    # accounts: where they are kept (default: console-accounts in the data directory).
    accounts_file: Path | None = None
    proxy_user_header: str = "X-Remote-User"
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]
    # proxy: the users who may act (retry dead letters); everyone else may look.
    admin_users: list[str] = []
    session_hours: float = Field(12.0, gt=0, le=168)
    # Send the session cookie over HTTPS only (set true behind a TLS reverse proxy).
    secure_cookies: bool = False
    # The studies page shows the studies changed in this many hours.
    hours_shown: float = Field(24.0, gt=0, le=24 * 31)

    @model_validator(mode="after")
    def _auth_configured(self) -> ConsoleSettings:
        if self.auth == "proxy" and not self.trusted_proxies:
            raise ValueError("auth = \"proxy\" needs trusted_proxies, the reverse proxy's addresses")
        return self


class MemorySettings(_Section):
    """How the process keeps memory between studies (daemon/memory_tuning.py)."""

    # Freed blocks up to this size, and up to this much freed memory, stay with the
    # process for the next study instead of going back to the kernel (glibc only; 0 =
    # the C library's defaults). Resident memory then stays near its peak.
    retain_freed_mb: int = Field(1024, ge=0, le=2047)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False


class Settings(BaseSettings):
    """Everything the node reads at start-up. See config.toml for every field, commented."""

    model_config = SettingsConfigDict(
        env_prefix="HEMEX_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("./var")
    dicom: DicomListenerSettings = DicomListenerSettings()
    series: SeriesCompletionSettings = SeriesCompletionSettings()
    selection: SeriesSelectionSettings = SeriesSelectionSettings()
    volume: GeometryLimits = GeometryLimits()
    masking: MaskingSettings = MaskingSettings()
    prediction: PredictionSettings = PredictionSettings()
    report: ReportSettings = ReportSettings()
    destinations: list[DicomDestination] = []
    outbox: OutboxSettings = OutboxSettings()
    alerts: AlertSettings = AlertSettings()
    hl7: Hl7Settings = Hl7Settings()
    logging: LoggingSettings = LoggingSettings()
    memory: MemorySettings = MemorySettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: MetricsSettings = MetricsSettings()  # monitoring for the IT person
    database: DatabaseSettings = DatabaseSettings()
    cluster: ClusterSettings = ClusterSettings()
    console: ConsoleSettings = ConsoleSettings()  # issue 15: the web console
    followup: FollowupSettings = FollowupSettings()  # issue 14
    performance: PerformanceSettings = PerformanceSettings()  # issue 14

    @model_validator(mode="after")
    def _names_unique(self) -> Settings:
        for kind, names in (("destinations", [d.name for d in self.destinations]),
                            ("alerts.webhooks", [w.name for w in self.alerts.webhooks])):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _listener_ports_distinct(self) -> Settings:
        # Caught here so that check-config finds it, and serve stops before any port opens.
        listeners = [("dicom.port", self.dicom.host, self.dicom.port)]
        if self.hl7.enabled:
            listeners.append(("hl7.port", self.hl7.host, self.hl7.port))
        if self.metrics.enabled or self.console.enabled:
            listeners.append(("metrics.port", self.metrics.host, self.metrics.port))
        for (name_a, host_a, port_a), (name_b, host_b, port_b) in combinations(listeners, 2):
            if port_a == port_b != 0 and _hosts_overlap(host_a, host_b):
                raise ValueError(f"{name_a} and {name_b} are both {port_a}: each listener needs a port of its own")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # Paths under the data directory -------------------------------------------------
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def database_path(self) -> Path:
        """The embedded SQLite file (used when ``database.url`` is not set)."""
        return self.data_dir / "hemex.sqlite3"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the node database, without its password."""
        url = self.database.url or f"sqlite:///{self.database_path}"
        return url.replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def node_name(self) -> str:
        """This node's name in leases (``cluster.node_name``, default the host name)."""
        return self.cluster.node_name or socket.gethostname()

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        """Objects being received, one folder per process (daemon/retention/orphans.py)."""
        return self.data_dir / "tmp"

    @property
    def node_key_path(self) -> Path:
        """Where the node keeps its generated signing key (when none is configured)."""
        return self.data_dir / "node.key"

    @property
    def console_accounts_path(self) -> Path:
        """The console's accounts file (``hemex console-user`` writes it)."""
        return self.console.accounts_file or self.data_dir / "console-accounts"

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, for the start-up log."""
        # SecretStr dumps as "**********"; webhook URLs with their credentials masked.
        return json.loads(self.model_dump_json())


def _hosts_overlap(host_a: str, host_b: str) -> bool:
    """Whether two listen addresses can clash on one port (the same, or one a wildcard)."""
    wildcards = {"", "0.0.0.0", "::", "[::]"}
    return host_a == host_b or host_a in wildcards or host_b in wildcards


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from defaults, ``config_file``, the environment and ``overrides``.

    Raises
    ------
    ConfigurationError
        The file is missing or not valid TOML, or a value is invalid; the message names
        the file and line or the environment variable, and the setting
        (``daemon.config_errors``).
    """
    if config_file is None:
        try:
            return Settings(**overrides)
        except ValidationError as exc:
            raise ConfigurationError(describe_validation_error(exc, Settings, None, overrides)) from None
    toml_file = Path(config_file)
    if not toml_file.is_file():
        raise ConfigurationError(f"configuration file not found: {toml_file}")
    try:
        text = toml_file.read_text(encoding="utf-8")
        tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"configuration file {toml_file} unreadable: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(describe_toml_error(toml_file, text, exc)) from None

    class _SettingsFromFile(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    try:
        return _SettingsFromFile(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc, Settings, toml_file, overrides)) from None


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given inline (or by environment) or in a file, never logged."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return Path(file).read_text(encoding="utf-8").strip()
    return None
