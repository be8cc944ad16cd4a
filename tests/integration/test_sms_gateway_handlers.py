"""The sms-gateway's handler, delivery reports and SQL on the real Postgres, with the provider APIs
replaced by httpx.MockTransport: attempts, retries, failover, caps and report ordering, row by row."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from shared import crypto
from shared.consumer import Delivery, Rejected
from shared.contracts import OtpRequestedV1, PatientErasedV1, envelope
from shared.db import migrate
from sms_gateway.app import MIGRATIONS, build_providers
from sms_gateway.handlers import SmsHandlers
from sms_gateway.reports import apply_report
from sms_gateway.rules import Report
from sms_gateway.settings import SmsSettings
from tests.integration.conftest import throwaway_schema

EXCHANGE = "itest"
QUEUE = "itest.sms-gateway.otp.requested.v1"


@pytest.fixture(scope="module")
async def pool(test_database):
    """A throw-away schema with the gateway's real migrations (the running stack never sees it)."""
    async with throwaway_schema(test_database, "sms_itest", max_size=6) as (name, _, pool):
        await migrate(pool, name, MIGRATIONS)
        yield pool


class FakeProviders:
    """Both provider APIs on one MockTransport: scripted answers per provider, every request kept."""

    def __init__(self) -> None:
        self.script: dict[str, list[int]] = {"twilio": [], "generic": []}
        self.requests: list[tuple[str, dict]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        name = "generic" if "/generic/" in request.url.path else "twilio"
        self.requests.append((name, dict(request.headers)))
        status = self.script[name].pop(0) if self.script[name] else None
        if status is not None and status >= 400 and name == "twilio":
            return httpx.Response(status, json={"code": 20000 + status, "message": "scripted"})
        if status is not None and status >= 400:
            return httpx.Response(status, json={"error": "scripted"})
        if name == "twilio":
            return httpx.Response(201, json={"sid": f"SM{uuid.uuid4().hex}", "status": "queued"})
        return httpx.Response(202, json={"id": f"gm{uuid.uuid4().hex[:20]}", "status": "accepted"})

    def sent(self) -> list[str]:
        return [name for name, _ in self.requests]


def gateway(fake: FakeProviders, **settings) -> SmsHandlers:
    values = dict(
        events_exchange=EXCHANGE,
        sms_retry_delays="5,30,120",
        sms_generic_url="https://sms.test/generic/v1/messages",
        sms_generic_token="gen",
        sms_callback_base_url="https://gw.test",
        sms_failover_after=2,
    )
    s = SmsSettings(**{**values, **settings})
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    return SmsHandlers(s, build_providers(s, client))


def otp_delivery(e164: str, *, code: str = "123456", expires_in: int = 600, attempt: int = 0, env=None) -> Delivery:
    if env is None:
        challenge_id = uuid.uuid4()
        env = envelope(
            OtpRequestedV1(
                challenge_id=challenge_id,
                message_id=uuid.uuid4(),
                convocation_id=uuid.uuid4(),
                language="en",
                portal_host="portal.test",
                expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in),
                for_sms=crypto.seal_field(
                    SmsSettings().sms_field_key,
                    {"phone": e164, "code": code},
                    context=crypto.field_context("otp.requested", challenge_id, "sms"),
                ),
            ),
            producer="access-portal",
            correlation_id=uuid.uuid4(),
        )
    return Delivery(env, attempt, QUEUE)


def again(d: Delivery, attempt: int) -> Delivery:
    return Delivery(d.envelope, attempt, d.queue)


def number() -> str:
    return f"+4179{uuid.uuid4().int % 10**7:07d}"


async def handle(pool, handlers: SmsHandlers, d: Delivery) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handlers.on_otp_requested(conn, d)


async def relay_retries(pool) -> None:
    """What the outbox relay does before a retry copy can come back: publish the copy, delete its row."""
    await pool.execute("delete from outbox where exchange is not null")


