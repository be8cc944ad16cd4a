"""Issue #8: the system deployed as the production overlay ships it, proven on real components: a
convocation goes from the hospital's event to the patient's PDF and its status comes back upstream."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import asyncpg
import pytest

from devstack.stack import SERVICES
from shared import crypto
from shared.topology import UPSTREAM_PRODUCER
from tests.production.conftest import SMTP_USER, open_letter, patient_client, send_letter
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.production


async def _upstream_status(url: str, exchange: str, convocation_id: str, until: set[str]) -> list[str]:
    """The statuses the hospital's system reads on its queue for one convocation, once ``until`` are in."""
    seen: list[str] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{exchange}.upstream.convocation.status.v1", ensure=False)

        async def arrived() -> bool:
            while (message := await queue.get(no_ack=True, fail=False, timeout=PATIENCE)) is not None:
                event = json.loads(message.body)
                if event["correlation_id"] == convocation_id:
                    seen.append(event["data"]["status"])
            return until <= set(seen)

        await eventually(arrived, what=f"the statuses {sorted(until)} upstream", seen=lambda: f"upstream saw {seen}")
    return seen


async def test_a_convocation_goes_from_the_hospital_to_the_patients_pdf_and_its_status_back(
    production, broker, relay, sms_provider, pki, collector
):
    exchange = production.settings["issuer"]["EVENTS_EXCHANGE"]
    earlier = len(collector.spans())  # the other tests' spans
    letter = await send_letter(production, broker, relay, "Convocation production")

    # The mailer reached the hospital's relay over STARTTLS, checked its certificate against the
    # private CA and logged in.
    assert letter.mail["tls"] and letter.mail["login"] == SMTP_USER.encode(), letter.mail
    assert letter.link.startswith(production.settings["access-portal"]["PORTAL_BASE_URL"] + "/m/")

    cookies: list[str] = []
    pdf = await open_letter(patient_client(letter.link, pki, cookies), letter, sms_provider)
    assert pdf.status_code == 200 and pdf.content == letter.pdf, pdf.text[:300]

    # Over HTTPS, every cookie is host-only and Secure (the __Host- prefix makes browsers enforce it).
    assert cookies
    for header in cookies:
        name = header.split("=", 1)[0]
        attributes = [a.strip().lower() for a in header.split(";")[1:]]
        assert name.startswith("__Host-") and "secure" in attributes and "path=/" in attributes, header
        assert not any(a.startswith("domain=") for a in attributes), header

    statuses = await _upstream_status(
        broker.url(UPSTREAM_PRODUCER), exchange, letter.convocation_id, {"sealed", "e-mailed", "downloaded"}
    )
    assert statuses.index("sealed") < statuses.index("downloaded")

    # Each service on the letter's path exported its spans to the cluster's collector, with no patient data.
    def exported():
        return {s.service for s in collector.spans()[earlier:]} >= {"issuer", "mailer", "sms-gateway", "access-portal"}

    await eventually(exported, what="spans of every service at the collector", seen=lambda: collector.spans()[-5:])
    spans = repr(collector.spans())
    logs = production.logs()
    for secret in (
        letter.email,
        letter.e164,
        letter.national,
        crypto.secret_of_fragment(letter.link.split("#")[1]),
        letter.code,
    ):
        assert secret not in logs and secret not in spans


async def test_database_roles_use_scram_passwords_and_runtime_roles_cannot_change_their_schema(production, postgres):
    for service, settings in production.settings.items():
        dsn = settings["DATABASE_URL"]
        url = urlsplit(dsn)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(urlunsplit(url._replace(netloc=f"{url.username}:wrong@{url.hostname}:{url.port}")))
        conn = await asyncpg.connect(dsn)
        try:
            schema = SERVICES[service][2]
            async with conn.transaction():  # it reads and writes its tables
                await conn.execute(f"delete from {schema}.inbox where event_id = $1", uuid.uuid4())  # noqa: S608
                assert await conn.fetchval(f"select count(*) from {schema}.schema_migrations") > 0  # noqa: S608
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"create table {schema}.intruder (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"drop table {schema}.outbox")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(f"alter table {schema}.outbox add column intruder int")
        finally:
            await conn.close()
    admin = await postgres.admin(postgres.database)
    try:
        methods = await admin.fetch("select distinct auth_method from pg_hba_file_rules")
        assert [r["auth_method"] for r in methods] == ["scram-sha-256"]
        ssl_in_use = await admin.fetch(
            "select ssl from pg_stat_ssl join pg_stat_activity using (pid) where usename = any($1::text[])",
            [SERVICES[name][2] for name in production.settings],
        )
        assert ssl_in_use and all(r["ssl"] for r in ssl_in_use)
    finally:
        await admin.close()


async def test_each_broker_user_is_refused_outside_its_own_queues(production, broker):
    exchange = production.settings["issuer"]["EVENTS_EXCHANGE"]
    for service in production.settings:
        others = [s for s in production.settings if s != service]
        connection = await aio_pika.connect(production.settings[service]["AMQP_URL"])
        async with connection:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_queue(f"{exchange}.{others[0]}.intruder.{uuid.uuid4().hex[:6]}", durable=True)
