"""Accepting one appointment, whatever path it came by (HL7 v2, FHIR, CSV): in one transaction, the message id
(a repeat is a duplicate), the appointment, and the event in the outbox. Only then is the message
acknowledged: nothing acknowledged can be lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from hospital_gateway import store
from hospital_gateway.booking import Booking, Problem, cancelled_event, convocation_id, created_event
from hospital_gateway.metrics import MESSAGE_SECONDS, MESSAGES
from hospital_gateway.settings import HospitalSystem
from shared import topology
from shared.contracts import ConvocationCancelledV1, ConvocationCreatedV1, envelope
from shared.logs import get_logger
from shared.metrics import counted_after_commit, on_commit
from shared.outbox import add_events

PRODUCER = topology.GATEWAY
log = get_logger(__name__)


class Unavailable(Exception):
    """The database did not answer: nothing was stored, the sender must send the message again."""


@dataclass(frozen=True)
class Accepted:
    convocation_id: uuid.UUID
    duplicate: bool  # accepted before under the same message id: nothing new was done
    already_cancelled: bool = False


class Intake:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def submit(
        self, system: HospitalSystem, bookings: list[tuple[Booking, str | None]], via: str
    ) -> list[Accepted]:
        """Accept every booking (with its message id, if any) in one transaction, or none: a Problem rolls
        back all of them and names the field at fault."""
        try:
            with counted_after_commit():
                async with self._pool().acquire() as conn, conn.transaction():
                    done = [await self.accept(conn, system, b, control_id=c, via=via) for b, c in bookings]
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
        ) as exc:
            log.warning("database unavailable; message not accepted", system=system.id, error=type(exc).__name__)
            raise Unavailable() from None
        return done

    async def accept(
        self, conn: asyncpg.Connection, system: HospitalSystem, b: Booking, *, control_id: str | None, via: str
    ) -> Accepted:
        cid = convocation_id(system.id, b.appointment_id)
        event: ConvocationCreatedV1 | ConvocationCancelledV1
        if b.action == "book":
            event = created_event(system, b, datetime.now(timezone.utc))
        else:
            event = cancelled_event(system, b)
        env = envelope(event, producer=PRODUCER, correlation_id=cid)
        action = "created" if b.action == "book" else "cancelled"
        if (
            control_id is not None
            and await store.claim_message(
                conn,
                system=system.id,
                control_id=control_id[:200],
                via=via,
                action=action,
                convocation_id=cid,
                event_id=env.event_id,
            )
            is None
        ):
            log.info("repeated message: accepted before", system=system.id, via=via)
            return Accepted(cid, duplicate=True)
        if b.action == "cancel":
            before = await store.cancel_appointment(conn, cid)
            if before is None:
                raise Problem(b.source(("convocation_id",)), "no-such-key", "no letter was sent for this appointment")
            if before == "cancelled":
                return Accepted(cid, duplicate=False, already_cancelled=True)
        else:
            assert isinstance(event, ConvocationCreatedV1)
            await store.record_appointment(
                conn,
                convocation_id=cid,
                system=system.id,
                appointment_id=b.appointment_id,
                sandbox=system.sandbox,
                appointment_at=event.appointment.starts_at,
            )
        await add_events(conn, [env])
        log.info(
            "appointment accepted",
            system=system.id,
            via=via,
            action=action,
            convocation_id=str(cid),
            sandbox=system.sandbox,
        )
        return Accepted(cid, duplicate=False)


def count(system: str, via: str, outcome: str, started: float | None = None, n: int = 1) -> None:
    MESSAGES.labels(system, via, outcome).inc(n)
    if started is not None:
        MESSAGE_SECONDS.labels(via).observe(time.perf_counter() - started)


def count_after_commit(system: str, via: str, outcome: str) -> None:
    on_commit(lambda: MESSAGES.labels(system, via, outcome).inc())
