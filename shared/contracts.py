"""Event contracts: the common envelope and every versioned event payload on the bus.

One place for every event the services exchange. Producers never remove or retype a field within a
major version; consumers ignore unknown fields. The routing key is ``<type>.v<version>``.
Fields that carry a secret (link secret, phone number, OTP) travel as ``SealedField`` strings,
encrypted for their one consumer with :func:`shared.crypto.seal_field`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone
from typing import Annotated, ClassVar, Generic, Literal, TypeVar

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
)

Language = Literal["fr", "de", "it", "en"]
DeliveryPreference = Literal["email", "postal"]
MAX_PDF_BYTES = 10 * 1024 * 1024

SealedField = Annotated[
    str,
    Field(
        pattern=r"^fe1\.[A-Za-z0-9_-]+$",
        description="A value encrypted for this event's one consumer (AES-256-GCM, shared/crypto.py seal_field/open_field).",
    ),
]


def _swiss_mobile(raw: str) -> str:
    """Parse a phone number (default region CH), require it valid, return it as E.164."""
    try:
        number = phonenumbers.parse(raw, "CH")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc.args[0] if exc.args else exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


MobileNumber = Annotated[
    str,
    AfterValidator(_swiss_mobile),
    Field(description="Mobile number in any usual form; national numbers are read as Swiss (CH). Stored as E.164."),
]


class Contract(BaseModel):
    """Base of every payload: unknown fields are ignored so producers may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class EventPayload(Contract):
    """A versioned event payload; subclasses name their event type and major version."""

    EVENT_TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.EVENT_TYPE}.v{cls.VERSION}"


# --- upstream -> issuer ---------------------------------------------------------------------


class Patient(Contract):
    id: str = Field(min_length=1, max_length=64, description="The hospital's patient identifier.")
    name: str = Field(min_length=1, max_length=200, description="Full name as it should appear on the letter.")
    email: EmailStr | None = Field(None, description="Where the e-mail with the secure link goes.")
    mobile: MobileNumber | None = Field(
        None, description="Mobile number on file; the code is only ever sent to this number when given."
    )
    language: Language = Field("fr", description="Language of the e-mail, SMS, portal and letter.")


class Place(Contract):
    name: str = Field(min_length=1, max_length=200, description="Building, floor or room.")
    address: str = Field(min_length=1, max_length=300, description="Street address.")


class Department(Contract):
    name: str = Field(min_length=1, max_length=200)
    secretariat_phone: str = Field(min_length=3, max_length=40, description="Shown to the patient when they need help.")
    secretariat_email: EmailStr | None = None


class Appointment(Contract):
    starts_at: AwareDatetime = Field(description="Time-zone aware start of the appointment (ISO 8601).")
    place: Place
    department: Department
    instructions: str | None = Field(None, max_length=2000, description="What to bring, fasting, arrival time.")


