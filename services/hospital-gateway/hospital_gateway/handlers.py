"""Statuses and requests back to the hospital systems: convocation.status and convocation.reissue.requested,
for the letters the gateway made, delivered in each system's format with delayed retries. A delivery that
fails for good is dead-lettered with its reason (through the outbox, in the handler's transaction: the
event's other effect, confirming the accepted message, is kept). The sweeper dead-letters accepted letters
the issuer never took."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from hospital_gateway import outbound, store
from hospital_gateway.metrics import DEAD_LETTERED, DELIVERIES, WAITING
from hospital_gateway.outbound import DeliveryFailed, Notice
from hospital_gateway.settings import GatewaySettings
from shared import erasure, topology
from shared.consumer import Delivery
from shared.contracts import ConvocationReissueRequestedV1, ConvocationStatusV1
from shared.logs import get_logger
from shared.metrics import DEAD_LETTERED as EVENTS_DEAD_LETTERED
from shared.metrics import on_commit
from shared.outbox import add_event
from shared.retry import RetryPolicy, schedule_retry

SERVICE = topology.GATEWAY
log = get_logger(__name__)


class GatewayHandlers:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.retry = RetryPolicy.parse(settings.outbound_retry_delays)

    async def on_status(self, conn: asyncpg.Connection, d: Delivery[ConvocationStatusV1]) -> None:
        s = d.data
        row = await store.appointment(conn, s.convocation_id)
        if row is None:
            return  # not a letter of ours: a system that publishes its own events reads its own queue
        if d.envelope.causation_id is not None:
            await store.confirm(conn, d.envelope.causation_id)
        settled = await self._deliver(
            conn,
            d,
            row,
            Notice(
                "status",
                s.status,
                s.at,
                d.envelope.event_id,
                row["appointment_id"],
                row["sandbox"] or s.sandbox,
                s.detail,
            ),
        )
        if s.status == "erased" and settled:
            await self._forget(conn, d, s)

    async def _forget(self, conn: asyncpg.Connection, d: Delivery[ConvocationStatusV1], s: ConvocationStatusV1) -> None:
        """The patient's data was erased on request: once the hospital has the status (or will never take it), the
        gateway forgets the convocation too, and confirms (the status's action_id is the erasure's id)."""
        rows = await store.erase(conn, s.convocation_id)
        if s.action_id is not None:
            await add_event(
                conn,
                erasure.confirmation(SERVICE, s.action_id, convocations=1, rows=rows, causation_id=d.envelope.event_id),
            )

    async def on_reissue_requested(self, conn: asyncpg.Connection, d: Delivery[ConvocationReissueRequestedV1]) -> None:
        r = d.data
        row = await store.appointment(conn, r.convocation_id)
        if row is None:
            return
        await self._deliver(
            conn,
            d,
            row,
            Notice("request", r.reason, r.requested_at, r.action_id, row["appointment_id"], row["sandbox"]),
        )

    async def _deliver(self, conn: asyncpg.Connection, d: Delivery, row, notice: Notice) -> bool:
        """Send the notice; False when a retry was scheduled, True once it is settled (sent, refused for good and
        dead-lettered, or not one the system takes). A system always gets 'erased', whatever it chose."""
        system = next((s for s in self.settings.hospital_systems if s.id == row["system"]), None)
        out = system.outbound if system else None
        wanted = notice.kind != "status" or notice.code in (out.statuses if out else ()) or notice.code == "erased"
        if system is None or out is None or not wanted:
            return True  # the system takes no such notice (or is no longer configured)
        event_id = d.envelope.event_id
        prior = await store.delivery(conn, event_id)
        if prior is not None and prior["status"] != "retrying":
            return True  # delivered (or given up) already: a redelivery
        attempt = (prior["attempts"] if prior else 0) + 1
        kind = notice.code if notice.kind == "status" else "reissue"
        try:
            await outbound.deliver(system, notice)
        except DeliveryFailed as failure:
            delay = None if failure.permanent else self.retry.delay_for(attempt)
            if delay is not None:
                DELIVERIES.labels(system.id, out.format, "transient").inc()
                await store.save_delivery(
                    conn,
                    event_id=event_id,
                    convocation_id=row["convocation_id"],
                    system=system.id,
                    kind=kind,
                    status="retrying",
                    attempts=attempt,
                    last_error=failure.reason,
                )
                await schedule_retry(conn, d, exchange=self.settings.events_exchange, attempt=attempt, delay=delay)
                log.warning(
                    "hospital system not reached; retry scheduled",
                    system=system.id,
                    reason=failure.reason,
                    attempt=attempt,
                    delay_s=delay,
                )
                return False
            on_commit(DELIVERIES.labels(system.id, out.format, "failed").inc)
            await store.save_delivery(
                conn,
                event_id=event_id,
                convocation_id=row["convocation_id"],
                system=system.id,
                kind=kind,
                status="failed",
                attempts=attempt,
                last_error=failure.reason,
            )
            reason = "hospital-refused" if failure.permanent else "hospital-unreachable"
            await self._dead_letter(conn, d, reason, f"{system.id}: {failure.reason} after {attempt} attempt(s)")
            return True
        on_commit(DELIVERIES.labels(system.id, out.format, "sent").inc)
        await store.save_delivery(
            conn,
            event_id=event_id,
            convocation_id=row["convocation_id"],
            system=system.id,
            kind=kind,
            status="sent",
            attempts=attempt,
        )
        log.info("sent to the hospital system", system=system.id, kind=kind, format=out.format, attempt=attempt)
        return True

    async def _dead_letter(self, conn: asyncpg.Connection, d: Delivery, reason: str, detail: str) -> None:
        """The event to its queue's DLQ with the reason in its headers, as the consumer parks invalid events
        (and replayable the same way), but through the outbox: in this transaction, with its other effects."""
        await add_event(
            conn,
            d.envelope,
            exchange=topology.dead_letter_exchange(self.settings.events_exchange).name,
            routing_key=d.queue,
            headers={
                "x-rejected-reason": reason,
                "x-rejected-detail": detail,
                "x-rejected-by": SERVICE,
                "x-rejected-at": datetime.now(timezone.utc).isoformat(),
                "x-original-routing-key": d.envelope.data.routing_key(),
            },
        )
        on_commit(EVENTS_DEAD_LETTERED.labels(SERVICE, d.queue, reason).inc)
        log.warning("event dead-lettered", queue=d.queue, reason=reason, detail=detail)

    async def sweep(self, conn: asyncpg.Connection, now: datetime) -> None:
        """Accepted letters the issuer has not sealed in time go to the dead letters (the alert fires); the
        waiting count is exported."""
        late = await store.unconfirmed(conn, now - timedelta(seconds=self.settings.confirm_within_seconds))
        for row in late:
            detail = (
                f"accepted at {row['received_at'].isoformat()} as event {row['event_id']}, not sealed within"
                f" {int(self.settings.confirm_within_seconds)} s: look for that event id in the issuer's"
                " dead-letter queue (convocations-admin dlq list)"
            )
            await store.dead_letter(conn, row, "not-sealed", detail)
            on_commit(DEAD_LETTERED.labels(row["system"], "not-sealed").inc)
            log.error(
                "accepted letter not sealed in time: dead-lettered",
                system=row["system"],
                convocation_id=str(row["convocation_id"]),
                event_id=str(row["event_id"]),
            )
        waiting, _ = await store.waiting(conn)
        WAITING.set(waiting)