async def row(pool, d: Delivery):
    return await pool.fetchrow("select * from sms where challenge_id = $1", d.data.challenge_id)


async def outbox(pool, d: Delivery) -> list[dict]:
    rows = await pool.fetch(
        "select exchange, routing_key, event_type, headers, body from outbox"
        " where convert_from(body, 'UTF8') like '%' || $1 || '%' order by id",
        str(d.data.challenge_id),
    )
    return [dict(r) | {"body": json.loads(bytes(r["body"]))} for r in rows]


async def test_an_accepted_sms_is_queued_with_its_attempt_and_an_sms_sent_to_publish(pool):
    fake = FakeProviders()
    d = otp_delivery(number())
    await handle(pool, gateway(fake), d)

    r = await row(pool, d)
    assert (r["status"], r["provider"], r["attempts"]) == ("queued", "twilio", 1)
    assert r["otp_event_id"] == d.envelope.event_id
    assert r["provider_message_id"].startswith("SM") and r["sent_at"] is not None
    [event] = await outbox(pool, d)
    assert event["event_type"] == "sms.sent" and event["body"]["causation_id"] == str(d.envelope.event_id)
    assert await pool.fetchval("select outcome from sms_attempt where challenge_id = $1", d.data.challenge_id) == (
        "accepted"
    )


async def test_the_sms_row_keeps_only_a_keyed_hash_of_the_number_and_never_the_code(pool):
    e164 = number()
    d = otp_delivery(e164, code="918273")
    await handle(pool, gateway(FakeProviders()), d)
    text = " ".join(str(v) for v in (await row(pool, d)).values())
    assert e164 not in text and e164[1:] not in text and "918273" not in text


async def test_a_redelivered_or_retried_event_never_texts_an_accepted_code_again(pool):
    fake = FakeProviders()
    handlers, d = gateway(fake), otp_delivery(number())
    await handle(pool, handlers, d)
    await handle(pool, handlers, d)
    await handle(pool, handlers, again(d, 2))
    assert fake.sent() == ["twilio"]
    assert len(await outbox(pool, d)) == 1


async def test_a_503_schedules_a_delayed_retry_of_the_same_event_through_the_outbox(pool):
    fake = FakeProviders()
    fake.script["twilio"] = [503]
    d = otp_delivery(number())
    await handle(pool, gateway(fake), d)

    r = await row(pool, d)
    assert (r["status"], r["attempts"], r["error_code"]) == ("retrying", 1, "20503")
    [retry] = await outbox(pool, d)
    assert retry["exchange"] == f"{EXCHANGE}.retry" and retry["routing_key"] == f"{QUEUE}.retry.5s"
    assert retry["headers"] == {"x-attempt": 1}
    assert retry["body"]["event_id"] == str(d.envelope.event_id)  # the same event comes back


async def test_after_two_failures_the_third_attempt_goes_to_the_generic_provider(pool):
    fake = FakeProviders()
    fake.script["twilio"] = [503, 500]
    handlers, d = gateway(fake), otp_delivery(number())
    for attempt in range(3):
        await handle(pool, handlers, again(d, attempt))
        await relay_retries(pool)

    assert fake.sent() == ["twilio", "twilio", "generic"]
    assert fake.requests[2][1]["authorization"] == "Bearer gen"
    r = await row(pool, d)
    assert (r["status"], r["provider"], r["attempts"]) == ("queued", "generic", 3)
    attempts = await pool.fetch(
        "select attempt, provider, outcome from sms_attempt where challenge_id = $1 order by id", d.data.challenge_id
    )
    assert [tuple(a) for a in attempts] == [
        (1, "twilio", "transient"),
        (2, "twilio", "transient"),
        (3, "generic", "accepted"),
    ]


