"""Issue #8: the system deployed as the production overlay ships it, proven on real components: a
convocation goes from the hospital's event to the patient's PDF and its status comes back upstream."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import asyncpg
import httpx
import pytest

from devstack.sample import convocation_event, publish, sample_pdf
from devstack.stack import SERVICES
from shared import crypto
from shared.topology import UPSTREAM_PRODUCER
from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.patient import PatientClient, find_link
from tests.production.conftest import SMTP_USER, amqp_url

pytestmark = pytest.mark.production


async def _upstream_status(url: str, exchange: str, convocation_id: str, until: set[str]) -> list[str]:
    """The statuses the hospital's system reads on its queue for one convocation, once ``until`` are in."""
    seen: list[str] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{exchange}.upstream.convocation.status.v1", ensure=False)
        for _ in range(300):
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                event = json.loads(message.body)
                if event["correlation_id"] == convocation_id:
                    seen.append(event["data"]["status"])
            if until <= set(seen):
                return seen
            await asyncio.sleep(0.1)
    raise AssertionError(f"upstream saw {seen}, expected {until}")


async def _await(predicate, timeout: float = 30, what: str = "") -> None:
    for _ in range(int(timeout * 10)):
        if result := predicate():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_convocation_goes_from_the_hospital_to_the_patients_pdf_and_its_status_back(
        production, broker, relay, sms_provider, pki):
    exchange = production.settings["issuer"]["EVENTS_EXCHANGE"]
    e164, national = random_mobile()
    email = random_email()
    event = convocation_event(email=email, mobile=national, pdf=sample_pdf("Convocation production"))
    convocation_id = event["data"]["convocation_id"]
    hospital = amqp_url(broker[UPSTREAM_PRODUCER])  # the hospital's system, as its own broker user
    await publish(hospital, exchange, event)

    # The mailer reached the hospital's relay over STARTTLS, checked its certificate against the
    # private CA and logged in.
    mail = await _await(lambda: next((m for m in relay.messages if email in m["rcpt"]), None), what="the e-mail")
    assert mail["tls"] and mail["login"] == SMTP_USER.encode(), mail
    link = find_link(mail["text"])
    assert link.startswith(production.settings["access-portal"]["PORTAL_BASE_URL"] + "/m/")

    cookies: list[str] = []
    client = httpx.Client(timeout=10, verify=pki.client_context(),
                          event_hooks={"response": [lambda r: cookies.extend(r.headers.get_list("set-cookie"))]})
    patient = PatientClient(link, client=client)
    assert patient.request_code(national).status_code in (200, 303)
    sms = await _await(lambda: next((s for s in sms_provider.inbox.sms() if s["to"] == e164), None), what="the SMS")
    assert patient.enter_code(code_of(sms)).status_code in (200, 303)
    pdf = patient.download("pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF"), pdf.text[:300]

    # Over HTTPS, every cookie is host-only and Secure (the __Host- prefix makes browsers enforce it).
    assert cookies
    for header in cookies:
        name = header.split("=", 1)[0]
        attributes = [a.strip().lower() for a in header.split(";")[1:]]
        assert name.startswith("__Host-") and "secure" in attributes and "path=/" in attributes, header
        assert not any(a.startswith("domain=") for a in attributes), header

    statuses = await _upstream_status(hospital, exchange, convocation_id, {"sealed", "e-mailed", "downloaded"})
    assert statuses.index("sealed") < statuses.index("downloaded")

    logs = production.logs()
    for secret in (email, e164, national, crypto.secret_of_fragment(link.split("#")[1]), code_of(sms)):
        assert secret not in logs


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
        ssl_in_use = await admin.fetch("select ssl from pg_stat_ssl join pg_stat_activity using (pid)"
                                       " where usename = any($1::text[])", [SERVICES[name][2] for name in production.settings])
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
