"""Forgetting reaches backups: letters are sealed under period keys that the key store destroys once every
letter of the period has expired (docs/architecture.md#period-keys).

- The backup thief: a real ``pg_dump`` of the portal's and the issuer's schemas taken while a letter is live
  opens it with the link and the keys of the day; once the letter has expired and the key store has destroyed
  its period key, the same dump plus the link plus every key that is left (every service's keys, the key
  store's master key, every other period key) opens nothing, and the portal says the message expired.
- Nothing destroys a period key early: the operator's ``destroy`` is refused while the period lasts, the store
  refuses to give out a key for a period that has ended, and only the issuer may create one.
- A letter whose period key cannot be had is dead-lettered at sealing with its reason, and counted; while the
  key store is down, the portal tells the patient to try again shortly, and the download works once it is back.

The stack has a database and an exchange of its own, periods of 20 seconds and letters that expire at their
appointment (MESSAGE_TTL_DAYS=0), so that a period ends within the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from devstack.sample import publish, sample_pdf
from devstack.stack import KEY_STORE, Stack, http
from key_store.store import KeyFiles
from shared import crypto
from shared.settings import DEV_KEY_NAMES, DEV_KEY_STORE_TOKENS, _decode_key, dev_key
from tests.conftest import AMQP_URL, PG
from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.patient import PatientClient

pytestmark = pytest.mark.e2e
EXCHANGE = "test-period-keys"
PERIOD_SECONDS = 20
GRACE_SECONDS = 3
ISSUER_TOKEN, PORTAL_TOKEN = DEV_KEY_STORE_TOKENS


def period_stack(database: str, devinbox, tmp_path: Path) -> Stack:
    return Stack(
        database=database,
        exchange=EXCHANGE,
        smtp_port=devinbox.smtp_port,
        sms_provider_url=devinbox.twilio_base_url,
        sms_account_sid=devinbox.account_sid,
        sms_auth_token=devinbox.auth_token,
        log_dir=tmp_path,
        amqp_url=AMQP_URL,
        extra_env={
            "*": {"LOG_LEVEL": "INFO", "SWEEP_SECONDS": "0.5", "SHUTDOWN_TIMEOUT_SECONDS": "6"},
            "access-portal": {"FORWARDED_ALLOW_IPS": "127.0.0.0/8"},
            # A letter expires at its appointment, seconds away; no paper before it.
            "issuer": {"MESSAGE_TTL_DAYS": "0", "POSTAL_FALLBACK_HOURS": "0"},
            KEY_STORE: {"PERIOD_SECONDS": str(PERIOD_SECONDS), "DESTROY_GRACE_SECONDS": str(GRACE_SECONDS)},
        },
    )


@pytest.fixture
async def keys_stack(own_database, devinbox, tmp_path):
    database, _ = own_database
    s = period_stack(database, devinbox, tmp_path)
    s.start(["issuer", "mailer", "sms-gateway", "access-portal"])  # and the key store, which they ask
    try:
        yield s
    finally:
        s.stop()


def pg_dump(database: str, *schemas: str) -> str:
    """What a backup holds: pg_dump of these schemas (plain SQL, COPY blocks), as the operator's tool takes it."""
    tool = str(PG.bin / "pg_dump") if PG is not None and PG.bin else "pg_dump"
    args = [tool, "-d", database, *(f"--schema={s}" for s in schemas)]
    return subprocess.run(args, check=True, capture_output=True, text=True, env=os.environ, timeout=120).stdout


def copied_rows(dump: str, table: str) -> list[dict[str, str]]:
    """The rows of one table's COPY block in a plain dump, by column name (text format, as written)."""
    match = re.search(rf"^COPY {re.escape(table)} \(([^)]*)\) FROM stdin;\n(.*?)^\\\.$", dump, re.M | re.S)
    assert match, f"no COPY block for {table} in the dump"
    columns = [c.strip().strip('"') for c in match[1].split(",")]
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in match[2].splitlines()]


def bytea(text: str) -> bytes:
    assert text.startswith("\\\\x"), text[:10]
    return bytes.fromhex(text[3:])


def open_from_dump(row: dict[str, str], link_secret: str, server_key: bytes) -> bytes:
    return crypto.open_sealed(
        bytea(row["document_nonce"]),
        bytea(row["document_ciphertext"]),
        link_secret=link_secret,
        server_key=server_key,
        key_id=row["key_id"],
        message_id=uuid.UUID(row["message_id"]),
        purpose="document",
    )


def every_server_key() -> dict[str, bytes]:
    """Every key a service or the key store holds in development: what a thief with every Secret has."""
    return {name: _decode_key(dev_key(name)) for name in DEV_KEY_NAMES}


def period_key(stack: Stack, period_id: str) -> httpx.Response:
    return http(
        "GET", f"{stack.url(KEY_STORE)}/v1/periods/{period_id}", headers={"Authorization": f"Bearer {PORTAL_TOKEN}"}
    )


