"""Secretariat event handlers: project each convocation's timeline from the events of the chain."""

from __future__ import annotations

import asyncpg

from secretariat import store
from secretariat.patients import Patients
from shared.consumer import Delivery
from shared.contracts import (
    AccessChangedV1,
    ConvocationReissueRequestedV1,
    ConvocationStatusV1,
    OtpRequestedV1,
    PatientErasedV1,
    PatientErasureConfirmedV1,
    SmsFailedV1,
    SmsSentV1,
)

# Only reasons from a closed list reach the timeline: free text (SMTP replies) may name the patient.
SAFE_DETAIL = {"postal", "postal-fallback", "returned", "postal-cancelled"}


class SecretariatHandlers:
    """The read model's handlers, one per event, as every service writes them (``on_<event>(conn, delivery)``
    in one class); the patients' details the issuer seals for the secretariat are opened and kept sealed at
    rest through ``patients``."""

    def __init__(self, patients: Patients) -> None:
        self.patients = patients

    async def on_status(self, conn: asyncpg.Connection, d: Delivery[ConvocationStatusV1]) -> None:
        s = d.data
        if s.status == "erased":
            # The last status of a convocation whose patient asked to be erased: it comes after every other
            # status of it (one queue, in order), so nothing of it is recorded again once it is gone.
            await store.erase(conn, [s.convocation_id], [])
            return
        await store.record_status(
            conn,
            s.convocation_id,
            event_id=d.envelope.event_id,
            status=s.status,
            at=s.at,
            message_id=s.message_id,
            patient_ref=s.patient_ref,
            department=s.department,
            appointment_at=s.appointment_at,
            delivery=s.delivery,
            detail=s.detail if s.status in SAFE_DETAIL else None,
            action_id=s.action_id,
        )
        if s.action_id:
            await store.action_done(conn, s.action_id, s.at)
        if s.for_secretariat and s.message_id:
            details = self.patients.opened(s.for_secretariat, s.message_id)
            if details is not None:
                await store.set_patient(
                    conn,
                    s.convocation_id,
                    **self.patients.stored(s.convocation_id, details),
                    department_name=details.get("department_name"),
                    phone_hint=details.get("phone_hint"),
                )

    async def on_code_requested(self, conn: asyncpg.Connection, d: Delivery[OtpRequestedV1]) -> None:
        o = d.data
        await store.set_phone_hint(conn, o.convocation_id, o.phone_hint)
        await store.add_timeline(
            conn, o.convocation_id, d.envelope.event_id, d.envelope.occurred_at, "code-requested", o.phone_hint
        )

    async def on_code_sent(self, conn: asyncpg.Connection, d: Delivery[SmsSentV1]) -> None:
        await store.add_timeline(conn, d.data.convocation_id, d.envelope.event_id, d.data.sent_at, "code-sent")

    async def on_code_failed(self, conn: asyncpg.Connection, d: Delivery[SmsFailedV1]) -> None:
        await store.add_timeline(
            conn, d.data.convocation_id, d.envelope.event_id, d.data.failed_at, "code-failed", d.data.provider_code
        )

    async def on_access_changed(self, conn: asyncpg.Connection, d: Delivery[AccessChangedV1]) -> None:
        a = d.data
        if a.change == "locked":
            await store.set_lock(conn, a.convocation_id, a.locked_until)
            await store.first_lock(conn, a.convocation_id, a.at)
        elif a.change == "unlocked":
            await store.set_lock(conn, a.convocation_id, None)
        elif a.change == "mobile-corrected":
            await store.set_phone_hint(conn, a.convocation_id, a.phone_hint)
        if a.change == "verified" and a.bound is not None:
            await store.set_binding(conn, a.convocation_id, a.bound, a.at)
        elif a.change in ("binding-reset", "mobile-corrected", "binding-ended"):
            await store.set_binding(conn, a.convocation_id, False, a.at)
        detail = a.locked_until.isoformat() if a.locked_until else a.phone_hint
        await store.add_timeline(conn, a.convocation_id, d.envelope.event_id, a.at, a.change, detail, a.action_id)
        if a.action_id:
            await store.action_done(conn, a.action_id, a.at)

    async def on_reissue_requested(self, conn: asyncpg.Connection, d: Delivery[ConvocationReissueRequestedV1]) -> None:
        """The issuer asked the hospital system for the letter again: waiting for it (the action is done when
        the new letter is e-mailed, see on_status)."""
        r = d.data
        await store.ensure_convocation(conn, r.convocation_id)
        await store.add_timeline(
            conn, r.convocation_id, d.envelope.event_id, r.requested_at, "reissue-requested", r.reason, r.action_id
        )

    async def on_patient_erased(self, conn: asyncpg.Connection, d: Delivery[PatientErasedV1]) -> None:
        """The issuer erased the patient's convocations: the read model of them goes here too, and the erasure
        records the secretariat's own confirmation."""
        e = d.data
        rows = await store.erase(conn, e.convocation_ids, e.patient_refs)
        await store.confirm_erasure(conn, e.erasure_id, "secretariat", len(e.convocation_ids), rows, e.at)

    async def on_erasure_confirmed(self, conn: asyncpg.Connection, d: Delivery[PatientErasureConfirmedV1]) -> None:
        c = d.data
        await store.confirm_erasure(conn, c.erasure_id, c.service, c.convocations, c.rows, c.at)
