"""Access portal event handlers: keep the sealed messages, revocations and SMS failures."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from access_portal import store
from access_portal.phones import Phones, StoredPhone
from access_portal.policy import phone_hint
from access_portal.settings import PortalSettings
from shared import crypto, erasure, rejections, tracing
from shared.consumer import Delivery, Rejected
from shared.contracts import (
    PORTAL_ACTIONS,
    AccessChangedV1,
    MessageRevokedV1,
    MessageSealedV2,
    PatientErasedV1,
    PostalProgressV1,
    SmsFailedV1,
    SmsSentV1,
    StaffActionRequestedV1,
    envelope,
)
from shared.logs import get_logger
from shared.outbox import add_event

log = get_logger(__name__)


class PortalHandlers:
    def __init__(self, settings: PortalSettings, phones: Phones) -> None:
        self.settings, self.phones = settings, phones

    async def on_patient_erased(self, conn: asyncpg.Connection, d: Delivery[PatientErasedV1]) -> None:
        """The patient asked for their data to be erased: their messages, codes, sessions and verified number go,
        their access audit is made anonymous, and the portal says so."""
        e = d.data
        rows = await store.erase(conn, e.convocation_ids, e.patient_refs)
        await erasure.confirm_erased(conn, "access-portal", d, rows)

    async def on_message_sealed(self, conn: asyncpg.Connection, d: Delivery[MessageSealedV2]) -> None:
        m = d.data
        on_file = crypto.open_field(
            self.settings.portal_field_key,
            m.for_portal,
            context=crypto.field_context("message.sealed", m.message_id, "portal"),
        )["mobile"]
        phone: StoredPhone | None = None
        if on_file:
            phone = self.phones.stored(on_file, m.patient_ref)
            refs = [m.patient_ref, *m.patient_refs]
            binding = await store.get_binding(conn, refs)
            # A convocation carrying another number ends the old binding (docs/architecture.md#security).
            if binding is not None and not self.phones.matches(on_file, binding.phone_hash):
                await store.end_binding(conn, refs)
                await store.audit(conn, m.message_id, "binding", "ended", None, "number on file changed")
                await add_event(
                    conn,
                    envelope(
                        AccessChangedV1(
                            message_id=m.message_id,
                            convocation_id=m.convocation_id,
                            change="binding-ended",
                            at=datetime.now(timezone.utc),
                        ),
                        producer="access-portal",
                        correlation_id=m.convocation_id,
                        causation_id=d.envelope.event_id,
                    ),
                )
            elif binding is not None and binding.patient_ref != m.patient_ref:
                # Proven under the patient's ref for an older PATIENT_REF_KEY key: the same number on
                # file carries over to the current ref, so the key can go without asking again.
                await store.bind_phone(
                    conn, m.patient_ref, phone.phone_hash, phone.phone_hint, phone.phone_enc, binding.source
                )
        await store.insert_message(
            conn,
            message_id=m.message_id,
            convocation_id=m.convocation_id,
            patient_ref=m.patient_ref,
            language=m.language,
            key_id=m.key_id,
            document_nonce=crypto.b64d(m.document_nonce),
            document_ciphertext=crypto.b64d(m.document_ciphertext),
            details_nonce=crypto.b64d(m.details_nonce),
            details_ciphertext=crypto.b64d(m.details_ciphertext),
            expires_at=m.expires_at,
            secretariat_phone=m.secretariat_phone,
            secretariat_email=m.secretariat_email,
            phone_hash=phone.phone_hash if phone else None,
            phone_hint=phone.phone_hint if phone else None,
            phone_enc=phone.phone_enc if phone else None,
            patient_refs=m.patient_refs,
            public_phone=m.public_contact.phone if m.public_contact else None,
            public_email=m.public_contact.email if m.public_contact else None,
            sandbox=m.sandbox,
            trace_context=tracing.current_context_headers(),  # the letter's trace, for its download
        )
        log.info("sealed message stored", message_id=str(m.message_id))

    async def on_message_revoked(self, conn: asyncpg.Connection, d: Delivery[MessageRevokedV1]) -> None:
        await store.revoke_message(conn, d.data.message_id, d.data.reason)
        log.info("message revoked", message_id=str(d.data.message_id), reason=d.data.reason)

    async def on_postal_progress(self, conn: asyncpg.Connection, d: Delivery[PostalProgressV1]) -> None:
        """Paper asked (by whom, when) or reported by the print room: the pages stop offering paper."""
        p = d.data
        await store.record_paper(conn, p.message_id, p.step, p.reason, p.at)
        log.info("paper step recorded", message_id=str(p.message_id), step=p.step)

    async def on_sms_sent(self, conn: asyncpg.Connection, d: Delivery[SmsSentV1]) -> None:
        await store.mark_sms_sent(conn, d.data.challenge_id, d.data.sent_at)

    async def on_sms_failed(self, conn: asyncpg.Connection, d: Delivery[SmsFailedV1]) -> None:
        await store.mark_sms_failed(conn, d.data.challenge_id)
        await store.audit(conn, d.data.message_id, "code-sms", "failed", None, d.data.provider_code)

    async def on_staff_action(self, conn: asyncpg.Connection, d: Delivery[StaffActionRequestedV1]) -> None:
        """Unlock, reset the binding or correct the number on file, as the department's secretariat asked
        (the issuer does the others). Each is harmless to repeat; the inbox keeps a replay from reporting twice."""
        a = d.data
        if a.action not in PORTAL_ACTIONS:
            return
        message = await store.get_message(conn, a.message_id, lock=True)
        if message is None:
            raise Rejected(rejections.UNKNOWN_MESSAGE, f"no message {a.message_id}")
        hint = None
        if a.action == "unlock":
            await store.unlock_message(conn, a.message_id)
            change = "unlocked"
        elif a.action == "reset-binding":
            # Under every ref of the patient: a binding proven before a PATIENT_REF_KEY rotation counts too.
            await store.end_binding(conn, await store.patient_refs(conn, message))
            change = "binding-reset"
        else:
            if a.for_portal is None:
                raise Rejected(rejections.NO_NUMBER, "correct-mobile carries no number")
            mobile = crypto.open_field(
                self.settings.staff_field_key,
                a.for_portal,
                context=crypto.field_context(a.EVENT_TYPE, a.action_id, "portal"),
            )["mobile"]
            refs = await store.patient_refs(conn, message)
            for ref in await store.open_refs(conn, refs):  # each ref's messages seal the number in their context
                stored = self.phones.stored(mobile, ref)
                await store.set_number_on_file(
                    conn, ref, phone_hash=stored.phone_hash, phone_hint=stored.phone_hint, phone_enc=stored.phone_enc
                )
            # The number the patient verified before is not the hospital's any more (docs/architecture.md#security).
            await store.end_binding(conn, refs)
            hint, change = phone_hint(mobile), "mobile-corrected"
        await store.audit(conn, a.message_id, f"staff-{a.action}", "done", None, f"action {a.action_id}")
        await add_event(
            conn,
            envelope(
                AccessChangedV1(
                    message_id=a.message_id,
                    convocation_id=a.convocation_id,
                    change=change,
                    at=datetime.now(timezone.utc),
                    phone_hint=hint,
                    action_id=a.action_id,
                ),
                producer="access-portal",
                correlation_id=a.convocation_id,
                causation_id=d.envelope.event_id,
            ),
        )
        log.info("staff action done", action=a.action)
