"""Issuer event handlers: decode the typed event, one transaction, outbox events; nothing else."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from issuer import domain, store
from issuer.settings import IssuerSettings
from shared.consumer import Delivery, Rejected
from shared.contracts import (
    ConvocationCreatedV1,
    ConvocationStatusV1,
    DocumentReleasedV1,
    EmailSentV1,
    envelope,
)
from shared.logs import get_logger
from shared.metrics import CHAIN_LATENCY
from shared.outbox import add_event

PRODUCER = "issuer"
log = get_logger(__name__)


class IssuerHandlers:
    def __init__(self, settings: IssuerSettings) -> None:
        self.settings = settings
        self.keys = domain.SealingKeys(
            seal_keys=settings.seal_keys,
            patient_ref_key=settings.patient_ref_key,
            mailer_field_key=settings.mailer_field_key,
            portal_field_key=settings.portal_field_key,
        )

    async def on_convocation_created(self, conn: asyncpg.Connection, d: Delivery[ConvocationCreatedV1]) -> None:
        c, now = d.data, datetime.now(timezone.utc)
        problem = domain.appointment_problem(c, now)
        if problem:
            raise Rejected("appointment-in-past", problem)
        if await store.get_convocation(conn, c.convocation_id):
            log.warning("convocation already sealed; ignoring the repeated creation")
            return
        pdf = c.document_bytes() or self._render(c, now)
        expires_at = domain.expiry(c.appointment.starts_at, self.settings.message_ttl_days)
        sealed = domain.seal_convocation(c, pdf, self.keys, expires_at=expires_at, send_email=True)
        await store.insert_convocation(
            conn, convocation_id=c.convocation_id, message_id=sealed.message_id, patient_ref=sealed.patient_ref,
            delivery=c.delivery, language=c.patient.language, appointment_at=c.appointment.starts_at,
            expires_at=expires_at, created_at=d.envelope.occurred_at, sealed_at=now,
        )
        await store.record_history(conn, c.convocation_id, "sealed", now)
        await self._emit(conn, d, sealed)
        await self._emit_status(conn, d, "sealed", now)
        CHAIN_LATENCY.labels("sealed").observe(max(0.0, (now - d.envelope.occurred_at).total_seconds()))
        log.info("convocation sealed", message_id=str(sealed.message_id), key_id=sealed.key_id)

    async def on_email_sent(self, conn: asyncpg.Connection, d: Delivery[EmailSentV1]) -> None:
        await self._progress(conn, d, "e-mailed", d.data.accepted_at)

    async def on_document_released(self, conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        await self._progress(conn, d, "downloaded", d.data.released_at)

    async def _progress(self, conn: asyncpg.Connection, d: Delivery, status: str, at: datetime) -> None:
        row = await store.get_convocation(conn, d.data.convocation_id)
        if row is None:
            raise Rejected("unknown-convocation", f"no convocation {d.data.convocation_id}")
        if not domain.advances(row["status"], status):
            await store.stamp(conn, row["id"], status, at)
            return
        await store.set_status(conn, row["id"], status, at)
        await self._emit_status(conn, d, status, at)
        CHAIN_LATENCY.labels(status).observe(max(0.0, (at - row["created_at"]).total_seconds()))
        log.info("status changed", status=status)

    async def _emit(self, conn: asyncpg.Connection, d: Delivery, payload) -> None:
        await add_event(conn, envelope(payload, producer=PRODUCER, correlation_id=d.envelope.correlation_id,
                                       causation_id=d.envelope.event_id))

    async def _emit_status(self, conn: asyncpg.Connection, d: Delivery, status: str, at: datetime) -> None:
        await self._emit(conn, d, ConvocationStatusV1(convocation_id=d.data.convocation_id, status=status, at=at))

    def _render(self, c: ConvocationCreatedV1, now: datetime) -> bytes:
        from issuer.render import render_convocation_pdf

        return render_convocation_pdf(c, hospital_name=self.settings.hospital_name, now=now)
