"""The node's one typed configuration model.

Precedence (highest first): keyword arguments from the CLI, environment variables
(``HEMEX_<SECTION>__<KEY>``, e.g. ``HEMEX_DICOM__PORT=11112``), the TOML file given to
``hemex serve --config``, then the defaults below (the "embedded defaults" the node runs
on when no file is given). Every field is validated at start-up; a bad value stops the
daemon with a non-zero exit and a message naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DicomListenerSettings(_Section):
    """The C-STORE / C-ECHO SCP scanners send to."""

    ae_title: str = "HEMEX"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    # Calling AE titles allowed to associate; anything else is rejected at association.
    allowed_calling_ae_titles: list[str] = ["STORESCU", "CT_SCANNER"]
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    maximum_pdu_size: int = 0  # 0 = unlimited
    # Refuse new instances (status A700, out of resources) below this much free space.
    min_free_disk_mb: int = 500
    # Largest single object accepted (bytes of the encoded dataset).
    max_instance_bytes: int = 512 * 1024 * 1024
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

    quiet_period_s: float = Field(30.0, gt=0)
    # Complete as soon as the expected number of images (Images in Acquisition) is in.
    use_expected_image_count: bool = True


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


class VolumeSettings(_Section):
    """Checks on the geometry of the series before a volume is built."""

    max_gantry_tilt_deg: float = 0.5
    slice_spacing_tolerance: float = 0.05  # fraction of the median spacing


class MaskingSettings(_Section):
    """Which hematoma masking method runs, and its parameters."""

    method: Literal["threshold", "blast-ct"] = "threshold"
    # Threshold method (training-free, inference/masking/threshold.py, docs/masking.md).
    # Acute clotted blood lies at about 50-90 HU; grey matter at 35-45 HU.
    blood_hu_min: float = 50.0
    blood_hu_max: float = 90.0
    # Voxels up to rim_voxels from a kept hematoma join it when their unsmoothed HU is in
    # the blood range (the rim that smoothing blurred with surrounding oedema).
    rim_voxels: int = Field(1, ge=0)
    # Blood components smaller than this are noise.
    min_component_ml: float = Field(0.5, ge=0)
    # Gaussian smoothing before thresholding (noise would push grey matter into the range).
    smoothing_sigma_mm: float = Field(0.8, ge=0)
    # Bone: above this HU. The intracranial space is the soft tissue it encloses.
    bone_hu: float = 250.0
    # Opening radius that cuts scalp and neck off the brain where they meet through
    # skull openings.
    opening_mm: float = Field(4.0, gt=0)
    # Band along the inner skull surface left out (partial volume of bone, beam hardening).
    brain_margin_mm: float = Field(3.0, ge=0)
    # A component with more than extra_axial_fraction of its voxels within
    # extra_axial_band_mm of the skull is extra-axial blood, not intraparenchymal.
    extra_axial_band_mm: float = Field(8.0, ge=0)
    extra_axial_fraction: float = Field(0.5, gt=0, le=1)


class PredictionSettings(_Section):
    """The expansion predictor (Tanioka et al. 2024 Multimodal CNN Model 2)."""

    enabled: bool = True
    # A .keras or .h5 file with a model card (<weights>.card.json / .card.toml) beside it.
    weights_path: Path | None = None
    image_only_weights_path: Path | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    risk_threshold: float = Field(0.5, ge=0, le=1)


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
    # Check every SR/SEG with dicom3tools' dciodvfy (and SRs with pixelmed's
    # DicomSRValidator) before it is sent; a tool that is not installed is skipped
    # with a warning. Adds ~10 s of CPU per SR (a JVM start).
    validate_with_dicom3tools: bool = True
    validation_timeout_s: float = 120.0


class DicomDestination(_Section):
    """A PACS (or other C-STORE SCP) the results are sent to."""

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str = "HEMEX"
    timeout_s: float = 30.0


class OutboxSettings(_Section):
    """Retries of every outbound delivery (DICOM, HL7, webhook, e-mail)."""

    poll_interval_s: float = Field(2.0, gt=0)
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    # After this many failed attempts an item is moved to the dead-letter list.
    max_attempts: int = 200


class WebhookTarget(_Section):
    name: str
    url: str
    # Sent as "Authorization: Bearer <token>"; prefer HEMEX_ALERTS__... env or token_file.
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout_s: float = 10.0


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
    timeout_s: float = 15.0


class AlertSettings(_Section):
    """When and where on-call staff are alerted."""

    min_volume_ml: float = 30.0
    # Alert when the expansion risk category is "high" (only from validated weights).
    on_high_expansion_risk: bool = True
    webhooks: list[WebhookTarget] = []
    email: EmailSettings = EmailSettings()


class Hl7Settings(_Section):
    """HL7 v2 intake over MLLP and the outbound result (issue 3)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(2575, ge=0, le=65535)  # 0 = any free port (tests); see MllpListener.port
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    max_message_bytes: int = 1024 * 1024
    # Observations are matched inside this window around the CT acquisition time.
    match_window_before_h: float = 24.0
    match_window_after_h: float = 6.0
    # After a preliminary (image-only) report, wait this long for missing variables.
    wait_for_clinical_s: float = 1800.0
    # Local observation codes mapped to variables, e.g. {"LAB123" = "pt_inr"}.
    local_code_map: dict[str, str] = {}
    outbound_host: str | None = None
    outbound_port: int = 2575
    outbound_timeout_s: float = 15.0
    # --- added for the MLLP listener, matching and ORU (issue 3 helper) ---
    # A connection with no bytes for this long is closed (senders reconnect).
    idle_timeout_s: float = Field(300.0, gt=0)
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