async def letter(chain, starts_at: datetime) -> tuple[dict, str, tuple[str, str], bytes]:
    """A letter published for an appointment then: (event, its link, the mobile (E.164, national), its PDF)."""
    e164, national = mobile = random_mobile()
    pdf = sample_pdf(f"Convocation {uuid.uuid4().hex[:8]}")
    event = chain.event(email=random_email(), mobile=national, pdf=pdf, starts_at=starts_at)
    await publish(AMQP_URL, EXCHANGE, event)
    mail = await chain.email_to(event["data"]["patient"]["email"])
    link = next(u for u in mail["links"] if "/m/" in u)
    return event, link, mobile, pdf


async def download(chain, link: str, mobile: tuple[str, str]) -> httpx.Response:
    """The patient's journey on the portal: the number, the code from the SMS, the PDF."""
    e164, national = mobile
    patient = PatientClient(link)
    assert patient.request_code(national).status_code in (200, 303), "the code was not sent"
    patient.enter_code(code_of(await chain.sms_to(e164)))
    return patient.download("pdf")


async def test_a_backup_taken_while_a_letter_is_live_opens_nothing_once_its_period_key_is_destroyed(
    chain, keys_stack, own_database
):
    stack, (database, db) = keys_stack, own_database
    now = datetime.now(timezone.utc)
    soon, later = now + timedelta(seconds=25), now + timedelta(hours=2)
    _, link, mobile, pdf = await letter(chain, soon)
    _, other_link, other_mobile, other_pdf = await letter(chain, later)  # a letter of another period
    secret = crypto.secret_of_fragment(link.split("#", 1)[1])
    mid = link.split("#", 1)[0].rsplit("/", 1)[1]

    # While the letter is live: the backup, the link and the keys of the day open it; so does the portal.
    dump = pg_dump(database, "access_portal", "issuer")
    rows = {r["message_id"]: r for r in copied_rows(dump, "access_portal.message")}
    row = rows[mid]
    seal_key_id, period_id = crypto.split_key_id(row["key_id"])
    assert (seal_key_id, period_id is not None) == ("k1", True), row["key_id"]
    assert secret not in dump and crypto.b64e(pdf) not in dump
    live = period_key(stack, period_id)
    assert live.status_code == 200, live.text
    keys = every_server_key()
    server_key = crypto.bound_to_period(keys["seal-k1"], crypto.b64d(live.json()["key"]))
    assert open_from_dump(row, secret, server_key) == pdf, "the dump and the link must open the live letter"
    answer = await download(chain, link, mobile)
    assert answer.status_code == 200 and answer.content == pdf

    # Nobody destroys the period key while the letter is live: the operator's command is refused.
    early = stack.run(KEY_STORE, "destroy", period_id)
    assert early.returncode != 0 and "refused" in early.stderr, early
    assert period_key(stack, period_id).status_code == 200

    # The letter expires, the period ends, and the key store destroys the period key on its own.
    deadline = datetime.fromisoformat(live.json()["destroy_after"]) + timedelta(seconds=15)
    while (gone := period_key(stack, period_id)).status_code == 200:
        assert datetime.now(timezone.utc) < deadline, "the period key was not destroyed after its end + grace"
        await asyncio.sleep(0.5)
    assert gone.status_code == 410, gone.text
    store_dir = stack.key_store_dir
    assert store_dir is not None
    assert not (store_dir / f"{period_id}.key").exists() and (store_dir / f"{period_id}.destroyed").exists()
    assert "key" not in json.loads((store_dir / f"{period_id}.destroyed").read_text())

    # The old backup, the link and every key left open nothing: every service's keys, the store's master
    # key, every period key the store still holds (the other letter's among them), alone or bound together.
    files = KeyFiles(store_dir, keys["key-store-master"], period_seconds=PERIOD_SECONDS, grace_seconds=GRACE_SECONDS)
    periods = {p.period_id: files.get(p.period_id).key for p in files.periods() if p.key is not None}
    other_row = {r["message_id"]: r for r in copied_rows(pg_dump(database, "access_portal"), "access_portal.message")}
    other_period = crypto.split_key_id(other_row[other_link.split("#")[0].rsplit("/", 1)[1]]["key_id"])[1]
    assert other_period in periods and period_id not in periods
    remaining = [*keys.values(), *(k for k in periods.values() if k)]
    candidates = remaining + [crypto.bound_to_period(s, p) for s in keys.values() for p in remaining]
    assert len(candidates) > 100
    for candidate in candidates:
        with pytest.raises(crypto.CannotOpen):
            open_from_dump(row, secret, candidate)

    # The link holder after expiry: the portal says so; the other period's letter still opens.
    assert PatientClient(link).open_link().status_code == 410
    other = await download(chain, other_link, other_mobile)
    assert other.status_code == 200 and other.content == other_pdf
    ciphertext = "select document_ciphertext from access_portal.message where message_id = $1"
    assert await db.fetchval(ciphertext, uuid.UUID(mid)) is None  # and the live database forgot it too


