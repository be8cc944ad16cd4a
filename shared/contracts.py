"""Event contracts: the common envelope and every versioned event payload on the bus.

One place for every event the services exchange. Producers never remove or retype a field within a
major version; consumers ignore unknown fields. The routing key is ``<type>.v<version>``.
Fields that carry a secret (link secret, phone number, OTP) travel as ``SealedField`` strings,
encrypted for their one consumer with :func:`shared.crypto.seal_field`. Every other text field is a
``Line`` (no control character at all) or, where the text is prose, a ``Text`` (line breaks only).
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import date, datetime, timezone
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
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: a value that ends up in an
# e-mail header, a log line or an SMS must not be able to start a new line or a new header.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_PRINTABLE_ASCII_AND_NEWLINES = _PRINTABLE_ASCII + b"\t\n\r"


def control_character(value: str, *, newlines: bool = False) -> str | None:
    """The first control character in ``value`` as ``U+XXXX``, or None. ``newlines`` allows tab, CR and LF."""
    if value.isascii():
        # Only C0 controls and DEL can be in ASCII text: deleting every other byte in one pass in C is
        # six times faster than the regular expression on a 200 KB base64 letter (py-spy, issue 12).
        rest = value.encode("ascii").translate(None, _PRINTABLE_ASCII_AND_NEWLINES if newlines else _PRINTABLE_ASCII)
        return f"U+{rest[0]:04X}" if rest else None
    match = (_CONTROL_BUT_NEWLINES if newlines else _CONTROL).search(value)
    return f"U+{ord(match.group()):04X}" if match else None


def one_line(value: str) -> str:
    """Outside text (a provider's error message) made fit for a ``Line`` field: controls become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _single_line(value: str) -> str:
    if found := control_character(value):
        # The code point, never the value: the detail is logged and kept on the dead-letter queue.
        raise ValueError(f"contains a control character ({found}); this field is one line of text")
    return value


def _prose(value: str) -> str:
    if found := control_character(value, newlines=True):
        raise ValueError(f"contains a control character ({found}); only line breaks and tabs are allowed")
    return value


_ONE_LINE = Field(json_schema_extra={"pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"})
Line = Annotated[str, AfterValidator(_single_line), _ONE_LINE]
"""A single-line text field: any control character (CR, LF, tab, other C0/C1) is refused."""

Text = Annotated[
    str,
    AfterValidator(_prose),
    Field(json_schema_extra={"pattern": "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"}),
]
"""A multi-line text field (prose such as instructions): line breaks and tabs, no other control character."""

Email = Annotated[EmailStr, AfterValidator(_single_line), _ONE_LINE]

SealedField = Annotated[
    str,
    Field(
        pattern=r"^(fe1\.[A-Za-z0-9_-]+|fe2\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]+)$",
        description="A value encrypted for this event's one consumer (AES-256-GCM, shared/crypto.py seal_field/open_field):"
        " fe2.<key id>.<base64url>; fe1. tokens from before key ids still open.",
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
    AfterValidator(_single_line),
    AfterValidator(_swiss_mobile),
    _ONE_LINE,
    Field(description="Mobile number in any usual form; national numbers are read as Swiss (CH). Stored as E.164."),
]


class Contract(BaseModel):
    """Base of every payload: unknown fields are ignored so producers may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class EventPayload(Contract):
    """A versioned event payload; subclasses name their event type and major version."""

    EVENT_TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1
    # The largest message body a consumer reads: a bigger one is dead-lettered ("too-large") before it is
    # decoded, parsed or validated (a 40 MB letter once took the issuer past its memory limit while pydantic
    # judged it). None: no bound beyond the broker's.
    MAX_BODY_BYTES: ClassVar[int | None] = None

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.EVENT_TYPE}.v{cls.VERSION}"


# --- upstream -> issuer ---------------------------------------------------------------------


class Patient(Contract):
    id: Line = Field(min_length=1, max_length=64, description="The hospital's patient identifier.")
    name: Line = Field(min_length=1, max_length=200, description="Full name as it should appear on the letter.")
    email: Email | None = Field(None, description="Where the e-mail with the secure link goes.")
    mobile: MobileNumber | None = Field(
        None, description="Mobile number on file; the code is only ever sent to this number when given."
    )
    language: Language = Field("fr", description="Language of the e-mail, SMS, portal and letter.")
    birth_date: date | None = Field(
        None,
        description="Date of birth (HL7 PID-7, FHIR Patient.birthDate): shown, with the name, to the staff of the"
        " letter's department (sealed for them) to tell patients with the same name apart; never in"
        " the e-mail or the SMS.",
    )


class Place(Contract):
    name: Line = Field(min_length=1, max_length=200, description="Building, floor or room.")
    address: Line = Field(min_length=1, max_length=300, description="Street address.")


class Department(Contract):
    name: Line = Field(min_length=1, max_length=200)
    code: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="The department's code (e.g. 'cardiology'): which secretariat sees and acts on the convocation.",
    )
    secretariat_phone: Line = Field(
        min_length=3, max_length=40, description="Shown to the patient when they need help."
    )
    secretariat_email: Email | None = None


class PublicContact(Contract):
    """A contact that does not reveal the specialty (the hospital's patient desk, not 'oncologie@…'):
    what the e-mail and the portal's pages before the code show."""

    phone: Line = Field(min_length=3, max_length=40)
    email: Email | None = None


class Appointment(Contract):
    starts_at: AwareDatetime = Field(description="Time-zone aware start of the appointment (ISO 8601).")
    place: Place
    department: Department
    instructions: Text | None = Field(None, max_length=2000, description="What to bring, fasting, arrival time.")


class ConvocationCreatedV1(EventPayload):
    """An upstream hospital system asks to send a convocation letter to a patient."""

    EVENT_TYPE: ClassVar[str] = "convocation.created"
    # The largest letter in base64 (4 characters per 3 bytes), and 256 KiB for everything else in the event.
    MAX_BODY_BYTES: ClassVar[int | None] = -(-MAX_PDF_BYTES // 3) * 4 + 256 * 1024

    convocation_id: uuid.UUID = Field(description="Upstream id of the convocation; the correlation id of the chain.")
    patient: Patient
    appointment: Appointment
    delivery: DeliveryPreference = Field("email", description="'postal' keeps paper mail.")
    public_contact: PublicContact | None = Field(
        None,
        description="Shown before the code (e-mail, portal) instead of the department's own contact;"
        " when absent the issuer's PUBLIC_CONTACT_PHONE/PUBLIC_CONTACT_EMAIL.",
    )
    document_pdf_base64: Line | None = Field(
        None, description="The letter as a base64 PDF (at most 10 MB); when absent the issuer renders one."
    )
    sandbox: bool = Field(
        False,
        description="A test sent with an integrator's sandbox credentials (hospital gateway): the whole chain"
        " runs, but e-mails and SMS go only to the sandbox endpoints (the development inbox), never"
        " to a real provider, nothing is posted, and every status says it is a test.",
    )

    @field_validator("document_pdf_base64")
    @classmethod
    def _real_pdf(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Judged from the text alone (size from its length): no decoded copy of a letter is made here.
        if len(value) % 4 or not _BASE64.fullmatch(value):
            raise ValueError("document_pdf_base64 is not valid base64")
        size = len(value) // 4 * 3 - value[-2:].count("=")
        if size > MAX_PDF_BYTES:
            raise ValueError(f"document is {size} bytes, more than the 10 MB limit")
        if not base64.b64decode(value[:8]).startswith(b"%PDF-"):
            raise ValueError("document is not a PDF (no %PDF- header)")
        return value

    def document_bytes(self) -> bytes | None:
        return base64.b64decode(self.document_pdf_base64) if self.document_pdf_base64 else None


class ConvocationCancelledV1(EventPayload):
    """Upstream cancels a convocation; its message is revoked."""

    EVENT_TYPE: ClassVar[str] = "convocation.cancelled"

    convocation_id: uuid.UUID
    reason: Line | None = Field(None, max_length=200)


# --- issuer -> access-portal, mailer ---------------------------------------------------------


class MessageSealedV2(EventPayload):
    """The issuer sealed a convocation into a message that only the e-mailed link opens: the sealed letter
    for the portal. It carries nothing from which a key recovers the link (the link travels to the mailer
    alone, on email.requested), so no copy of it opens without the patient's e-mail."""

    EVENT_TYPE: ClassVar[str] = "message.sealed"
    VERSION: ClassVar[int] = 2

    message_id: uuid.UUID = Field(description="Id of the secure message; appears in the link.")
    convocation_id: uuid.UUID
    patient_ref: Line = Field(
        description="Keyed hash of the patient id under the current key, '<key id>:<hex>':"
        " the same patient, never the id itself."
    )
    patient_refs: list[Line] = Field(
        default_factory=list,
        description="The patient id's keyed hash under every active key (rotation):"
        " what was recorded under an older key is still found.",
    )
    language: Language
    key_id: Line = Field(
        description="Ids of the server keys the document key was derived with: the seal key, then the period key"
        " of the letter's expiry (`k1.w2026-51`); a letter sealed before period keys names the seal key alone."
    )
    document_nonce: Line = Field(description="base64 AES-GCM nonce of the document.")
    document_ciphertext: Line = Field(description="base64 AES-256-GCM ciphertext of the PDF.")
    details_nonce: Line = Field(description="base64 AES-GCM nonce of the appointment details.")
    details_ciphertext: Line = Field(description="base64 ciphertext of the appointment details (JSON), for the .ics.")
    expires_at: AwareDatetime
    secretariat_phone: Line
    secretariat_email: Line | None = None
    public_contact: PublicContact | None = Field(
        None, description="The contact shown before the code; the secretariat's only after it."
    )
    for_portal: SealedField = Field(description="Encrypted for the access portal: the mobile number on file.")
    sandbox: bool = Field(
        False,
        description="A sandbox test (convocation.created sandbox): the portal marks its code requests"
        " (otp.requested sandbox). Every event that takes over part of this one carries it too.",
    )


class EmailRequestedV1(EventPayload):
    """The mailer must e-mail the patient the link to a message sealed at the same time (message.sealed): the
    link's secret, the address and the name, and no part of the letter, so no copy of it opens a letter."""

    EVENT_TYPE: ClassVar[str] = "email.requested"

    message_id: uuid.UUID = Field(description="Id of the secure message; appears in the link.")
    convocation_id: uuid.UUID
    language: Language
    expires_at: AwareDatetime = Field(description="When the message expires: the mailer forgets the address then.")
    public_contact: PublicContact | None = Field(None, description="The contact the e-mail shows.")
    for_mailer: SealedField = Field(description="Encrypted for the mailer: e-mail address, name and link secret.")
    sandbox: bool = Field(
        False,
        description="A sandbox test (convocation.created sandbox): the mailer sends its e-mails only to its"
        " sandbox SMTP endpoint.",
    )


class MessageRevokedV1(EventPayload):
    """A message must no longer open: cancelled, superseded or expired."""

    EVENT_TYPE: ClassVar[str] = "message.revoked"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    reason: Literal["cancelled", "superseded", "expired", "withdrawn"] = Field(
        description="'withdrawn': the department's secretariat withdrew the letter."
    )


PostalReason = Literal["preference", "no-email", "email-failed", "not-downloaded", "secretariat", "patient-request"]


class PostalRequestedV1(EventPayload):
    """The hospital's print room must post this letter."""

    EVENT_TYPE: ClassVar[str] = "postal.requested"

    convocation_id: uuid.UUID
    message_id: uuid.UUID | None = Field(
        None,
        description="The letter's current secure message: the print room's reports (postal.printed, postal.posted,"
        " postal.returned) and postal.cancelled name it.",
    )
    reason: PostalReason = Field(
        description="'secretariat': the department's secretariat asked for paper; 'patient-request': the patient"
        " asked on the portal, after the SMS code."
    )
    language: Language
    for_print_room: str = Field(
        pattern=r"^(rs1\.[A-Za-z0-9_-]+|rs2\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]+)$",
        description="Sealed to the print room's X25519 public key (shared/crypto.py open_for_recipient):"
        " JSON {patient_id, patient_name, document_pdf_base64}.",
    )


class ConvocationStatusV1(EventPayload):
    """Delivery report back to the hospital system: one event per status change."""

    EVENT_TYPE: ClassVar[str] = "convocation.status"

    convocation_id: uuid.UUID
    status: Literal[
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
    ] = Field(
        description="'printed', 'posted', 'returned': the print room's reports on a paper letter (detail of"
        " 'returned': why it came back); 'postal-cancelled': the print room was told not to post"
        " it (detail: withdrawn, cancelled, superseded, expired, email-instead or erased); 'erased': the"
        " patient asked for their data to be erased and every service erased this convocation (the last"
        " status of it: its action_id is the erasure's id; it carries no patient ref, department or"
        " appointment time)."
    )
    at: AwareDatetime
    detail: Line | None = None
    message_id: uuid.UUID | None = Field(None, description="The convocation's current secure message.")
    department: Line | None = Field(None, max_length=32, description="The department's code, when upstream gave one.")
    appointment_at: AwareDatetime | None = None
    delivery: DeliveryPreference | None = Field(None, description="The channel the patient chose.")
    patient_ref: Line | None = Field(
        None, max_length=128, description="Keyed hash of the patient id (as on message.sealed)."
    )
    action_id: uuid.UUID | None = Field(None, description="The secretariat action this change carries out.")
    for_secretariat: SealedField | None = Field(
        None,
        description="On 'sealed', encrypted for the secretariat (SECRETARIAT_FIELD_KEY): JSON {name, birth_date,"
        " place, department_name, phone_hint} (the number on file masked), for the staff of the"
        " letter's department to recognise the patient.",
    )
    sandbox: bool = Field(
        False, description="A status of a sandbox test (convocation.created sandbox), not of a real letter."
    )


class ReminderRequestedV1(EventPayload):
    """The letter is still not downloaded and its paper deadline nears: the mailer reminds the patient, once."""

    EVENT_TYPE: ClassVar[str] = "reminder.requested"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    paper_deadline: AwareDatetime = Field(description="When the letter goes to paper if still not downloaded.")


# --- mailer -> issuer ------------------------------------------------------------------------


class EmailSentV1(EventPayload):
    """The SMTP relay accepted the e-mail carrying the link."""

    EVENT_TYPE: ClassVar[str] = "email.sent"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    smtp_message_id: Line
    accepted_at: AwareDatetime


class EmailFailedV1(EventPayload):
    """The e-mail could not be delivered (permanent SMTP failure)."""

    EVENT_TYPE: ClassVar[str] = "email.failed"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    smtp_code: int | None = None
    reason: Line = Field(
        max_length=500,
        description="What failed, as a code only (never the relay's text, which may quote the recipient):"
        " 'recipient-refused' or 'relay-refused' with the enhanced status code when the relay gave one"
        " (e.g. 'recipient-refused 5.1.1'), 'local-error <error type>', 'no-email-address'.",
    )
    failed_at: AwareDatetime
    late: bool = Field(
        False,
        description="True for a bounce that came back after the relay had accepted the e-mail"
        " (a delivery status notification to the per-message envelope sender).",
    )


# --- access-portal -> sms-gateway, issuer ----------------------------------------------------


class OtpRequestedV1(EventPayload):
    """The patient asked for a verification code; the gateway must text it."""

    EVENT_TYPE: ClassVar[str] = "otp.requested"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    language: Language
    portal_host: Line = Field(description="Host for the origin-bound line '@host #code'.")
    for_sms: SealedField = Field(description="Encrypted for the sms-gateway: phone number and code.")
    expires_at: AwareDatetime
    phone_hint: Line | None = Field(None, max_length=40, description="The number masked ('+41 79 *** ** 67').")
    sandbox: bool = Field(
        False,
        description="A code for a sandbox test (message.sealed sandbox): the sms-gateway"
        " texts it only to its sandbox provider, never the real one.",
    )


class DocumentReleasedV1(EventPayload):
    """The patient downloaded the document after a correct code: the letter is delivered."""

    EVENT_TYPE: ClassVar[str] = "document.released"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    kind: Literal["pdf", "ics"] = "pdf"
    released_at: AwareDatetime


class PostalChosenV1(EventPayload):
    """The patient asked on the portal, after the SMS code, to receive this convocation by post."""

    EVENT_TYPE: ClassVar[str] = "postal.chosen"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    chosen_at: AwareDatetime


# --- sms-gateway -> access-portal ------------------------------------------------------------


class SmsSentV1(EventPayload):
    """The SMS provider accepted the code's text message."""

    EVENT_TYPE: ClassVar[str] = "sms.sent"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    provider: Line
    provider_message_id: Line
    sent_at: AwareDatetime


class SmsFailedV1(EventPayload):
    """The code's SMS could not be delivered."""

    EVENT_TYPE: ClassVar[str] = "sms.failed"

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    provider: Line
    provider_code: Line | None = None
    reason: Line = Field(max_length=500)
    failed_at: AwareDatetime


class AccessChangedV1(EventPayload):
    """The portal changed how a patient gets in: a lock after wrong codes, or a secretariat action done."""

    EVENT_TYPE: ClassVar[str] = "access.changed"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    change: Literal["locked", "unlocked", "binding-reset", "mobile-corrected", "verified", "binding-ended"] = Field(
        description="'verified': the patient typed a right code; 'binding-ended': a new letter carried another number"
        " on file, so the number the patient had verified is no longer used."
    )
    at: AwareDatetime
    locked_until: AwareDatetime | None = Field(None, description="For 'locked': until when codes are refused.")
    phone_hint: Line | None = Field(None, max_length=40, description="For 'mobile-corrected': the new number, masked.")
    action_id: uuid.UUID | None = Field(None, description="The secretariat action this change carries out.")
    bound: bool | None = Field(
        None,
        description="For 'verified': whether the patient now has a verified number, to which later letters'"
        " codes go without asking (false: proven for this letter only, no number on file).",
    )


# --- secretariat -> issuer, access-portal ----------------------------------------------------

StaffAction = Literal[
    "post", "withdraw", "correct-mobile", "reset-binding", "unlock", "correct-email", "resend", "email-instead"
]
ISSUER_ACTIONS = frozenset({"post", "withdraw", "correct-email", "resend", "email-instead"})
PORTAL_ACTIONS = frozenset({"correct-mobile", "reset-binding", "unlock"})


class StaffActionRequestedV1(EventPayload):
    """A department's secretariat asks the service that owns the data to act on a convocation.

    The staff member's reason stays in the secretariat's audit; only the action travels."""

    EVENT_TYPE: ClassVar[str] = "staff.action.requested"

    action_id: uuid.UUID = Field(description="Id of the action; the owner's resulting event carries it back.")
    convocation_id: uuid.UUID
    message_id: uuid.UUID = Field(description="The message the secretary saw; a newer one is left alone.")
    action: StaffAction = Field(
        description="post, withdraw, correct-email, resend, email-instead: carried out by the issuer (the last three"
        " through the hospital system, see convocation.reissue.requested; email-instead switches a paper"
        " letter not printed yet back to e-mail); correct-mobile, reset-binding, unlock: by the portal."
    )
    department: Line | None = Field(None, max_length=32)
    requested_by: Line = Field(max_length=200, description="The staff member's subject at the identity provider.")
    for_portal: SealedField | None = Field(
        None, description="For correct-mobile, encrypted for the access portal: {mobile} (E.164)."
    )
    for_issuer: SealedField | None = Field(
        None, description="For correct-email, encrypted for the issuer: {email} (the corrected address)."
    )


class ConvocationReissueRequestedV1(EventPayload):
    """The hospital system must send this convocation again: republish convocation.created with the same
    convocation_id. The issuer keeps no letter (nothing at rest opens one without the patient's link), so a
    new link needs the letter again; the republished event supersedes the current message."""

    EVENT_TYPE: ClassVar[str] = "convocation.reissue.requested"

    convocation_id: uuid.UUID = Field(description="The convocation to republish, with this same id.")
    reason: Literal["resend", "email-corrected", "email-instead"] = Field(
        description="'resend': the secretariat asked for the e-mail again; 'email-corrected': it corrected the"
        " e-mail address (the issuer puts the corrected address in the republished letter's e-mail,"
        " whatever address the republished event carries); 'email-instead': it switched a letter on"
        " paper, not printed yet, back to e-mail (the print room was told not to post it)."
    )
    requested_at: AwareDatetime
    action_id: uuid.UUID = Field(description="The secretariat action this request carries out.")


# --- issuer <-> print room ------------------------------------------------------------------------


class PostalCancelledV1(EventPayload):
    """The print room must not post this letter, if it has not yet: the letter was withdrawn, cancelled or
    replaced, or the secretariat switched it back to e-mail."""

    EVENT_TYPE: ClassVar[str] = "postal.cancelled"

    convocation_id: uuid.UUID
    message_id: uuid.UUID = Field(description="The message named by the postal.requested to drop.")
    reason: Literal["cancelled", "withdrawn", "superseded", "expired", "email-instead", "erased"]


class _PrintReport(EventPayload):
    convocation_id: uuid.UUID
    message_id: uuid.UUID | None = Field(
        None, description="The message_id of the postal.requested reported on (absent when it carried none)."
    )
    at: AwareDatetime


class PostalPrintedV1(_PrintReport):
    """The print room printed the letter; it goes out with the next collection."""

    EVENT_TYPE: ClassVar[str] = "postal.printed"


class PostalPostedV1(_PrintReport):
    """The print room handed the letter to the post."""

    EVENT_TYPE: ClassVar[str] = "postal.posted"


class PostalReturnedV1(_PrintReport):
    """The post returned the letter as undeliverable."""

    EVENT_TYPE: ClassVar[str] = "postal.returned"

    reason: Literal["address-unknown", "moved", "refused", "not-collected", "other"] = Field(
        description="Why the post returned it, as the envelope's mark says."
    )


class PostalProgressV1(EventPayload):
    """Where this message's paper copy stands, for the portal: who asked for paper and when, then the print
    room's reports. The portal stops offering paper once it was asked."""

    EVENT_TYPE: ClassVar[str] = "postal.progress"

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    step: Literal["requested", "printed", "posted", "returned", "cancelled"] = Field(
        description="'cancelled': the print room was told not to post it (the letter was withdrawn or replaced, or"
        " goes by e-mail after all); paper may be asked again."
    )
    reason: PostalReason | None = Field(None, description="For 'requested': why the letter goes on paper.")
    at: AwareDatetime


# --- erasure on request (secretariat -> issuer -> every service) --------------------------------------

PatientRef = Annotated[Line, Field(max_length=128)]


class PatientErasureRequestedV1(EventPayload):
    """A patient asked for everything about them to be erased: the secretariat asks the issuer, which finds their
    convocations and tells every service (patient.erased). Who asked it and why stay in the secretariat's audit.
    The envelope's correlation id is the erasure id."""

    EVENT_TYPE: ClassVar[str] = "patient.erasure.requested"

    erasure_id: uuid.UUID
    patient_refs: list[PatientRef] = Field(
        min_length=1,
        max_length=16,
        description="Keyed hashes of the patient id (as on message.sealed's patient_refs), one per key of the"
        " ring: every convocation recorded under any of them is erased.",
    )
    requested_at: AwareDatetime


class PatientErasedV1(EventPayload):
    """The issuer erased the patient's convocations: each service erases or shreds what it holds about them (by
    these convocation ids and patient refs) and confirms (patient.erasure.confirmed). The hospital gets the
    status 'erased' of each convocation. The envelope's correlation id is the erasure id."""

    EVENT_TYPE: ClassVar[str] = "patient.erased"

    erasure_id: uuid.UUID
    patient_refs: list[PatientRef] = Field(min_length=1, max_length=16)
    convocation_ids: list[uuid.UUID] = Field(
        max_length=10_000, description="Every convocation of the patient the issuer knew (may be empty)."
    )
    at: AwareDatetime


class PatientErasureConfirmedV1(EventPayload):
    """A service erased what it held about the patient of an erasure (the hospital gateway: of one of its
    convocations, once the hospital got its 'erased' status). Counts only: nothing about the patient."""

    EVENT_TYPE: ClassVar[str] = "patient.erasure.confirmed"

    erasure_id: uuid.UUID
    service: Line = Field(max_length=40, description="The service that erased its rows.")
    convocations: int = Field(ge=0, description="The patient's convocations it erased (or confirmed erased).")
    rows: int = Field(ge=0, description="The rows it deleted or shredded.")
    at: AwareDatetime


CATALOGUE: dict[str, type[EventPayload]] = {
    cls.routing_key(): cls
    for cls in (
        ConvocationCreatedV1,
        ConvocationCancelledV1,
        MessageSealedV2,
        EmailRequestedV1,
        MessageRevokedV1,
        PostalRequestedV1,
        ConvocationStatusV1,
        ReminderRequestedV1,
        EmailSentV1,
        EmailFailedV1,
        OtpRequestedV1,
        DocumentReleasedV1,
        PostalChosenV1,
        SmsSentV1,
        SmsFailedV1,
        AccessChangedV1,
        StaffActionRequestedV1,
        ConvocationReissueRequestedV1,
        PostalCancelledV1,
        PostalPrintedV1,
        PostalPostedV1,
        PostalReturnedV1,
        PostalProgressV1,
        PatientErasureRequestedV1,
        PatientErasedV1,
        PatientErasureConfirmedV1,
    )
}

D = TypeVar("D", bound=EventPayload)


class Envelope(BaseModel, Generic[D]):
    """Common envelope. ``event_id`` is also the AMQP message_id and the consumers' idempotency key."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    type: Line = Field(description="Event name, e.g. 'convocation.created'.")
    version: int = Field(ge=1, description="Major version; also the routing key's suffix.")
    occurred_at: AwareDatetime
    producer: Line = Field(description="Service or upstream system that produced the event.")
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
    return Envelope[type(data)](  # type: ignore[misc,operator]
        event_id=uuid.uuid4(),
        type=data.EVENT_TYPE,
        version=data.VERSION,
        occurred_at=datetime.now(timezone.utc),
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
        data=data,
    )