class RetentionSettings(_Section):
    """How long images and results are kept (issue 5; daemon/state/retention.py).

    A study's files are purged only when every outbox item of the study is delivered and
    no job of it is pending or running, however old they are.
    """

    enabled: bool = True
    # Spool images, counted from the last instance received for the study.
    images_days: float = Field(30.0, gt=0)
    # SR/SEG result folders, counted from when the result was made.
    results_days: float = Field(90.0, gt=0)


class MetricsSettings(_Section):
    """The Prometheus /metrics and /healthz HTTP endpoint (monitoring; daemon/metrics.py)."""

    enabled: bool = True
    # Loopback by default: the figures are not for the network until the admin opens them.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)  # 0 = any free port (tests); see Node.metrics_port


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
    )

    data_dir: Path = Path("./var")
    dicom: DicomListenerSettings = DicomListenerSettings()
    series: SeriesCompletionSettings = SeriesCompletionSettings()
    selection: SeriesSelectionSettings = SeriesSelectionSettings()
    volume: VolumeSettings = VolumeSettings()
    masking: MaskingSettings = MaskingSettings()
    prediction: PredictionSettings = PredictionSettings()
    report: ReportSettings = ReportSettings()
    destinations: list[DicomDestination] = []
    outbox: OutboxSettings = OutboxSettings()
    alerts: AlertSettings = AlertSettings()
    hl7: Hl7Settings = Hl7Settings()
    logging: LoggingSettings = LoggingSettings()
    retention: RetentionSettings = RetentionSettings()  # issue 5
    metrics: MetricsSettings = MetricsSettings()  # monitoring for the IT person

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
        return self.data_dir / "hemex.sqlite3"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, for the start-up log."""
        return json.loads(self.model_dump_json())  # SecretStr dumps as "**********"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from defaults, ``config_file``, the environment and ``overrides``.

    Raises
    ------
    pydantic.ValidationError
        When a value is invalid; the message names the field.
    FileNotFoundError
        When ``config_file`` is given but does not exist.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise FileNotFoundError(f"configuration file not found: {config_file}")
    if config_file is None:
        return Settings(**overrides)
    toml_file = Path(config_file)

    class _SettingsFromFile(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    return _SettingsFromFile(**overrides)


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given inline (or by environment) or in a file, never logged."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return Path(file).read_text(encoding="utf-8").strip()
    return None
