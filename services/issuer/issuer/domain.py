"""Issuer business rules as plain functions: sealing a convocation, status progression, expiry."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import TypeAdapter, ValidationError

from shared import crypto
from shared.contracts import (
    ConvocationCreatedV1,
    ConvocationStatusV1,
    Email,
    EmailRequestedV1,
    MessageSealedV2,
    PublicContact,
)
from shared.keystore import PeriodKey
from shared.phones import phone_hint

_EMAIL: TypeAdapter[str] = TypeAdapter(Email)

# Statuses a convocation moves through; a later event never moves it backwards.
STATUS_RANK = {
    "sealed": 10,
    "e-mailed": 20,
    "bounced": 25,
    "postal": 30,
    "postal-fallback": 30,
    "printed": 32,
    "posted": 34,
    "returned": 36,
    "downloaded": 40,
    "superseded": 90,
    "cancelled": 90,
    "withdrawn": 90,
    "expired": 95,
}


CLOSED = frozenset({"cancelled", "superseded", "expired", "withdrawn"})


def advances(current: str, new: str) -> bool:
    """True when ``new`` is a step forward from ``current``."""
    return STATUS_RANK[new] > STATUS_RANK[current]


def appointment_problem(convocation: ConvocationCreatedV1, now: datetime) -> str | None:
    """Why a convocation cannot be sent, or None."""
    if convocation.appointment.starts_at <= now:
        return "the appointment is in the past"
    if convocation.delivery == "email" and convocation.patient.email is None:
        return None  # no e-mail address: the issuer falls back to paper
    return None


def expiry(appointment_at: datetime, ttl_days: int) -> datetime:
    return appointment_at + timedelta(days=ttl_days)


def patient_ref(key: crypto.Keys, patient_id: str) -> str:
    return crypto.keyed_hash(key, "patient", patient_id)


def appointment_details(convocation: ConvocationCreatedV1) -> bytes:
    """What the portal may show after a correct code (.ics): sealed like the document."""
    a = convocation.appointment
    return json.dumps(
        {
            "starts_at": a.starts_at.isoformat(),
            "place": a.place.name,
            "address": a.place.address,
            "department": a.department.name,
            "secretariat_phone": a.department.secretariat_phone,
            "instructions": a.instructions,
        }
    ).encode()


@dataclass(frozen=True)
class SealingKeys:
    seal_keys: dict[str, bytes]  # ordered; the newest last
    patient_ref_key: crypto.Keys
    mailer_field_key: crypto.Keys
    portal_field_key: crypto.Keys


class Sealed(NamedTuple):
    """A sealed convocation as two events that never travel together: the letter for the portal, and the
    link for the mailer (None when the letter goes by post). No copy of either opens the letter."""

    message: MessageSealedV2
    email: EmailRequestedV1 | None


def seal_convocation(
    convocation: ConvocationCreatedV1,
    pdf: bytes,
    keys: SealingKeys,
    *,
    expires_at: datetime,
    send_email: bool,
    period: PeriodKey,
    public_contact: PublicContact | None = None,
    address_corrected: bool = False,
    sent_again: bool = False,
) -> Sealed:
    """Encrypt the letter under a fresh link secret, the newest seal key and the period key of its expiry
    (the key id names both: ``k1.w2026-51``); once the key store destroys the period key, nothing opens it.

    The link secret leaves this function only encrypted for the mailer (which puts it in the e-mailed
    link), on an event of its own that carries no part of the letter; it is never stored. Without an
    e-mail to send (paper) it leaves it not at all. ``address_corrected``: the secretariat corrected the
    address, so the mailer must not tell this recipient that the e-mail replaces one it never received.
    ``sent_again``: the secretariat had the same letter sent again, so the e-mail must not say that it changed.
    """
    message_id = uuid.uuid4()
    seal_key_id, seal_key = list(keys.seal_keys.items())[-1]
    key_id, server_key = (
        crypto.period_key_id(seal_key_id, period.period_id),
        crypto.bound_to_period(seal_key, period.key),
    )
    link_secret = crypto.new_link_secret()

    def seal(data: bytes, purpose: str) -> tuple[bytes, bytes]:
        return crypto.seal(
            data, link_secret=link_secret, server_key=server_key, key_id=key_id, message_id=message_id, purpose=purpose
        )

    doc_nonce, doc_ct = seal(pdf, "document")
    det_nonce, det_ct = seal(appointment_details(convocation), "details")
    patient = convocation.patient
    department = convocation.appointment.department
    contact = convocation.public_contact or public_contact
    # A sandbox test's patient is never a real patient's, even under the same id: its number binds nothing
    # and ends no binding of a real letter, and the secretariat's search by patient id never finds it.
    patient_id = f"sandbox:{patient.id}" if convocation.sandbox else patient.id
    message = MessageSealedV2(
        message_id=message_id,
        convocation_id=convocation.convocation_id,
        patient_ref=patient_ref(keys.patient_ref_key, patient_id),
        patient_refs=crypto.keyed_hashes(keys.patient_ref_key, "patient", patient_id),
        language=patient.language,
        key_id=key_id,
        document_nonce=crypto.b64e(doc_nonce),
        document_ciphertext=crypto.b64e(doc_ct),
        details_nonce=crypto.b64e(det_nonce),
        details_ciphertext=crypto.b64e(det_ct),
        expires_at=expires_at,
        secretariat_phone=department.secretariat_phone,
        secretariat_email=department.secretariat_email,
        public_contact=contact,
        for_portal=crypto.seal_field(
            keys.portal_field_key,
            {"mobile": patient.mobile},
            context=crypto.field_context(MessageSealedV2.EVENT_TYPE, message_id, "portal"),
        ),
        sandbox=convocation.sandbox,
    )
    if not send_email:
        return Sealed(message, None)
    email = EmailRequestedV1(
        message_id=message_id,
        convocation_id=convocation.convocation_id,
        language=patient.language,
        expires_at=expires_at,
        public_contact=contact,
        for_mailer=crypto.seal_field(
            keys.mailer_field_key,
            {
                "email": patient.email,
                "name": patient.name,
                "link_secret": link_secret,
                **({"address_corrected": True} if address_corrected else {}),
                **({"sent_again": True} if sent_again else {}),
            },
            context=crypto.field_context(EmailRequestedV1.EVENT_TYPE, message_id, "mailer"),
        ),
        sandbox=convocation.sandbox,
    )
    return Sealed(message, email)


def for_secretariat(convocation: ConvocationCreatedV1, message_id: uuid.UUID, key: crypto.Keys) -> str:
    """What the staff of the letter's department see to recognise the patient, sealed for the secretariat:
    the name, the date of birth, the place, the department's name and the number on file masked."""
    patient, appointment = convocation.patient, convocation.appointment
    return crypto.seal_field(
        key,
        {
            "name": patient.name,
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
            "place": appointment.place.name,
            "department_name": appointment.department.name,
            "phone_hint": phone_hint(patient.mobile) if patient.mobile else None,
        },
        context=crypto.field_context(ConvocationStatusV1.EVENT_TYPE, message_id, "secretariat"),
    )