class ConvocationCreatedV1(EventPayload):
    """An upstream hospital system asks to send a convocation letter to a patient."""

    EVENT_TYPE: ClassVar[str] = "convocation.created"

    convocation_id: uuid.UUID = Field(description="Upstream id of the convocation; the correlation id of the chain.")
    patient: Patient
    appointment: Appointment
    delivery: DeliveryPreference = Field("email", description="'postal' keeps paper mail.")
    document_pdf_base64: str | None = Field(
        None, description="The letter as a base64 PDF (at most 10 MB); when absent the issuer renders one."
    )

    @field_validator("document_pdf_base64")
    @classmethod
    def _real_pdf(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("document_pdf_base64 is not valid base64") from None
        if len(raw) > MAX_PDF_BYTES:
            raise ValueError(f"document is {len(raw)} bytes, more than the 10 MB limit")
        if not raw.startswith(b"%PDF-"):
            raise ValueError("document is not a PDF (no %PDF- header)")
        return value

    def document_bytes(self) -> bytes | None:
        return base64.b64decode(self.document_pdf_base64) if self.document_pdf_base64 else None


class ConvocationCancelledV1(EventPayload):
    """Upstream cancels a convocation; its message is revoked."""

    EVENT_TYPE: ClassVar[str] = "convocation.cancelled"

    convocation_id: uuid.UUID
    reason: str | None = Field(None, max_length=200)


# --- issuer -> mailer, access-portal ---------------------------------------------------------


class MessageSealedV1(EventPayload):
    """The issuer sealed a convocation into a message that only the e-mailed link opens."""

    EVENT_TYPE: ClassVar[str] = "message.sealed"

    message_id: uuid.UUID = Field(description="Id of the secure message; appears in the link.")
    convocation_id: uuid.UUID
    patient_ref: str = Field(description="Keyed hash of the patient id: the same patient, never the id itself.")
    language: Language
    key_id: str = Field(description="Id of the server key the document key was derived with.")
    document_nonce: str = Field(description="base64 AES-GCM nonce of the document.")
    document_ciphertext: str = Field(description="base64 AES-256-GCM ciphertext of the PDF.")
    details_nonce: str = Field(description="base64 AES-GCM nonce of the appointment details.")
    details_ciphertext: str = Field(description="base64 ciphertext of the appointment details (JSON), for the .ics.")
    expires_at: AwareDatetime
    secretariat_phone: str
    secretariat_email: str | None = None
    send_email: bool = Field(True, description="False when the patient keeps paper mail.")
    for_mailer: SealedField = Field(description="Encrypted for the mailer: e-mail address, name and link secret.")
    for_portal: SealedField = Field(description="Encrypted for the access portal: the mobile number on file.")


class MessageRevokedV1(EventPayload):
    """A message must no longer open: cancelled, superseded or expired."""

    EVENT_TYPE: ClassVar[str] = "message.revoked"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    reason: Literal["cancelled", "superseded", "expired"]


class PostalRequestedV1(EventPayload):
    """The hospital's print room must post this letter."""

    EVENT_TYPE: ClassVar[str] = "postal.requested"

    convocation_id: uuid.UUID
    reason: Literal["preference", "no-email", "email-failed", "not-downloaded"]
    language: Language
    for_print_room: str = Field(
        pattern=r"^rs1\.[A-Za-z0-9_-]+$",
        description="Sealed to the print room's X25519 public key (shared/crypto.py open_for_recipient):"
                    " JSON {patient_id, patient_name, document_pdf_base64}.",
    )


class ConvocationStatusV1(EventPayload):
    """Delivery report back to the hospital system: one event per status change."""

    EVENT_TYPE: ClassVar[str] = "convocation.status"

    convocation_id: uuid.UUID
    status: Literal[
        "sealed", "e-mailed", "bounced", "downloaded", "postal", "postal-fallback", "cancelled", "superseded", "expired"
    ]
    at: AwareDatetime
    detail: str | None = None


# --- mailer -> issuer, access-portal ---------------------------------------------------------


class EmailSentV1(EventPayload):
    """The SMTP relay accepted the e-mail carrying the link."""

    EVENT_TYPE: ClassVar[str] = "email.sent"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    smtp_message_id: str
    accepted_at: AwareDatetime


class EmailFailedV1(EventPayload):
    """The e-mail could not be delivered (permanent SMTP failure)."""

    EVENT_TYPE: ClassVar[str] = "email.failed"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    smtp_code: int | None = None
    reason: str = Field(max_length=500)
    failed_at: AwareDatetime


# --- access-portal -> sms-gateway, issuer ----------------------------------------------------


class OtpRequestedV1(EventPayload):
    """The patient asked for a verification code; the gateway must text it."""

    EVENT_TYPE: ClassVar[str] = "otp.requested"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    language: Language
    portal_host: str = Field(description="Host for the origin-bound line '@host #code'.")
    for_sms: SealedField = Field(description="Encrypted for the sms-gateway: phone number and code.")
    expires_at: AwareDatetime


class DocumentReleasedV1(EventPayload):
    """The patient downloaded the document after a correct code: the letter is delivered."""

    EVENT_TYPE: ClassVar[str] = "document.released"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    kind: Literal["pdf", "ics"] = "pdf"
    released_at: AwareDatetime


# --- sms-gateway -> access-portal ------------------------------------------------------------


class SmsSentV1(EventPayload):
    """The SMS provider accepted the code's text message."""

    EVENT_TYPE: ClassVar[str] = "sms.sent"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    provider: str
    provider_message_id: str
    sent_at: AwareDatetime


class SmsFailedV1(EventPayload):
    """The code's SMS could not be delivered."""

    EVENT_TYPE: ClassVar[str] = "sms.failed"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    provider: str
    provider_code: str | None = None
    reason: str = Field(max_length=500)
    failed_at: AwareDatetime


CATALOGUE: dict[str, type[EventPayload]] = {
    cls.routing_key(): cls
    for cls in (
        ConvocationCreatedV1,
        ConvocationCancelledV1,
        MessageSealedV1,
        MessageRevokedV1,
        PostalRequestedV1,
        ConvocationStatusV1,
        EmailSentV1,
        EmailFailedV1,
        OtpRequestedV1,
        DocumentReleasedV1,
        SmsSentV1,
        SmsFailedV1,
    )
}

D = TypeVar("D", bound=EventPayload)


class Envelope(BaseModel, Generic[D]):
    """Common envelope. ``event_id`` is also the AMQP message_id and the consumers' idempotency key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    type: str = Field(description="Event name, e.g. 'convocation.created'.")
    version: int = Field(ge=1, description="Major version; also the routing key's suffix.")
    occurred_at: AwareDatetime
    producer: str = Field(description="Service or upstream system that produced the event.")
    correlation_id: uuid.UUID = Field(description="The convocation id, carried through the whole chain.")
    causation_id: uuid.UUID | None = Field(None, description="Event id of the event that caused this one.")
    data: D


def envelope(
    data: EventPayload,
    *,
    producer: str,
    correlation_id: uuid.UUID,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    """Wrap a payload in a fresh envelope."""
    return Envelope[type(data)](  # type: ignore[misc]
        event_id=uuid.uuid4(),
        type=data.EVENT_TYPE,
        version=data.VERSION,
        occurred_at=datetime.now(timezone.utc),
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
        data=data,
    )
