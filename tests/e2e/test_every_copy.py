"""Only the link opens the letter, in every copy a letter leaves (issue 17; docs/architecture.md#threat-model).

A stack of its own (every service, its own database and exchange) sends three letters that leave every copy
they can: one e-mailed at once; one whose e-mail the relay refuses twice (the mailer's retry copy waits in its
600 s holding queue); and one sealed after the issuer got a field key its consumers do not have yet (the mailer
and the portal each dead-letter their half, `cannot-open`); and the hospital sends one the issuer refuses. Then every table of every schema, every queue of the
broker's vhost (work queues, holding queues, DLQs) and every log line are gathered, and tests/opener.py tries
every server key on every field of every copy, in every combination that could yield a link and then a letter.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import aio_pika
import pytest
from secretariat.settings import SecretariatSettings

from access_portal.settings import PortalSettings
from devstack.sample import publish
from devstack.stack import Stack
from hospital_gateway.settings import GatewaySettings
from issuer.settings import IssuerSettings
from mailer.settings import MailerSettings
from shared.keystore import KeyStore
from shared.settings import DEV_KEY_STORE_TOKENS, _decode_key, dev_key
from sms_gateway.settings import SmsSettings
from tests.conftest import AMQP_URL, RABBITMQCTL, VHOST, inbox_stack
from tests.opener import Opened, open_letters
from tests.patient import find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
EXCHANGE = "copies"
HOLD_SECONDS = 600  # the second retry's delay: the retry copy waits in its holding queue while we look
# A second field key given to the issuer before its consumers (the rotation done in the wrong order): the
# letter sealed then is dead-lettered by the mailer and by the portal, each with its half.
EARLY = {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in ("MAILER", "PORTAL")}


SETTINGS = {
    "issuer": IssuerSettings,
    "mailer": MailerSettings,
    "sms-gateway": SmsSettings,
    "access-portal": PortalSettings,
    "secretariat": SecretariatSettings,
    "hospital-gateway": GatewaySettings,
}


def keys_of(service: str) -> dict[str, bytes]:
    """Every key a service holds (each key of each ring, named ``<SETTING> <key id>``), as this stack runs it."""
    settings = SETTINGS[service](environment="development")
    keys = {
        f"{name.upper()} {kid}": key
        for name, ring in settings
        if isinstance(ring, dict)
        for kid, key in ring.items()
        if isinstance(key, bytes)
    }
    if service == "issuer":
        keys |= {f"{name}_FIELD_KEY k2": base64.b64decode(key) for name, key in EARLY.items()}
    return keys


def server_keys() -> dict[str, bytes]:
    """Every key any service holds."""
    return {name: key for service in SETTINGS for name, key in keys_of(service).items()}


PRINT_ROOM = {"print room's private key": _decode_key(dev_key("print-room"))}  # the print room's, no service's


async def test_no_copy_a_letter_leaves_opens_it_without_the_link(chain, own_database, devinbox, devoidc, tmp_path):
    database, db = own_database
    stack = inbox_stack(
        devinbox,
        database=database,
        exchange=EXCHANGE,
        log_dir=tmp_path,
        amqp_url=AMQP_URL,
        # The other retry delays as the session's stack has them: the queues' names are those Prometheus knows.
        extra_env={
            "*": {
                "MAILER_RETRY_DELAYS": f"1,{HOLD_SECONDS}",
                "SMS_RETRY_DELAYS": "1,2,3",
                "OUTBOUND_RETRY_DELAYS": "1,2,3",
                "LOG_LEVEL": "DEBUG",
            }
        },
        oidc_issuer=devoidc.issuer,
    )
    try:
        stack.start()  # every service, each with its schema and its keys
        sent = chain.event()
        await publish(AMQP_URL, EXCHANGE, sent)
        link = find_link((await chain.email_to(sent["data"]["patient"]["email"]))["text"])

        chain.inbox.smtp_script(["451 4.3.0 Mailbox busy, try again later"] * 2)
        retrying = chain.event()
        await publish(AMQP_URL, EXCHANGE, retrying)
        holding = f"{EXCHANGE}.mailer.email.requested.v1.retry.{HOLD_SECONDS}s"
        await _until(lambda: _depth(holding), 1, "the retry copy in its holding queue")

        stack.stop(["issuer"])
        stack.extra_env["issuer"] = {
            f"{name}_FIELD_KEY": f"k1:{dev_key(name.lower() + '-field')},k2:{key}" for name, key in EARLY.items()
        }
        stack.start(["issuer"])
        dead = chain.event()
        await publish(AMQP_URL, EXCHANGE, dead)
        for consumer, event in (("mailer", "email.requested.v1"), ("access-portal", "message.sealed.v2")):
            dlq = f"{EXCHANGE}.{consumer}.{event}.dlq"
            await _until(lambda dlq=dlq: _depth(dlq), 1, f"the letter's half in {dlq}")

        # The hospital's own event, refused by the issuer (its appointment has begun): kept on the issuer's DLQ.
        refused = chain.event(starts_at=datetime.now(timezone.utc) - timedelta(hours=1))
        await publish(AMQP_URL, EXCHANGE, refused)
        await _until(lambda: _depth(f"{EXCHANGE}.issuer.convocation.created.v1.dlq"), 1, "the refused letter")

        ids = {name: await _message_id(db, e) for name, e in (("sent", sent), ("retrying", retrying), ("dead", dead))}
        assert ids["sent"] in link
        databases, queues, logs = await _databases(db), await _queues(), stack.logs()
        periods = await _period_keys(stack, [databases, queues])
    finally:
        stack.stop()
        chain.inbox.smtp_script([])

    # What was gathered: each letter's halves are there to be tried.
    assert {"issuer", "mailer", "access_portal", "sms_gateway", "secretariat", "hospital_gateway"} <= databases.keys()
    assert databases["secretariat"], "the secretariat's read model follows the letters too"
    assert len(queues[holding]) == 1 and len(queues[f"{EXCHANGE}.mailer.email.requested.v1.dlq"]) == 1
    assert len(queues[f"{EXCHANGE}.access-portal.message.sealed.v2.dlq"]) == 1
    # The hospital's input comes as the hospital sent it, the letter in clear: its queue's copies (here its DLQ's)
    # are the hospital's letter before any sealing, which the threat model names. The rest is ours.
    refused_copy = queues.pop(f"{EXCHANGE}.issuer.convocation.created.v1.dlq")
    assert {o.how for o in open_letters(refused_copy, {})} == {"a PDF in clear in a copy"}
    queues = {name: copies for name, copies in queues.items() if ".convocation.created." not in name}
    places = {**databases, **queues, "logs": [logs]}
    # The key store's period keys of these letters: the issuer and the portal hold them too (in memory).
    keys = server_keys() | periods

    # Each place alone (a schema, a queue, the logs), with every server key: nothing opens.
    for place, copies in places.items():
        assert open_letters(copies, keys) == [], f"{place} opens a letter without the link"
    # Every database together, with every server key: nothing (no table holds a link).
    assert open_letters([row for rows in databases.values() for row in rows], keys) == []
    # No log line, even at DEBUG, holds the link's secret, a sealed field, a ciphertext or an address.
    assert link.split("#", 1)[1][:43] not in logs and sent["data"]["patient"]["email"] not in logs
    assert not re.search(r"\bfe[12]\.|\brs[12]\.|ciphertext", logs), "a log line holds an event's sealed part"

    # The opener is no blind one: the link from the e-mail opens that letter from the portal's database;
    _opened(open_letters([*databases["access_portal"], link], keys), {ids["sent"]})
    # the print room's own key opens the print copies the issuer keeps, and it alone;
    _opened(open_letters(databases["issuer"], keys, PRINT_ROOM), set(), in_clear=True)
    # and everything together opens exactly the letters whose e-mail has not gone: their link waits in the
    # mailer's retry copy or dead letter, their letter in the portal's database or dead letter (the residue
    # the threat model names: the broker's copies, the portal's and two server keys at once).
    everything = [copy for copies in places.values() for copy in copies]
    _opened(open_letters(everything, keys), {ids["retrying"], ids["dead"]}, among=set(ids.values()))
    # One service's keys on everything: only the issuer's (it seals, so it holds both SEAL_KEYS and
    # MAILER_FIELD_KEY) reach those two; no other service's keys open anything.
    for service in SETTINGS:
        expected = {ids["retrying"], ids["dead"]} if service == "issuer" else set()
        held = keys_of(service) | (periods if service in ("issuer", "access-portal") else {})
        _opened(open_letters(everything, held), expected, among=set(ids.values()))


def _opened(found: list[Opened], message_ids: set[str], *, in_clear: bool = False, among=None) -> None:
    """The letters opened are these (of ``among``, when other tests' letters may be in the broker too)."""
    letters = {o.message_id for o in found if o.message_id and o.how.startswith("the letter")}
    assert (letters & among if among else letters) == message_ids, found
    assert any(o.message_id is None for o in found) == in_clear, found


async def _period_keys(stack: Stack, gathered: list) -> dict[str, bytes]:
    """The key store's key of every period a gathered letter names in its key id (``k1.w2026-51``)."""
    found = set(re.findall(r"\bk\d+\.(w\d{4}-\d{2})\b", json.dumps(gathered, default=str)))
    assert found, "no letter names its period"
    store = KeyStore(stack.url("key-store"), DEV_KEY_STORE_TOKENS[0])
    return {f"period {period}": (await store.get(period)).key for period in sorted(found)}


async def _message_id(db, event: dict) -> str:
    cid = uuid.UUID(event["data"]["convocation_id"])
    found = await eventually(
        lambda: db.fetchval("select message_id from issuer.convocation where id = $1", cid),
        what="the issuer's sealing of the letter",
    )
    return str(found)


async def _databases(db) -> dict[str, list[dict]]:
    """Every row of every table of every schema, by schema, as JSON (bytea as PostgreSQL prints it)."""
    places: dict[str, list[dict]] = {}
    tables = await db.fetch(
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
        " and table_schema not in ('pg_catalog', 'information_schema')"
    )
    for t in tables:
        rows = await db.fetch(f'select to_jsonb(t)::text as row from "{t["table_schema"]}"."{t["table_name"]}" t')
        places.setdefault(t["table_schema"], []).extend(json.loads(r["row"]) for r in rows)
    return places


async def _queues() -> dict[str, list[dict]]:
    """Every message of every queue of this test's deployment (its exchange's queues: the vhost holds other
    tests' deployments too), by queue, body and headers; each is handed back (not acked)."""
    names = subprocess.run(
        [RABBITMQCTL or "rabbitmqctl", "list_queues", "-q", "--no-table-headers", "-p", VHOST, "name"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    names = [name for name in names if name.startswith(f"{EXCHANGE}.")]
    places: dict[str, list[dict]] = {}
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for name in names:
            channel = await connection.channel()
            queue = await channel.get_queue(name, ensure=False)
            copies = places.setdefault(name, [])
            while (message := await queue.get(no_ack=False, fail=False, timeout=PATIENCE)) is not None:
                copies.append({"body": message.body, "headers": json.loads(json.dumps(message.headers, default=str))})
            await channel.close()  # unacknowledged: every message returns to its queue
    return places


async def _depth(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def _until(probe, expected: int, what: str, timeout: float = PATIENCE) -> None:
    async def reached() -> bool:
        try:
            return await probe() >= expected
        except aio_pika.exceptions.ChannelNotFoundEntity:  # not declared yet
            return False

    await eventually(reached, timeout, every=0.25, what=what)