async def test_nothing_creates_or_destroys_a_period_key_out_of_turn(keys_stack):
    stack = keys_stack
    store = stack.url(KEY_STORE)
    issuer, portal = ({"Authorization": f"Bearer {t}"} for t in (ISSUER_TOKEN, PORTAL_TOKEN))
    in_an_hour = {"expires_at": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()}
    assert http("POST", f"{store}/v1/periods", json=in_an_hour).status_code == 401  # no caller
    assert (
        http("POST", f"{store}/v1/periods", json=in_an_hour, headers={"Authorization": "Bearer x"}).status_code == 401
    )
    assert http("POST", f"{store}/v1/periods", json=in_an_hour, headers=portal).status_code == 403  # reads only
    made = http("POST", f"{store}/v1/periods", json=in_an_hour, headers=issuer)
    assert made.status_code == 200
    period_id = made.json()["period_id"]
    assert http("GET", f"{store}/v1/periods/{period_id}").status_code == 401
    assert http("GET", f"{store}/v1/periods/{period_id}", headers=portal).json()["key"] == made.json()["key"]
    # A period that has ended takes no new letter: one sealed then could outlive its key.
    ended = {"expires_at": (datetime.now(timezone.utc) - timedelta(seconds=PERIOD_SECONDS)).isoformat()}
    closed = http("POST", f"{store}/v1/periods", json=ended, headers=issuer)
    assert closed.status_code == 409 and "ended" in closed.json()["detail"]
    # The operator cannot destroy a live period: refused, and the key is still there.
    refused = stack.run(KEY_STORE, "destroy", period_id)
    assert refused.returncode != 0 and f"refused: period {period_id} ends at" in refused.stderr
    assert http("GET", f"{store}/v1/periods/{period_id}", headers=portal).status_code == 200
    listed = [json.loads(line) for line in stack.run(KEY_STORE, "periods").stdout.splitlines()]
    assert {"period_id": period_id, "state": "live"}.items() <= next(
        p for p in listed if p["period_id"] == period_id
    ).items()
    assert all("key" not in p for p in listed)


async def test_a_letter_without_its_period_key_is_dead_lettered_with_the_reason_and_counted(chain, keys_stack):
    stack = keys_stack
    stack.stop([KEY_STORE])
    try:
        event = chain.event(email=random_email())
        await publish(AMQP_URL, EXCHANGE, event)
        parked = await chain.dead_letters(f"{EXCHANGE}.issuer.convocation.created.v1", {event["event_id"]})
        headers = parked[event["event_id"]].headers
        assert headers["x-rejected-reason"] == "period-key-unavailable"
        assert str(headers["x-rejected-detail"]).startswith("unreachable: the key store does not answer")
        metrics = http("GET", f"{stack.url('issuer')}/metrics").text
        assert re.search(r'convocations_period_key_failures_total\{reason="unreachable"\} 1\.0', metrics), metrics
        assert not chain.emails_to(event["data"]["patient"]["email"])
    finally:
        stack.start([KEY_STORE])
    # Once the store is back, the next letter is sealed and e-mailed.
    after = chain.event(email=random_email())
    await publish(AMQP_URL, EXCHANGE, after)
    await chain.email_to(after["data"]["patient"]["email"])


async def test_while_the_key_store_is_down_the_patient_is_told_to_try_again_and_nothing_is_lost(chain, keys_stack):
    """The portal first needs the letter's period key to check the link's proof, when a code is asked (then it
    keeps the key in memory until the period ends): with the store down, that first step says to try again
    later, in the letter's language, and nothing is texted or counted."""
    stack = keys_stack
    _, link, mobile, pdf = await letter(chain, datetime.now(timezone.utc) + timedelta(days=3))
    e164, national = mobile
    patient = PatientClient(link)
    stack.stop([KEY_STORE])
    try:
        refused = patient.follow(patient.request_code(national))  # post/redirect/get: the page that says so
        assert refused.history[0].headers["location"].endswith("?told=try_later")
        assert refused.status_code == 503 and 'data-state="try_later"' in refused.text, refused.text[:500]
        assert "Votre convocation ne peut pas être ouverte pour le moment" in refused.text  # the letter's language
        assert pdf not in refused.content
    finally:
        stack.start([KEY_STORE])
    assert patient.request_code(national).status_code in (200, 303)
    patient.enter_code(code_of(await chain.sms_to(e164)))  # the first SMS: none was sent while the store was down
    again = patient.download("pdf")
    assert again.status_code == 200 and again.content == pdf