async def test_without_a_second_provider_every_attempt_stays_with_twilio(pool):
    fake = FakeProviders()
    fake.script["twilio"] = [503, 503]
    handlers, d = gateway(fake, sms_generic_url=None, sms_generic_token=None), otp_delivery(number())
    for attempt in range(3):
        await handle(pool, handlers, again(d, attempt))
        await relay_retries(pool)
    assert fake.sent() == ["twilio"] * 3
    assert (await row(pool, d))["status"] == "queued"


async def test_when_retries_run_out_the_code_fails_with_sms_failed(pool):
    fake = FakeProviders()
    fake.script["twilio"] = [503, 503]
    fake.script["generic"] = [503, 503]
    handlers, d = gateway(fake), otp_delivery(number())
    for attempt in range(4):
        await handle(pool, handlers, again(d, attempt))
        await relay_retries(pool)

    r = await row(pool, d)
    assert (r["status"], r["attempts"], r["provider"]) == ("failed", 4, "generic")
    failed = [e for e in await outbox(pool, d) if e["event_type"] == "sms.failed"]
    assert len(failed) == 1 and failed[0]["body"]["data"]["provider_code"] == "503"


async def test_a_permanent_refusal_fails_at_once_and_keeps_no_number_from_the_providers_message(pool):
    e164 = number()

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": 21211, "message": f"The 'To' number {e164} is not valid."})

    s = SmsSettings(events_exchange=EXCHANGE)
    handlers = SmsHandlers(s, build_providers(s, httpx.AsyncClient(transport=httpx.MockTransport(refuse))))
    d = otp_delivery(e164)
    await handle(pool, handlers, d)

    r = await row(pool, d)
    assert (r["status"], r["error_code"]) == ("failed", "21211")
    [failed] = await outbox(pool, d)
    assert failed["body"]["data"]["provider_code"] == "21211"
    stored = json.dumps(failed["body"]) + str(dict(r)) + str(await pool.fetch("select * from sms_attempt"))
    assert e164 not in stored and e164[1:] not in stored


async def test_the_per_number_cap_counts_sms_accepted_in_the_last_hour_even_when_they_race(pool):
    fake, e164 = FakeProviders(), number()
    handlers = gateway(fake, sms_max_per_number_hour=2)
    deliveries = [otp_delivery(e164) for _ in range(4)]
    await asyncio.gather(*(handle(pool, handlers, d) for d in deliveries))

    statuses = Counter([(await row(pool, d))["status"] for d in deliveries])
    assert statuses == {"queued": 2, "failed": 2}
    assert fake.sent() == ["twilio", "twilio"]
    codes = {(await row(pool, d))["error_code"] for d in deliveries} - {None}
    assert codes == {"number-hourly-cap"}


async def test_the_global_cap_blocks_once_the_hour_is_full(pool):
    fake = FakeProviders()
    full = await pool.fetchval("select count(*) from sms where sent_at > now() - interval '1 hour'")
    d = otp_delivery(number())
    await handle(pool, gateway(fake, sms_max_global_hour=full), d)
    assert fake.sent() == []
    r = await row(pool, d)
    assert (r["status"], r["error_code"], r["attempts"]) == ("failed", "global-hourly-cap", 0)


async def test_a_field_that_does_not_open_is_rejected_to_the_dead_letter_queue(pool):
    d = otp_delivery(number())
    forged = d.envelope.model_copy(update={"data": d.data.model_copy(update={"challenge_id": uuid.uuid4()})})
    with pytest.raises(Rejected) as caught:
        await handle(pool, gateway(FakeProviders()), Delivery(forged, 0, QUEUE))
    assert caught.value.reason == "unreadable-secret"


