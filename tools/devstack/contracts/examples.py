"""Example messages for the schemas and the catalogue: built with the models, with fixed ids and dates, so
that a fresh generation writes the same bytes."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime, timedelta, timezone

from devstack.contracts.parties import producer_of
from shared import topology
from shared.contracts import (
    AccessChangedV1,
    ConvocationCancelledV1,
    ConvocationCreatedV1,
    ConvocationReissueRequestedV1,
    ConvocationStatusV1,
    DocumentReleasedV1,
    EmailFailedV1,
    EmailRequestedV1,
    EmailSentV1,
    Envelope,
    EventPayload,
    MessageRevokedV1,
    MessageSealedV2,
    OtpRequestedV1,
    PatientErasedV1,
    PatientErasureConfirmedV1,
    PatientErasureRequestedV1,
    PostalCancelledV1,
    PostalChosenV1,
    PostalPostedV1,
    PostalPrintedV1,
    PostalProgressV1,
    PostalRequestedV1,
    PostalReturnedV1,
    ReminderRequestedV1,
    SmsFailedV1,
    SmsSentV1,
    StaffActionRequestedV1,
)
from shared.crypto import b64e

EXAMPLE_NS = uuid.UUID("5b0f7d0e-6a43-4f0c-9a3e-2f1c8f6f1a00")
CONVOCATION_ID = uuid.UUID("3f2a9c4e-8b1d-4e6f-a2c7-5d9e0b1f4a68")
MESSAGE_ID = uuid.UUID("b7e4c1d2-5a6f-4b3c-9d8e-1f2a3b4c5d6e")
CHALLENGE_ID = uuid.UUID("e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9")
GENEVA = timezone(timedelta(hours=1))  # CET: the example appointment is in January
CREATED_AT = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)
APPOINTMENT_AT = datetime(2027, 1, 14, 8, 30, tzinfo=GENEVA)
PATIENT_ID = "HUG-20481137"
# What caused each example event, for a realistic causation chain.
CAUSED_BY: dict[type[EventPayload], type[EventPayload] | None] = {
    ConvocationCreatedV1: None,
    ConvocationCancelledV1: None,
    MessageSealedV2: ConvocationCreatedV1,
    EmailRequestedV1: ConvocationCreatedV1,
    ConvocationStatusV1: ConvocationCreatedV1,
    EmailSentV1: EmailRequestedV1,
    EmailFailedV1: EmailRequestedV1,
    PostalRequestedV1: EmailFailedV1,
    MessageRevokedV1: ConvocationCancelledV1,
    ReminderRequestedV1: None,  # the issuer's clock
    OtpRequestedV1: None,  # a patient's request on the portal
    SmsSentV1: OtpRequestedV1,
    SmsFailedV1: OtpRequestedV1,
    DocumentReleasedV1: None,  # a patient's download
    StaffActionRequestedV1: None,  # a secretary's act
    AccessChangedV1: StaffActionRequestedV1,
    PostalChosenV1: None,  # a patient's request on the portal
    ConvocationReissueRequestedV1: StaffActionRequestedV1,
    PostalCancelledV1: StaffActionRequestedV1,  # a letter switched back to e-mail
    PostalPrintedV1: PostalRequestedV1,
    PostalPostedV1: PostalRequestedV1,
    PostalReturnedV1: PostalRequestedV1,
    PostalProgressV1: PostalRequestedV1,
    PatientErasureRequestedV1: None,  # a secretary's act, at the patient's request
    PatientErasedV1: PatientErasureRequestedV1,
    PatientErasureConfirmedV1: PatientErasedV1,
}
OCCURRED_AFTER = {  # seconds after CREATED_AT
    ConvocationCreatedV1: 0,
    MessageSealedV2: 1,
    EmailRequestedV1: 1,
    ConvocationStatusV1: 1,
    EmailSentV1: 3,
    EmailFailedV1: 3,
    PostalRequestedV1: 4,
    OtpRequestedV1: 38530,
    SmsSentV1: 38531,
    SmsFailedV1: 38531,
    DocumentReleasedV1: 38595,
    PostalChosenV1: 38600,
    ConvocationCancelledV1: 86400,
    MessageRevokedV1: 86401,
    StaffActionRequestedV1: 40000,
    AccessChangedV1: 40001,
    ReminderRequestedV1: 3110400,
    ConvocationReissueRequestedV1: 40001,
    PostalProgressV1: 5,
    PostalPrintedV1: 7200,
    PostalPostedV1: 36000,
    PostalReturnedV1: 432000,
    PostalCancelledV1: 40001,
    PatientErasureRequestedV1: 5184000,
    PatientErasedV1: 5184001,
    PatientErasureConfirmedV1: 5184002,
}
ACTION_ID = uuid.UUID("a0c1d2e3-f405-4617-8829-3a4b5c6d7e8f")
ERASURE_ID = uuid.UUID("c4d5e6f7-0819-4a2b-9c3d-4e5f60718293")


def _illustrative(label: str, size: int) -> bytes:
    """Fixed stand-in bytes for ciphertexts and nonces: examples must not change from run to run."""
    return hashlib.shake_256(f"convocations example {label}".encode()).digest(size)


def _token(prefix: str, label: str, size: int) -> str:
    return prefix + base64.urlsafe_b64encode(_illustrative(label, size)).rstrip(b"=").decode()


def _at(event: type[EventPayload]) -> datetime:
    return CREATED_AT + timedelta(seconds=OCCURRED_AFTER[event])


def example_payload(event: type[EventPayload]) -> EventPayload:
    """A realistic payload for each event of the catalogue (ciphertexts are illustrative bytes)."""
    ids = dict(convocation_id=CONVOCATION_ID)
    message = dict(ids, message_id=MESSAGE_ID)
    challenge = dict(message, challenge_id=CHALLENGE_ID)
    builders = {
        ConvocationCreatedV1: lambda: ConvocationCreatedV1.model_validate(
            {
                **ids,
                "patient": {
                    "id": PATIENT_ID,
                    "name": "Marie Dupont",
                    "email": "marie.dupont@example.ch",
                    "mobile": "+41 79 123 45 67",
                    "language": "fr",
                    "birth_date": "1958-03-21",
                },
                "appointment": {
                    "starts_at": APPOINTMENT_AT,
                    "place": {
                        "name": "Bâtiment Gustave Julliard, 2e étage",
                        "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
                    },
                    "department": {
                        "code": "cardiology",
                        "name": "Cardiologie",
                        "secretariat_phone": "+41 22 372 33 11",
                        "secretariat_email": "cardiologie@hug.example",
                    },
                    "instructions": "Venez à jeun. Apportez la liste de vos médicaments.",
                },
                "delivery": "email",
                "public_contact": {"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
                "document_pdf_base64": None,
            }
        ),
        ConvocationCancelledV1: lambda: ConvocationCancelledV1(**ids, reason="Rendez-vous annulé par le service"),
        MessageSealedV2: lambda: MessageSealedV2(
            **message,
            patient_ref="k1:" + _illustrative("patient_ref", 32).hex(),
            patient_refs=["k1:" + _illustrative("patient_ref", 32).hex()],
            language="fr",
            key_id="k1.w2026-51",
            document_nonce=b64e(_illustrative("document nonce", 12)),
            document_ciphertext=b64e(_illustrative("document ciphertext", 64)),
            details_nonce=b64e(_illustrative("details nonce", 12)),
            details_ciphertext=b64e(_illustrative("details ciphertext", 48)),
            expires_at=APPOINTMENT_AT + timedelta(days=30),
            secretariat_phone="+41 22 372 33 11",
            secretariat_email="cardiologie@hug.example",
            public_contact={"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
            for_portal=_token("fe2.k1.", "for_portal", 12 + 25 + 16),
        ),
        EmailRequestedV1: lambda: EmailRequestedV1(
            **message,
            language="fr",
            expires_at=APPOINTMENT_AT + timedelta(days=30),
            public_contact={"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
            for_mailer=_token("fe2.k1.", "for_mailer", 12 + 112 + 16),
        ),
        MessageRevokedV1: lambda: MessageRevokedV1(**message, reason="cancelled"),
        ReminderRequestedV1: lambda: ReminderRequestedV1(
            **message, paper_deadline=APPOINTMENT_AT - timedelta(hours=48)
        ),
        PostalRequestedV1: lambda: PostalRequestedV1(
            **message,
            reason="email-failed",
            language="fr",
            for_print_room=_token("rs2.k1.", "for_print_room", 32 + 12 + 96 + 16),
        ),
        ConvocationStatusV1: lambda: ConvocationStatusV1(
            **message,
            status="sealed",
            at=_at(ConvocationStatusV1),
            department="cardiology",
            appointment_at=APPOINTMENT_AT,
            delivery="email",
            patient_ref=_illustrative("patient_ref", 32).hex(),
            for_secretariat=_token("fe2.k1.", "for_secretariat", 12 + 160 + 16),
        ),
        PostalCancelledV1: lambda: PostalCancelledV1(**message, reason="email-instead"),
        PostalPrintedV1: lambda: PostalPrintedV1(**message, at=_at(PostalPrintedV1)),
        PostalPostedV1: lambda: PostalPostedV1(**message, at=_at(PostalPostedV1)),
        PostalReturnedV1: lambda: PostalReturnedV1(**message, at=_at(PostalReturnedV1), reason="address-unknown"),
        PostalProgressV1: lambda: PostalProgressV1(
            **message, step="requested", reason="email-failed", at=_at(PostalProgressV1)
        ),
        EmailSentV1: lambda: EmailSentV1(
            **message,
            smtp_message_id=f"<{MESSAGE_ID}@hug.example>",
            accepted_at=_at(EmailSentV1),
        ),
        EmailFailedV1: lambda: EmailFailedV1(
            **message,
            smtp_code=550,
            reason="5.1.1 The e-mail account that you tried to reach does not exist",
            failed_at=_at(EmailFailedV1),
        ),
        OtpRequestedV1: lambda: OtpRequestedV1(
            **challenge,
            language="fr",
            portal_host="convocations.hug.example",
            for_sms=_token("fe2.k1.", "for_sms", 12 + 38 + 16),
            expires_at=_at(OtpRequestedV1) + timedelta(minutes=10),
            phone_hint="+41 79 *** ** 67",
        ),
        StaffActionRequestedV1: lambda: StaffActionRequestedV1(
            **message,
            action_id=ACTION_ID,
            action="unlock",
            department="cardiology",
            requested_by="3b9f2c1a-secretary-subject",
        ),
        AccessChangedV1: lambda: AccessChangedV1(
            **message,
            change="unlocked",
            at=_at(AccessChangedV1),
            action_id=ACTION_ID,
        ),
        ConvocationReissueRequestedV1: lambda: ConvocationReissueRequestedV1(
            **ids,
            reason="email-corrected",
            requested_at=_at(ConvocationReissueRequestedV1),
            action_id=ACTION_ID,
        ),
        DocumentReleasedV1: lambda: DocumentReleasedV1(**message, kind="pdf", released_at=_at(DocumentReleasedV1)),
        PostalChosenV1: lambda: PostalChosenV1(**message, chosen_at=_at(PostalChosenV1)),
        SmsSentV1: lambda: SmsSentV1(
            **challenge,
            provider="twilio",
            provider_message_id="SM" + _illustrative("sms sid", 16).hex(),
            sent_at=_at(SmsSentV1),
        ),
        SmsFailedV1: lambda: SmsFailedV1(
            **challenge,
            provider="twilio",
            provider_code="30003",
            reason="Unreachable destination handset",
            failed_at=_at(SmsFailedV1),
        ),
        PatientErasureRequestedV1: lambda: PatientErasureRequestedV1(
            erasure_id=ERASURE_ID,
            patient_refs=["k1:" + _illustrative("patient_ref", 32).hex()],
            requested_at=_at(PatientErasureRequestedV1),
        ),
        PatientErasedV1: lambda: PatientErasedV1(
            erasure_id=ERASURE_ID,
            patient_refs=["k1:" + _illustrative("patient_ref", 32).hex()],
            convocation_ids=[CONVOCATION_ID],
            at=_at(PatientErasedV1),
        ),
        PatientErasureConfirmedV1: lambda: PatientErasureConfirmedV1(
            erasure_id=ERASURE_ID, service="mailer", convocations=1, rows=3, at=_at(PatientErasureConfirmedV1)
        ),
    }
    return builders[event]()


def example_event_id(event: type[EventPayload]) -> uuid.UUID:
    return uuid.uuid5(EXAMPLE_NS, event.routing_key())


def _correlation(event: type[EventPayload]) -> uuid.UUID:
    """The chain an example belongs to: its convocation, or for an erasure (about a patient) the erasure."""
    erasure = (PatientErasureRequestedV1, PatientErasedV1, PatientErasureConfirmedV1)
    return ERASURE_ID if event in erasure else CONVOCATION_ID


def example_envelope(event: type[EventPayload]) -> Envelope:
    cause = CAUSED_BY[event]
    producer = producer_of(event).name
    return Envelope[event](  # type: ignore[valid-type]
        event_id=example_event_id(event),
        type=event.EVENT_TYPE,
        version=event.VERSION,
        occurred_at=_at(event),
        producer=topology.producer_name(producer),
        correlation_id=_correlation(event),
        causation_id=example_event_id(cause) if cause else None,
        data=example_payload(event),
    )


def example_message(event: type[EventPayload]) -> dict:
    """The example as it travels: the JSON body."""
    return example_envelope(event).model_dump(mode="json")


def example_properties(event: type[EventPayload]) -> dict:
    """The AMQP properties the example travels with."""
    return {
        "message_id": str(example_event_id(event)),
        "correlation_id": str(_correlation(event)),
        "type": event.EVENT_TYPE,
        "content_type": "application/json",
        "delivery_mode": 2,
    }
