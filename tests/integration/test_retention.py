"""Retention on the real Postgres: each service's sweep (shared/retention.py, its rules beside its store) deletes
every row past its retention period, with the rows hanging off it, and leaves every younger one, in every
table of the service's schema that holds personal or business data (docs/retention.md)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from secretariat import store as secretariat_store
from secretariat.app import MIGRATIONS as SECRETARIAT

from access_portal import store as portal_store
from access_portal.app import MIGRATIONS as PORTAL
from hospital_gateway import store as gateway_store
from hospital_gateway.app import MIGRATIONS as GATEWAY
from issuer import store as issuer_store
from issuer.app import MIGRATIONS as ISSUER
from mailer import store as mailer_store
from mailer.app import MIGRATIONS as MAILER
from shared import retention
from shared.db import migrate
from sms_gateway import store as sms_store
from sms_gateway.app import MIGRATIONS as SMS
from tests.integration.conftest import throwaway_schema

DAYS = 30  # every configurable retention of the test; the portal's early revocations keep their 400 days
OLD, YOUNG = 1000, 10  # days before now: past every retention, within every one

Populate = Callable[[asyncpg.Connection, uuid.UUID, datetime], Awaitable[None]]


async def issuer_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into convocation(id, message_id, patient_ref, delivery, language, status, appointment_at,"
        " expires_at, created_at) values ($1, $1, 'ref', 'email', 'fr', 'sealed', $2, $2, $2)",
        f,
        at,
    )
    await conn.execute("insert into status_history(convocation_id, status, at) values ($1, 'sealed', $2)", f, at)
    await conn.execute(
        "insert into reissue_request(action_id, convocation_id, reason, requested_at) values ($1, $1, 'resend', $2)",
        f,
        at,
    )


async def mailer_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into email(message_id, convocation_id, smtp_message_id, status, created_at, expires_at)"
        " values ($1, $1, 'm', 'sent', $2, $2)",
        f,
        at,
    )
    await conn.execute("insert into notice(message_id, kind, outcome, at) values ($1, 'reminder', 'sent', $2)", f, at)
    await conn.execute(
        "insert into bounce_token(token_hash, message_id, kind, created_at) values ($1, $2, 'link', $3)",
        f.bytes,
        f,
        at,
    )
    orphan = uuid.uuid5(f, "notice without its e-mail")
    await conn.execute(
        "insert into notice(message_id, kind, outcome, at) values ($1, 'withdrawn', 'skipped', $2)", orphan, at
    )


async def sms_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into sms(challenge_id, message_id, convocation_id, phone_hash, status, created_at)"
        " values ($1, $1, $1, 'h', 'sent', $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into sms_attempt(challenge_id, attempt, provider, outcome, detail, at)"
        " values ($1, 1, 'twilio', 'accepted', $1::uuid::text, $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into sms_report(provider, provider_message_id, provider_status, outcome, received_at)"
        " values ('twilio', $1::uuid::text, 'delivered', 'applied', $2)",
        f,
        at,
    )


async def portal_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into message(message_id, convocation_id, patient_ref, language, key_id, expires_at,"
        " secretariat_phone, created_at) values ($1, $1, $1::uuid::text, 'fr', 'k1', $2, '+41 22', $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into challenge(id, message_id, code_hash, phone_hash, phone_hint, expires_at, created_at)"
        " values ($1, $1, 'c', 'h', 'hint', $2, $2)",
        f,
        at,
    )
    await conn.execute("insert into session(token_hash, message_id, created_at) values ($1::uuid::text, $1, $2)", f, at)
    await conn.execute("insert into release(message_id, kind, released_at) values ($1, 'pdf', $2)", f, at)
    await conn.execute("insert into paper(message_id, updated_at) values ($1, $2)", f, at)
    await conn.execute(
        "insert into paper(message_id, updated_at) values ($1, $2)", uuid.uuid5(f, "paper before its message"), at
    )
    await conn.execute(
        "insert into phone_binding(patient_ref, phone_hash, phone_hint, phone_enc, source, bound_at)"
        " values ($1::uuid::text, 'h', 'hint', 'enc', 'hospital', $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into revoked_early(message_id, state, reason, revoked_at) values ($1, 'revoked', 'cancelled', $2)",
        uuid.uuid5(f, "revoked before it came"),
        at,
    )


async def secretariat_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into convocation(id, message_id, patient_ref, appointment_at) values ($1, $1, $1::uuid::text, $2)",
        f,
        at,
    )
    await conn.execute("insert into timeline(convocation_id, event_id, at, kind) values ($1, $1, $2, 'sealed')", f, at)
    await conn.execute(
        "insert into action(id, convocation_id, message_id, kind, staff_subject, requested_at)"
        " values ($1, $1, $1, 'post', 'alice', $2)",
        f,
        at,
    )
    before = uuid.uuid5(f, "a line before its convocation row")
    await conn.execute(
        "insert into timeline(convocation_id, event_id, at, kind) values ($1, $1, $2, 'code-sent')", before, at
    )
    await conn.execute("insert into patient_binding(patient_ref, bound, at) values ($1::uuid::text, true, $2)", f, at)
    await conn.execute("insert into erasure(id, requested_at) values ($1, $2)", f, at)
    await conn.execute(
        "insert into erasure_confirmation(erasure_id, service, convocations, rows, confirmed_at)"
        " values ($1, 'mailer', 1, 3, $2)",
        f,
        at,
    )


async def gateway_rows(conn: asyncpg.Connection, f: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "insert into received(system, control_id, via, action, convocation_id, event_id, received_at)"
        " values ('his', $1::uuid::text, 'hl7', 'created', $1, $1, $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into appointment(convocation_id, system, appointment_id, sandbox, appointment_at, updated_at)"
        " values ($1, 'his', $1::uuid::text, false, $2, $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into dead_letter(system, control_id, convocation_id, event_id, reason, detail, at)"
        " values ('his', 'c', $1, $1, 'not-sealed', 'late', $2)",
        f,
        at,
    )
    await conn.execute(
        "insert into delivery(event_id, convocation_id, system, kind, status, attempts, updated_at)"
        " values ($1, $1, 'his', 'sealed', 'sent', 1, $2)",
        f,
        at,
    )


SERVICES: dict[str, tuple[Path, list[retention.RetentionRule], Populate]] = {
    "issuer": (ISSUER, issuer_store.retention_rules(DAYS), issuer_rows),
    "mailer": (MAILER, mailer_store.retention_rules(DAYS), mailer_rows),
    "sms-gateway": (SMS, sms_store.retention_rules(DAYS), sms_rows),
    "access-portal": (PORTAL, portal_store.retention_rules(DAYS, DAYS, 365), portal_rows),
    "secretariat": (SECRETARIAT, secretariat_store.retention_rules(DAYS, DAYS, 400), secretariat_rows),
    "hospital-gateway": (GATEWAY, gateway_store.retention_rules(DAYS), gateway_rows),
}
# Tables that hold no personal or business data, or whose rows leave otherwise.
NOT_SWEPT = {"schema_migrations", "outbox"}  # the outbox: each row leaves once published (shared/outbox.py)


async def where_found(conn: asyncpg.Connection, schema: str, family: uuid.UUID) -> set[str]:
    """The tables of ``schema`` with a row that names ``family`` (or an id made from it) anywhere."""
    ids = [str(family), *(str(uuid.uuid5(family, n)) for n in ORPHANS), family.bytes.hex()]
    found = set()
    for table in await conn.fetch("select tablename from pg_tables where schemaname = $1", schema):
        name = table["tablename"]
        rows = await conn.fetch(f"select t::text as line from {schema}.{name} t")
        if any(i in r["line"] for r in rows for i in ids):
            found.add(name)
    return found


ORPHANS = (
    "notice without its e-mail",
    "paper before its message",
    "revoked before it came",
    "a line before its convocation row",
)


@contextlib.asynccontextmanager
async def carried_over_first(pool: asyncpg.Pool):
    """The secretariat's migration 0002 carries the rows of ``secretariat.staff_audit`` over to the audit's own
    schema (deploy/postgres/init.sql): in this throw-away schema there are none, so an empty table stands in."""
    async with pool.acquire() as conn:
        await conn.execute(
            "create table secretariat.staff_audit (id bigint, at timestamptz, subject text, name text, via text, action text,"
            " convocation_id uuid, department text, reason text, outcome text, detail text);"
            " grant select on secretariat.staff_audit to secretariat_audit"
        )
    try:
        yield
    finally:
        async with pool.acquire() as conn:
            await conn.execute("drop table secretariat.staff_audit")


def swept_count(service: str, table: str) -> float:
    return (
        REGISTRY.get_sample_value("convocations_retention_swept_rows_total", {"service": service, "table": table})
        or 0.0
    )


@pytest.mark.parametrize("service", list(SERVICES))
async def test_the_sweep_deletes_every_row_past_its_retention_and_keeps_every_younger_one(test_database, service):
    migrations, rules, populate = SERVICES[service]
    now = datetime.now(timezone.utc)
    old, young = uuid.uuid4(), uuid.uuid4()
    async with throwaway_schema(test_database, "retention_itest") as (schema, _, pool):
        async with carried_over_first(pool) if service == "secretariat" else contextlib.nullcontext():
            await migrate(pool, schema, migrations)
        async with pool.acquire() as conn:
            for family, days in ((old, OLD), (young, YOUNG)):
                await populate(conn, family, now - timedelta(days=days))
                await conn.execute(
                    "insert into inbox(event_id, routing_key, received_at) values ($1, 'x.v1', $2)",
                    family,
                    now - timedelta(days=days),
                )
            tables = {
                r["tablename"]
                for r in await conn.fetch("select tablename from pg_tables where schemaname = $1", schema)
            }
            populated = await where_found(conn, schema, old)
            # Every table of the schema holds a row of each family: none is left out of the test.
            assert populated == tables - NOT_SWEPT
            before = {t: swept_count(service, t) for t in populated}
        # The audits are pruned through their own schemas' functions (tests/e2e/test_portal_audit.py,
        # test_secretariat_audit.py); the inbox's rule is every service's.
        table_rules = [r for r in rules if isinstance(r, retention.Rule)] + [retention.inbox_rule(400)]
        sweeper = retention.Sweeper(service, lambda: pool, table_rules, batch=1)  # a batch per row: the loop runs
        swept = await sweeper.sweep_once()
        async with pool.acquire() as conn:
            assert await where_found(conn, schema, old) == set(), "a row past its retention was kept"
            assert await where_found(conn, schema, young) == populated, "a row within its retention was deleted"
            assert await sweeper.sweep_once() == {}
    # What the operator sees: the rows deleted, by table.
    assert set(swept) == populated
    for table in populated:
        assert swept_count(service, table) - before[table] == swept[table] >= 1