async def test_delivery_reports_move_the_sms_forward_once_and_a_failure_publishes_one_sms_failed(pool):
    fake = FakeProviders()
    d = otp_delivery(number())
    await handle(pool, gateway(fake), d)
    sid = (await row(pool, d))["provider_message_id"]

    outcomes = []
    for status, code in (
        ("sent", None),
        ("undelivered", "30003"),
        ("undelivered", "30003"),
        ("sent", None),
        ("delivered", None),
    ):
        async with pool.acquire() as conn, conn.transaction():
            outcomes.append(await apply_report(conn, Report("twilio", sid, status, code)))
    assert outcomes == ["applied", "applied", "stale", "stale", "stale"]
    r = await row(pool, d)
    assert (r["status"], r["error_code"]) == ("failed", "30003") and r["final_at"] is not None
    failed = [e for e in await outbox(pool, d) if e["event_type"] == "sms.failed"]
    assert len(failed) == 1
    assert failed[0]["body"]["data"]["provider_code"] == "30003"
    assert failed[0]["body"]["causation_id"] == str(d.envelope.event_id)


async def test_a_report_that_arrives_before_the_send_is_recorded_is_applied_by_the_send(pool):
    """The provider may call back before the sending transaction commits: the report waits in sms_report."""
    sid = f"SM{uuid.uuid4().hex}"

    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"sid": sid, "status": "queued"})

    async with pool.acquire() as conn, conn.transaction():
        assert await apply_report(conn, Report("twilio", sid, "delivered")) == "unmatched"
        await conn.execute(
            "insert into sms_report(provider, provider_message_id, provider_status, outcome)"
            " values ('twilio', $1, 'delivered', 'unmatched')",
            sid,
        )
    s = SmsSettings(events_exchange=EXCHANGE)
    handlers = SmsHandlers(s, build_providers(s, httpx.AsyncClient(transport=httpx.MockTransport(accept))))
    d = otp_delivery(number())
    await handle(pool, handlers, d)

    assert (await row(pool, d))["status"] == "delivered"
    assert await pool.fetchval("select outcome from sms_report where provider_message_id = $1", sid) == "applied"


async def test_an_erased_patients_sms_go_with_their_waiting_retry_and_the_retry_texts_nothing(pool):
    """patient.erased: the SMS row, its attempts and the retry copy waiting in the outbox go, the gateway
    confirms with counts only, and a retry copy already on its way when the row went texts nobody."""
    fake = FakeProviders()
    fake.script["twilio"] = [503]
    handlers = gateway(fake)
    first = otp_delivery(number())  # as the portal sends it: the chain's correlation id is the convocation's
    d = Delivery(first.envelope.model_copy(update={"correlation_id": first.data.convocation_id}), 0, QUEUE)
    await handle(pool, handlers, d)
    assert (await row(pool, d))["status"] == "retrying"
    assert [e["exchange"] for e in await outbox(pool, d)] == [f"{EXCHANGE}.retry"]

    erasure_id = uuid.uuid4()
    erased = envelope(
        PatientErasedV1(
            erasure_id=erasure_id,
            patient_refs=["k1:ref"],
            convocation_ids=[d.data.convocation_id],
            at=datetime.now(timezone.utc),
        ),
        producer="issuer",
        correlation_id=erasure_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.on_patient_erased(conn, Delivery(erased, 0, "itest.sms-gateway.patient.erased.v1"))
    assert await row(pool, d) is None
    assert await pool.fetchval("select count(*) from sms_attempt where challenge_id = $1", d.data.challenge_id) == 0
    assert await outbox(pool, d) == []
    confirmed = await pool.fetchval(
        "select convert_from(body, 'UTF8') from outbox where event_type = 'patient.erasure.confirmed'"
        " and correlation_id = $1",
        erasure_id,
    )
    assert json.loads(confirmed)["data"] | {"at": None} == {
        "erasure_id": str(erasure_id),
        "service": "sms-gateway",
        "convocations": 1,
        "rows": 3,  # the SMS, its attempt, the retry copy
        "at": None,
    }

    await handle(pool, handlers, again(d, 1))  # the copy the broker was holding
    assert fake.sent() == ["twilio"] and await row(pool, d) is None