def with_email(convocation: ConvocationCreatedV1, email: str) -> ConvocationCreatedV1:
    """The republished convocation with the address the secretariat corrected."""
    return convocation.model_copy(update={"patient": convocation.patient.model_copy(update={"email": email})})


def valid_email(value: object) -> str | None:
    """The address as the contracts accept it (one line, a plain e-mail address), or None."""
    try:
        return _EMAIL.validate_python(value)
    except ValidationError:
        return None


def print_copy(convocation: ConvocationCreatedV1, pdf: bytes, print_room_public_key: crypto.Keys) -> str:
    """The letter and the patient's id, sealed so that only the print room opens them."""
    # The same JSON as json.dumps of the three fields, but the 13 MB base64 of a large letter is copied
    # once (the hospital's own text when it sent the PDF), not escaped, re-encoded and copied again.
    head = json.dumps({"patient_id": convocation.patient.id, "patient_name": convocation.patient.name})
    document = convocation.document_pdf_base64.encode() if convocation.document_pdf_base64 else base64.b64encode(pdf)
    payload = b"".join((head[:-1].encode(), b', "document_pdf_base64": "', document, b'"}'))
    del document  # sealing makes three more copies of this size: do not keep a fourth
    return crypto.seal_for_recipient(
        print_room_public_key, payload, context=print_room_context(convocation.convocation_id)
    )


def print_room_context(convocation_id: uuid.UUID) -> str:
    return f"postal.requested|{convocation_id}|print-room"


def postal_reason_at_creation(convocation: ConvocationCreatedV1) -> str | None:
    """Paper from the start: the patient asked for it, or there is no address to e-mail."""
    if convocation.delivery == "postal":
        return "preference"
    if convocation.patient.email is None:
        return "no-email"
    return None


def fallback_deadline(appointment_at: datetime, fallback_hours: int) -> datetime:
    return appointment_at - timedelta(hours=fallback_hours)


def reminder_due(
    *, appointment_at: datetime, sealed_at: datetime, now: datetime, fallback_hours: int, reminder_days: int
) -> bool:
    """Still not downloaded ``reminder_days`` before the paper deadline: remind the patient. Not for a
    message sealed after that moment: the e-mail itself is news enough."""
    if reminder_days <= 0:
        return False
    deadline = fallback_deadline(appointment_at, fallback_hours)
    remind_at = deadline - timedelta(days=reminder_days)
    return sealed_at < remind_at <= now < deadline


def fallback_due(*, appointment_at: datetime, sealed_at: datetime, now: datetime, fallback_hours: int) -> bool:
    """Not downloaded by the deadline: post it. A message sealed after the deadline (an appointment
    booked at short notice) gets no automatic paper copy: it would arrive too late."""
    deadline = fallback_deadline(appointment_at, fallback_hours)
    return sealed_at < deadline <= now < appointment_at
