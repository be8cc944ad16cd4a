"""Hospital gateway settings (environment variables) and the hospital systems it serves (HOSPITAL_SYSTEMS)."""

from __future__ import annotations

import json
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.contracts import Language, PublicContact
from shared.settings import ServiceSettings, require_https

STATUSES = (
    "sealed",
    "e-mailed",
    "bounced",
    "downloaded",
    "postal",
    "postal-fallback",
    "cancelled",
    "superseded",
    "expired",
    "withdrawn",
    "printed",
    "posted",
    "returned",
    "postal-cancelled",
    "erased",
)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepartmentConfig(_Config):
    """One of the hospital's department codes (HL7 AIL-3.1 or PV1-3.1, FHIR Appointment.serviceType or
    specialty code) and what a letter needs of it that messages do not carry."""

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Our department code (secretariat scope).")
    name: str
    secretariat_phone: str
    secretariat_email: str | None = None
    place: str | None = None  # the building and floor, when the message names no location
    address: str | None = None  # the street address, when it differs from the system's


class Outbound(_Config):
    """Where and how the statuses and the requests to send a letter again go back to a hospital system."""

    format: Literal["fhir", "hl7"]
    url: str | None = None  # FHIR: the base URL; Communication and Task are POSTed under it
    host: str | None = None  # HL7 v2: the system's MLLP listener
    port: int | None = None
    tls: bool = False  # HL7 v2 over TLS
    ca_file: str | None = None  # a private CA for the system's certificate (else the system's CAs)
    client_cert: str | None = None  # mutual TLS: our certificate and key (PEM files)
    client_key: str | None = None
    statuses: tuple[str, ...] = STATUSES  # which status changes to send (the requests always go)
    timeout: float = 10.0

    @model_validator(mode="after")
    def _complete(self) -> Outbound:
        if self.format == "fhir" and not self.url:
            raise ValueError("a FHIR outbound needs url")
        if self.format == "hl7" and not (self.host and self.port):
            raise ValueError("an HL7 outbound needs host and port")
        if unknown := set(self.statuses) - set(STATUSES):
            raise ValueError(f"unknown statuses {sorted(unknown)}")
        return self


