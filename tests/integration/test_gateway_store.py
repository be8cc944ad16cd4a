"""Issue 22, the hospital gateway on a real PostgreSQL (its migrations, in a throw-away schema): an accepted
message and its event are stored together, a repeated message id makes nothing new even when both arrive at
once, a cancellation of an unknown appointment stores nothing, statuses confirm accepted letters and the
sweeper dead-letters the others, and a status the hospital refuses is dead-lettered through the outbox."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from hospital_gateway import handlers as gateway_handlers
from hospital_gateway import hl7v2
from hospital_gateway.app import MIGRATIONS
from hospital_gateway.booking import Problem, convocation_id
from hospital_gateway.handlers import GatewayHandlers
from hospital_gateway.intake import Intake
from hospital_gateway.outbound import DeliveryFailed
from hospital_gateway.settings import GatewaySettings
from shared.consumer import Delivery
from shared.contracts import ConvocationStatusV1, envelope
from shared.db import migrate
from tests.integration.conftest import throwaway_schema
from tests.unit.test_hospital_gateway import wire

SYSTEMS = json.loads(json.dumps(GatewaySettings().model_dump(mode="json")["hospital_systems"]))
SYSTEMS[0]["outbound"] = {"format": "fhir", "url": "http://127.0.0.1:9/fhir"}
SETTINGS = GatewaySettings(hospital_systems=SYSTEMS, outbound_retry_delays="1,2", confirm_within_seconds=60)
SYSTEM = SETTINGS.system("dev-his")


@pytest.fixture(scope="module")
async def pool(test_database):
    async with throwaway_schema(test_database, "gateway_itest", max_size=6) as (name, _, pool):
        await migrate(pool, name, MIGRATIONS)
        yield pool


def s12(appointment: str) -> hl7v2.Incoming:
    return hl7v2.decode(wire("siu-s12.hl7").replace(b"APT-4711", appointment.encode()), SYSTEM)


def booking(appointment: str, action: str = "book"):
    return hl7v2.booking(s12(appointment), SYSTEM, action)


async def test_an_accepted_message_stores_its_id_its_appointment_and_its_event_in_one_transaction(pool):
    apt = f"APT-{uuid.uuid4().hex[:8]}"
    [done] = await Intake(lambda: pool).submit(SYSTEM, [(booking(apt), f"C-{apt}")], "hl7")
    assert done.convocation_id == convocation_id("dev-his", apt) and not done.duplicate
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select * from received where control_id = $1", f"C-{apt}")
        body = json.loads(await conn.fetchval("select body from outbox where event_id = $1", row["event_id"]))
        mapped = await conn.fetchrow("select * from appointment where convocation_id = $1", done.convocation_id)
    assert (row["via"], row["action"], body["producer"], body["type"]) == (
        "hl7",
        "created",
        "hospital-gateway",
        "convocation.created",
    )
    assert (mapped["appointment_id"], mapped["sandbox"]) == (apt, False)


async def test_the_same_control_id_twice_at_once_makes_one_event(pool):
    apt = f"APT-{uuid.uuid4().hex[:8]}"
    intake = Intake(lambda: pool)
    results = await asyncio.gather(*(intake.submit(SYSTEM, [(booking(apt), f"C-{apt}")], "hl7") for _ in range(4)))
    assert sorted(r[0].duplicate for r in results) == [False, True, True, True]
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("select count(*) from outbox where correlation_id = $1", convocation_id("dev-his", apt))
            == 1
        )


async def test_cancelling_an_unknown_appointment_is_refused_and_stores_nothing(pool):
    apt = f"APT-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Problem) as refused:
        await Intake(lambda: pool).submit(SYSTEM, [(booking(apt, "cancel"), f"X-{apt}")], "hl7")
    assert (refused.value.where, refused.value.code) == ("SCH-1", "no-such-key")
    async with pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from received where control_id = $1", f"X-{apt}") == 0


async def test_a_sealed_status_confirms_and_the_sweeper_dead_letters_what_was_never_sealed(pool, monkeypatch):
    intake, handlers = Intake(lambda: pool), GatewayHandlers(SETTINGS)
    sealed, lost = (f"APT-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for apt in (sealed, lost):
        await intake.submit(SYSTEM, [(booking(apt), f"C-{apt}")], "hl7")
    async with pool.acquire() as conn, conn.transaction():
        cause = await conn.fetchval("select event_id from received where control_id = $1", f"C-{sealed}")
        status = envelope(
            ConvocationStatusV1(
                convocation_id=convocation_id("dev-his", sealed), status="sealed", at=datetime.now(timezone.utc)
            ),
            producer="issuer",
            correlation_id=convocation_id("dev-his", sealed),
            causation_id=cause,
        )
        statuses = {"sealed": None}
        monkeypatch.setattr(gateway_handlers.outbound, "deliver", _record_into(statuses))
        await handlers.on_status(conn, Delivery(status, 0, "itest.hospital-gateway.convocation.status.v1"))
    assert statuses["sealed"] == sealed
    async with pool.acquire() as conn, conn.transaction():
        await handlers.sweep(conn, datetime.now(timezone.utc) + timedelta(minutes=2))
        letters = {r["control_id"]: r for r in await conn.fetch("select * from dead_letter")}
    assert f"C-{lost}" in letters and f"C-{sealed}" not in letters
    assert letters[f"C-{lost}"]["reason"] == "not-sealed"


def _record_into(seen: dict):
    async def deliver(system, notice):
        seen[notice.code] = notice.appointment_id

    return deliver


async def test_a_status_the_hospital_refuses_is_dead_lettered_through_the_outbox_with_its_reason(pool, monkeypatch):
    intake, handlers = Intake(lambda: pool), GatewayHandlers(SETTINGS)
    apt = f"APT-{uuid.uuid4().hex[:8]}"
    await intake.submit(SYSTEM, [(booking(apt), f"C-{apt}")], "hl7")
    cid = convocation_id("dev-his", apt)

    async def refuse(system, notice):
        raise DeliveryFailed(True, "HTTP 400")

    monkeypatch.setattr(gateway_handlers.outbound, "deliver", refuse)
    status = envelope(
        ConvocationStatusV1(convocation_id=cid, status="e-mailed", at=datetime.now(timezone.utc)),
        producer="issuer",
        correlation_id=cid,
    )
    queue = "itest.hospital-gateway.convocation.status.v1"
    async with pool.acquire() as conn, conn.transaction():
        await handlers.on_status(conn, Delivery(status, 0, queue))
    async with pool.acquire() as conn:
        parked = await conn.fetchrow(
            "select exchange, routing_key, headers from outbox where event_id = $1", status.event_id
        )
        delivery = await conn.fetchrow("select status, last_error from delivery where event_id = $1", status.event_id)
    assert (parked["exchange"], parked["routing_key"]) == ("convocations.dlx", queue)
    assert parked["headers"]["x-rejected-reason"] == "hospital-refused"
    assert tuple(delivery) == ("failed", "HTTP 400")
