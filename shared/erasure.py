"""Erasure on request: what a service deletes about one patient (docs/retention.md#erasure-on-request).

Each service lists, beside its store, the rows that are about a patient (``Erase``: a table and the SQL
condition that picks them out from the patient's convocation ids, ``$1``, and patient refs, ``$2``);
``erase`` deletes them all in one statement, with the service's outbox rows about those convocations
(events not yet published, delayed retry copies), and ``confirmation`` is the event that says so. The
rows leave the database; what a backup still holds of them is sealed (docs/architecture.md#security).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from shared.consumer import Delivery
from shared.contracts import Envelope, PatientErasedV1, PatientErasureConfirmedV1, envelope
from shared.logs import get_logger
from shared.outbox import add_event

log = get_logger(__name__)


@dataclass(frozen=True)
class Erase:
    """The rows of ``table`` for which ``where`` holds: ``$1`` is the patient's convocation ids (uuid[]),
    ``$2`` their patient refs (text[])."""

    table: str
    where: str


OUTBOX = Erase("outbox", "correlation_id = any($1)")


async def erase(
    conn: asyncpg.Connection, steps: Sequence[Erase], convocation_ids: Sequence[uuid.UUID], patient_refs: Sequence[str]
) -> int:
    """Delete every row ``steps`` pick out (in one statement: rows that reference others go with them) and
    the outbox's rows about these convocations; returns how many."""
    steps = [*steps, OUTBOX]
    ctes = ", ".join(f"e{n} as (delete from {s.table} where {s.where} returning 1)" for n, s in enumerate(steps))
    total = " + ".join(f"(select count(*) from e{n})" for n in range(len(steps)))
    # The casts name the parameters' types even where no condition uses one of them.
    rows = await conn.fetchval(
        f"with {ctes} select {total} + 0 * (cardinality($1::uuid[]) + cardinality($2::text[]))",
        list(convocation_ids),
        list(patient_refs),
    )
    return int(rows)


def confirmation(
    service: str, erasure_id: uuid.UUID, *, convocations: int, rows: int, causation_id: uuid.UUID | None
) -> Envelope:
    """The patient.erasure.confirmed a service publishes once its rows are gone (counts only)."""
    log.info("patient's rows erased", erasure_id=str(erasure_id), convocations=convocations, rows=rows)
    return envelope(
        PatientErasureConfirmedV1(
            erasure_id=erasure_id,
            service=service,
            convocations=convocations,
            rows=rows,
            at=datetime.now(timezone.utc),
        ),
        producer=service,
        correlation_id=erasure_id,
        causation_id=causation_id,
    )


async def confirm_erased(conn: asyncpg.Connection, service: str, d: Delivery[PatientErasedV1], rows: int) -> None:
    """A service that erased its rows on patient.erased says so, in the same transaction (its outbox)."""
    await add_event(
        conn,
        confirmation(
            service,
            d.data.erasure_id,
            convocations=len(d.data.convocation_ids),
            rows=rows,
            causation_id=d.envelope.event_id,
        ),
    )