class HospitalSystem(_Config):
    """One hospital system (or an integrator's sandbox): how it reaches us and how we answer it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: str
    sandbox: bool = False  # its letters reach only the sandbox endpoints, and every status says "test"
    mllp_port: int | None = None  # its own MLLP listener (HL7 v2); none: it does not send HL7
    mllp_client_ca: str | None = None  # mutual TLS on that listener: client certificates signed by this CA
    oauth_client_id: str | None = None  # the client id its access tokens carry (FHIR, CSV)
    timezone: str = "Europe/Zurich"  # for HL7 times without an offset and CSV times without one
    default_language: Language = "fr"  # for a patient whose language is none of ours
    default_charset: str = "UNICODE UTF-8"  # for HL7 messages without MSH-18
    address: str  # the hospital's street address, for letters whose department has none
    public_contact: PublicContact | None = None
    departments: dict[str, DepartmentConfig]
    # FHIR: the identifier system of its appointment ids, and of its patient ids (else the one typed MR).
    appointment_identifier_system: str | None = None
    patient_identifier_system: str | None = None
    outbound: Outbound | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# Development: the development hospital (HL7 on 2575, FHIR as the OAuth client his-gateway) and the
# integrators' sandbox (HL7 on 2576, FHIR as his-sandbox). Production sets its own (deploy/k8s).
_DEV_DEPARTMENTS = {
    "CARDIO": {
        "code": "cardiology",
        "name": "Cardiologie",
        "secretariat_phone": "+41 22 372 33 11",
        "secretariat_email": "cardiologie@hug.example",
        "place": "Bâtiment Gustave Julliard, 2e étage",
    },
    "NEURO": {
        "code": "neurology",
        "name": "Neurologie",
        "secretariat_phone": "+41 22 372 83 00",
        "place": "Bâtiment principal, 4e étage",
    },
}
DEV_SYSTEMS = [
    {
        "id": "dev-his",
        "name": "Development hospital system",
        "mllp_port": 2575,
        "oauth_client_id": "his-gateway",
        "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
        "departments": _DEV_DEPARTMENTS,
        "public_contact": {"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
        "appointment_identifier_system": "urn:oid:2.16.756.5.30.1.999.1",
        "patient_identifier_system": "urn:oid:2.16.756.5.30.1.999.2",
    },
    {
        "id": "sandbox",
        "name": "Integrators' sandbox",
        "sandbox": True,
        "mllp_port": 2576,
        "oauth_client_id": "his-sandbox",
        "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
        "departments": _DEV_DEPARTMENTS,
        "public_contact": {"phone": "+41 22 372 33 11"},
    },
]


def _systems(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


class GatewaySettings(ServiceSettings):
    http_port: int = 8005
    database_url: str = "postgresql://hospital_gateway:hospital_gateway@127.0.0.1:5432/convocations"
    hospital_systems: Annotated[list[HospitalSystem], NoDecode] = Field(
        default_factory=lambda: [HospitalSystem.model_validate(s) for s in DEV_SYSTEMS]
    )
    mllp_host: str = "127.0.0.1"  # where the MLLP listeners bind (0.0.0.0 in a pod)
    # TLS on every MLLP listener (required in production): the gateway's certificate and key (PEM files).
    mllp_tls_cert_file: str | None = None
    mllp_tls_key_file: str | None = None
    mllp_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # one HL7 message (a 10 MB PDF is 13.4 MB of base64)
    mllp_idle_seconds: float = 300.0  # a connection silent this long is closed
    # The hospital's OpenID provider, whose client-credentials access tokens the FHIR and CSV API accept.
    oidc_issuer: str = "http://127.0.0.1:8030"
    api_audience: str = "hospital-gateway"
    api_scope: str = "convocations.submit"
    fhir_max_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024)  # one request: a Bundle of a day's letters
    outbound_retry_delays: str = "5,30,120,600,1800"  # seconds between attempts to reach a hospital system
    # An accepted letter the issuer has not sealed this long after is dead-lettered (alert), see README.
    confirm_within_seconds: float = Field(600.0, gt=0)
    sweep_seconds: float = 30.0
    retention_days: int = Field(90, ge=1)  # message ids (duplicates), deliveries and dead letters kept this long

    @field_validator("hospital_systems", mode="before")
    @classmethod
    def _parse_systems(cls, value: object) -> object:
        return _systems(value)

    @model_validator(mode="after")
    def _distinct(self) -> GatewaySettings:
        for what in ("id", "mllp_port", "oauth_client_id"):
            values = [getattr(s, what) for s in self.hospital_systems if getattr(s, what) is not None]
            if len(values) != len(set(values)):
                raise ValueError(f"HOSPITAL_SYSTEMS: each system needs its own {what}")
        return self

    @model_validator(mode="after")
    def _refuse_plain_production(self) -> GatewaySettings:
        if self.environment != "production":
            return self
        require_https("OIDC_ISSUER", self.oidc_issuer)
        if any(s.mllp_port for s in self.hospital_systems) and not (self.mllp_tls_cert_file and self.mllp_tls_key_file):
            raise ValueError(
                "MLLP_TLS_CERT_FILE and MLLP_TLS_KEY_FILE are required in production: HL7 carries"
                " patient data and letters"
            )
        for s in self.hospital_systems:
            if s.outbound and s.outbound.format == "fhir":
                require_https(f"HOSPITAL_SYSTEMS {s.id} outbound url", s.outbound.url)
            if s.outbound and s.outbound.format == "hl7" and not s.outbound.tls:
                raise ValueError(f"HOSPITAL_SYSTEMS {s.id}: HL7 outbound needs tls in production")
        return self

    def system(self, system_id: str) -> HospitalSystem:
        return next(s for s in self.hospital_systems if s.id == system_id)

    def system_of_client(self, client_id: str) -> HospitalSystem | None:
        return next((s for s in self.hospital_systems if s.oauth_client_id == client_id), None)
