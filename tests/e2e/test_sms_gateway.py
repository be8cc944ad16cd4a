"""The sms-gateway as a process on real RabbitMQ, Postgres and the devinbox SMS providers: delivery
reports, retries, failover, destination and volume limits, and logs that never hold a code or a number."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest

from devinbox import generic_signature, twilio_signature
from devstack.stack import http
from shared.contracts import OtpRequestedV1, envelope
from shared.crypto import field_context, seal_field
from shared.settings import dev_key
from tests.conftest import AMQP_URL
from tests.e2e.conftest import random_mobile
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
SMS_FIELD_KEY = base64.b64decode(dev_key("sms-field"))
TWILIO_STATUS_PATH = "/webhooks/twilio/status"
GENERIC_STATUS_PATH = "/webhooks/generic/status"


# --- helpers -------------------------------------------------------------------------------------


def otp_requested(e164: str, *, language: str = "fr", expires_in: int = 600) -> tuple[dict, str]:
    """An otp.requested event as the access portal publishes it, and the code it carries."""
    code = f"{random.randrange(10**6):06d}"
    challenge_id, convocation_id = uuid.uuid4(), uuid.uuid4()
    data = OtpRequestedV1(
        challenge_id=challenge_id,
        message_id=uuid.uuid4(),
        convocation_id=convocation_id,
        language=language,
        portal_host="portal.test",
        expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires_in),
        for_sms=seal_field(
            SMS_FIELD_KEY, {"phone": e164, "code": code}, context=field_context("otp.requested", challenge_id, "sms")
        ),
    )
    return json.loads(envelope(data, producer="access-portal", correlation_id=convocation_id).model_dump_json()), code


def challenge_of(event: dict) -> uuid.UUID:
    return uuid.UUID(event["data"]["challenge_id"])


def us_mobile() -> str:
    return f"+1650253{random.randrange(10**4):04d}"


class BusTap:
    """Copies of the gateway's sms.sent / sms.failed events, from a private queue on the exchange."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self, exchange: str) -> BusTap:
        self.connection = await aio_pika.connect_robust(AMQP_URL)
        channel = await self.connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        ex = await channel.get_exchange(exchange, ensure=True)
        for key in ("sms.sent.v1", "sms.failed.v1"):
            await queue.bind(ex, routing_key=key)
        await queue.consume(self._keep, no_ack=True)
        return self

    async def _keep(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.events.append(json.loads(message.body))

    def of(self, event_type: str, challenge_id: uuid.UUID) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type and e["data"]["challenge_id"] == str(challenge_id)]

    async def wait(self, event_type: str, challenge_id: uuid.UUID, timeout: float = PATIENCE) -> dict:
        found = await eventually(
            lambda: self.of(event_type, challenge_id), timeout, every=0.05, what=f"{event_type} for {challenge_id}"
        )
        return found[0]

    async def stop(self) -> None:
        if self.connection:
            await self.connection.close()


@pytest.fixture(scope="module")
async def bus(stack, exchange_name):
    tap = await BusTap().start(exchange_name)
    yield tap
    await tap.stop()


@pytest.fixture(autouse=True)
def _no_leftover_provider_faults(devinbox):
    """Each test scripts its own faults; a test that stops early must not leave them to the next."""
    yield
    for provider in ("twilio", "generic"):
        devinbox.inbox.sms_script(provider, [])


async def sms_row(db, challenge_id: uuid.UUID):
    return await db.fetchrow("select * from sms_gateway.sms where challenge_id = $1", challenge_id)


async def wait_sms_status(db, challenge_id: uuid.UUID, *status: str, timeout: float = PATIENCE):
    async def reached():
        row = await sms_row(db, challenge_id)
        return row if row is not None and row["status"] in status else None

    async def stayed() -> str:
        row = await sms_row(db, challenge_id)
        return f"it stayed {row and dict(row)!r}"

    return await eventually(reached, timeout, what=f"the status {status!r} of sms {challenge_id}", seen=stayed)


async def attempts_of(db, challenge_id: uuid.UUID) -> list[tuple]:
    rows = await db.fetch(
        "select attempt, provider, outcome from sms_gateway.sms_attempt where challenge_id = $1 order by id",
        challenge_id,
    )
    return [tuple(r) for r in rows]


async def reports_of(db, provider_message_id: str) -> list[tuple]:
    rows = await db.fetch(
        "select provider_status, outcome from sms_gateway.sms_report where provider_message_id = $1 order by id",
        provider_message_id,
    )
    return [tuple(r) for r in rows]


async def wait_callbacks(devinbox, sms_id: str, n: int, timeout: float = PATIENCE) -> list[dict]:
    def called() -> list[dict] | None:
        callbacks = devinbox.inbox.get_sms(sms_id)["callbacks"]
        return callbacks if len(callbacks) >= n else None

    return await eventually(
        called,
        timeout,
        every=0.05,
        what=f"{n} status callbacks for {sms_id}",
        seen=lambda: devinbox.inbox.get_sms(sms_id),
    )


def sms_to(devinbox, e164: str) -> list[dict]:
    return [s for s in devinbox.inbox.sms() if s["to"] == e164]


def metric(stack, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 when the series does not exist yet)."""
    text = http("GET", stack.url("sms-gateway") + "/metrics", timeout=5).text
    for sample in re.finditer(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', sample.group(1))) == labels:
            return float(sample.group(2))
    return 0.0


def post_twilio_status(stack, devinbox, params: dict, *, signature: str | None = None) -> httpx.Response:
    """A status callback as Twilio sends it, signed over the gateway's public URL."""
    url = stack.url("sms-gateway") + TWILIO_STATUS_PATH
    sig = signature if signature is not None else twilio_signature(devinbox.auth_token, url, params)
    return http("POST", url, data=params, headers={"X-Twilio-Signature": sig}, timeout=10)


def twilio_params(devinbox, sms_id: str, status: str, error_code: str | None = None) -> dict:
    params = {
        "AccountSid": devinbox.account_sid,
        "ApiVersion": "2010-04-01",
        "MessageSid": sms_id,
        "SmsSid": sms_id,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "+41790000000",
        "From": "HUG",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params


@contextlib.asynccontextmanager
async def gateway_with(stack, **env: str):
    """Restart only the sms-gateway with these settings; put the previous ones back afterwards."""
    before = stack.extra_env.get("sms-gateway")

    def restart(settings: dict | None) -> None:
        stack.stop(["sms-gateway"])
        if settings is None:
            stack.extra_env.pop("sms-gateway", None)
        else:
            stack.extra_env["sms-gateway"] = settings
        stack.start(["sms-gateway"])

    await asyncio.to_thread(restart, {**(before or {}), **env})
    try:
        yield
    finally:
        await asyncio.to_thread(restart, before)


async def open_portal_and_request_code(chain, national: str) -> tuple[PatientClient, uuid.UUID]:
    """The patient's way in: a convocation, its e-mail, the link, the number typed. Returns the challenge."""
    event = chain.event(mobile=national)
    await chain.publish(event)
    link = find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"])
    patient = PatientClient(link)
    assert patient.request_code(national).status_code == 303
    challenge_id = await chain.db.fetchval(
        "select id from access_portal.challenge where message_id = $1 order by created_at desc limit 1",
        patient.message_id,
    )
    assert challenge_id is not None
    return patient, challenge_id


# --- Twilio delivery reports ----------------------------------------------------------------------


async def test_a_code_sent_through_twilio_reaches_delivered_through_signed_status_callbacks(chain, devinbox, bus):
    e164, national = random_mobile()
    _, challenge_id = await open_portal_and_request_code(chain, national)

    sms = await chain.sms_to(e164)
    assert sms["provider"] == "twilio"
    assert sms["status_callback"] == chain.stack.url("sms-gateway") + TWILIO_STATUS_PATH
    row = await wait_sms_status(chain.db, challenge_id, "delivered")
    assert (row["provider"], row["provider_message_id"], row["attempts"]) == ("twilio", sms["id"], 1)
    assert row["final_at"] is not None and row["error_code"] is None
    callbacks = await wait_callbacks(devinbox, sms["id"], 2)
    assert [(c["status"], c["http_status"]) for c in callbacks] == [("sent", 204), ("delivered", 204)]
    assert await reports_of(chain.db, sms["id"]) == [("sent", "applied"), ("delivered", "applied")]
    sent = await bus.wait("sms.sent", challenge_id)
    assert sent["data"]["provider_message_id"] == sms["id"]
    assert bus.of("sms.failed", challenge_id) == []


async def test_a_status_callback_with_a_forged_signature_is_refused_and_changes_nothing(chain, devinbox, bus):
    e164, _ = random_mobile()
    event, _ = otp_requested(e164)
    await chain.publish(event)
    sms = await chain.sms_to(e164)
    before = await wait_sms_status(chain.db, challenge_of(event), "delivered")
    refused_before = metric(
        chain.stack, "convocations_sms_delivery_reports_total", provider="twilio", outcome="bad-signature"
    )

    params = twilio_params(devinbox, sms["id"], "undelivered", "30003")
    forged = twilio_signature("not-the-auth-token", chain.stack.url("sms-gateway") + TWILIO_STATUS_PATH, params)
    assert post_twilio_status(chain.stack, devinbox, params, signature=forged).status_code == 403
    assert post_twilio_status(chain.stack, devinbox, params, signature="").status_code == 403
    # Signed for another URL (replayed from elsewhere): refused too.
    other_url = twilio_signature(devinbox.auth_token, "https://elsewhere.example/webhooks/twilio/status", params)
    assert post_twilio_status(chain.stack, devinbox, params, signature=other_url).status_code == 403
    generic = json.dumps({"id": sms["id"], "status": "failed", "error_code": 30003}).encode()
    assert (
        http(
            "POST",
            chain.stack.url("sms-gateway") + GENERIC_STATUS_PATH,
            content=generic,
            timeout=10,
            headers={"X-Signature": generic_signature("guessed-token", generic)},
        ).status_code
        == 403
    )

    await asyncio.sleep(0.5)
    assert dict(await sms_row(chain.db, challenge_of(event))) == dict(before)
    assert await reports_of(chain.db, sms["id"]) == [("sent", "applied"), ("delivered", "applied")]
    assert bus.of("sms.failed", challenge_of(event)) == []
    assert (
        metric(chain.stack, "convocations_sms_delivery_reports_total", provider="twilio", outcome="bad-signature")
        == refused_before + 3
    )


async def test_a_repeated_or_late_callback_never_moves_a_delivered_sms_back(chain, devinbox, bus):
    e164, _ = random_mobile()
    event, _ = otp_requested(e164)
    await chain.publish(event)
    sms = await chain.sms_to(e164)
    await wait_sms_status(chain.db, challenge_of(event), "delivered")

    for status, code in (("delivered", None), ("sent", None), ("queued", None), ("undelivered", "30003")):
        assert (
            post_twilio_status(chain.stack, devinbox, twilio_params(devinbox, sms["id"], status, code)).status_code
            == 204
        )

    await asyncio.sleep(0.5)
    row = await sms_row(chain.db, challenge_of(event))
    assert (row["status"], row["error_code"]) == ("delivered", None)
    assert [o for _, o in await reports_of(chain.db, sms["id"])][2:] == ["stale"] * 4
    assert bus.of("sms.failed", challenge_of(event)) == []


async def test_an_undelivered_callback_fails_the_sms_with_the_provider_code_and_the_portal_says_so(
    chain, devinbox, bus
):
    e164, national = random_mobile()
    devinbox.inbox.sms_fail_delivery(30003)
    patient, challenge_id = await open_portal_and_request_code(chain, national)

    sms = await chain.sms_to(e164)
    row = await wait_sms_status(chain.db, challenge_id, "failed")
    assert (row["provider_message_id"], row["error_code"]) == (sms["id"], "30003")
    failed = await bus.wait("sms.failed", challenge_id)
    assert (failed["data"]["provider"], failed["data"]["provider_code"]) == ("twilio", "30003")
    assert failed["data"]["reason"].startswith("undelivered")
    assert failed["causation_id"] is not None

    await eventually(
        lambda: chain.db.fetchval("select sms_failed from access_portal.challenge where id = $1", challenge_id),
        what="the portal's news that the SMS failed",
    )
    page = patient.get(urlsplit(patient.page_url).path + "/code")
    assert "n’a pas pu être remis" in page.text  # the patient is told, in French, what happened

    # A repeated final report produces no second sms.failed.
    assert (
        post_twilio_status(
            chain.stack, devinbox, twilio_params(devinbox, sms["id"], "undelivered", "30003")
        ).status_code
        == 204
    )
    await asyncio.sleep(1.0)
    assert len(bus.of("sms.failed", challenge_id)) == 1


# --- retries, idempotency, destinations ----------------------------------------------------------


async def test_two_503s_then_success_give_exactly_one_sms_after_delayed_retries(chain, devinbox, bus):
    e164, _ = random_mobile()
    devinbox.inbox.sms_script("twilio", [503, 503])
    event, code = otp_requested(e164, language="de")
    await chain.publish(event)

    row = await wait_sms_status(chain.db, challenge_of(event), "delivered")
    assert row["attempts"] == 3
    assert await attempts_of(chain.db, challenge_of(event)) == [
        (1, "twilio", "transient"),
        (2, "twilio", "transient"),
        (3, "twilio", "accepted"),
    ]
    texts = sms_to(devinbox, e164)
    assert len(texts) == 1
    assert texts[0]["body"].startswith(f"{code} ist Ihr Code")
    assert texts[0]["body"].endswith(f"\n\n@portal.test #{code}")
    assert bus.of("sms.failed", challenge_of(event)) == []


async def test_a_redelivered_otp_requested_never_texts_the_code_twice(chain, devinbox, bus):
    e164, _ = random_mobile()
    event, _ = otp_requested(e164)
    await chain.publish(event)
    await wait_sms_status(chain.db, challenge_of(event), "delivered")
    # The same event again, and as a delayed-retry copy would come back (x-attempt set, inbox bypassed).
    await chain.publish(event)
    await publish_retry_copy(chain.exchange, event)
    barrier, _ = otp_requested(random_mobile()[0])
    await chain.publish(barrier)
    await wait_sms_status(chain.db, challenge_of(barrier), "queued", "sent", "delivered")
    await asyncio.sleep(0.5)
    assert len(sms_to(devinbox, e164)) == 1
    assert len(bus.of("sms.sent", challenge_of(event))) == 1


async def publish_retry_copy(exchange: str, event: dict) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.get_exchange(exchange, ensure=True)
        await ex.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                message_id=event["event_id"],
                content_type="application/json",
                headers={"x-attempt": 1},
            ),
            routing_key="otp.requested.v1",
        )


async def test_a_number_outside_the_allowed_countries_gets_no_sms_but_sms_failed(chain, devinbox, bus, stack):
    e164 = us_mobile()
    before = metric(stack, "convocations_sms_blocked_total", reason="country-not-allowed")
    event, _ = otp_requested(e164)
    await chain.publish(event)

    failed = await bus.wait("sms.failed", challenge_of(event))
    assert failed["data"]["provider"] == "none"
    assert failed["data"]["provider_code"] == "country-not-allowed"
    assert "US" in failed["data"]["reason"]
    row = await wait_sms_status(chain.db, challenge_of(event), "failed")
    assert (row["country"], row["error_code"], row["attempts"]) == ("US", "country-not-allowed", 0)
    assert sms_to(devinbox, e164) == []
    assert await attempts_of(chain.db, challenge_of(event)) == []
    assert metric(stack, "convocations_sms_blocked_total", reason="country-not-allowed") == before + 1


async def test_an_expired_code_is_not_texted(chain, devinbox, bus):
    e164, _ = random_mobile()
    event, _ = otp_requested(e164, expires_in=-1)
    await chain.publish(event)
    failed = await bus.wait("sms.failed", challenge_of(event))
    assert failed["data"]["provider_code"] == "expired"
    assert sms_to(devinbox, e164) == []


# --- with a failover provider, tight caps and DEBUG logs ------------------------------------------


@pytest.fixture(scope="class")
async def strict_gateway(stack, devinbox):
    async with gateway_with(
        stack,
        SMS_GENERIC_URL=devinbox.generic_messages_url,
        SMS_GENERIC_TOKEN=devinbox.generic_token,
        SMS_FAILOVER_AFTER="2",
        SMS_MAX_PER_NUMBER_HOUR="2",
        LOG_LEVEL="DEBUG",
    ):
        yield stack


@pytest.mark.usefixtures("strict_gateway")
class TestWithFailoverAndCaps:
    async def test_after_two_failures_at_twilio_the_generic_provider_sends_it_and_reports_delivery(
        self, chain, devinbox, bus
    ):
        e164, _ = random_mobile()
        devinbox.inbox.sms_script("twilio", [503, 503])
        event, code = otp_requested(e164, language="it")
        await chain.publish(event)

        row = await wait_sms_status(chain.db, challenge_of(event), "delivered")
        assert await attempts_of(chain.db, challenge_of(event)) == [
            (1, "twilio", "transient"),
            (2, "twilio", "transient"),
            (3, "generic", "accepted"),
        ]
        [sms] = sms_to(devinbox, e164)
        assert (sms["provider"], sms["reference"]) == ("generic", str(challenge_of(event)))
        assert sms["body"].endswith(f"@portal.test #{code}")
        assert (row["provider"], row["provider_message_id"]) == ("generic", sms["id"])
        assert [(c["status"], c["http_status"]) for c in await wait_callbacks(devinbox, sms["id"], 1)] == [
            ("delivered", 204)
        ]
        sent = await bus.wait("sms.sent", challenge_of(event))
        assert sent["data"]["provider"] == "generic"

    async def test_a_failed_generic_delivery_report_becomes_sms_failed_and_a_forged_one_is_refused(
        self, chain, devinbox, bus, stack
    ):
        e164, _ = random_mobile()
        devinbox.inbox.sms_script("twilio", [503, 503])
        devinbox.inbox.sms_fail_delivery(30005)
        event, _ = otp_requested(e164)
        await chain.publish(event)

        failed = await bus.wait("sms.failed", challenge_of(event))
        assert (failed["data"]["provider"], failed["data"]["provider_code"]) == ("generic", "30005")
        [sms] = sms_to(devinbox, e164)
        forged = json.dumps(
            {"id": sms["id"], "reference": sms["reference"], "status": "delivered", "error_code": None}
        ).encode()
        response = http(
            "POST",
            stack.url("sms-gateway") + GENERIC_STATUS_PATH,
            content=forged,
            timeout=10,
            headers={"X-Signature": generic_signature("guessed-token", forged)},
        )
        assert response.status_code == 403
        assert (await sms_row(chain.db, challenge_of(event)))["status"] == "failed"

    async def test_the_per_number_cap_blocks_the_third_code_in_an_hour_with_a_metric_and_no_number_logged(
        self, chain, devinbox, bus, stack
    ):
        e164, _ = random_mobile()
        before = metric(stack, "convocations_sms_blocked_total", reason="number-hourly-cap")
        events = [otp_requested(e164)[0] for _ in range(3)]
        for event in events:  # at once: the gateway handles them concurrently and must still count right
            await chain.publish(event)

        done = [
            await wait_sms_status(chain.db, challenge_of(e), "queued", "sent", "delivered", "failed") for e in events
        ]
        blocked = [r for r in done if r["error_code"] == "number-hourly-cap"]
        assert len(blocked) == 1 and blocked[0]["status"] == "failed"
        assert len(sms_to(devinbox, e164)) == 2
        failed = await bus.wait("sms.failed", blocked[0]["challenge_id"])
        assert failed["data"]["provider_code"] == "number-hourly-cap"
        assert metric(stack, "convocations_sms_blocked_total", reason="number-hourly-cap") == before + 1
        log = stack.log_file("sms-gateway").read_text()
        lines = [ln for ln in log.splitlines() if str(blocked[0]["challenge_id"]) in ln and "sms blocked" in ln]
        assert len(lines) == 1 and '"reason": "number-hourly-cap"' in lines[0]
        assert e164 not in log and e164[1:] not in log and e164[3:] not in log

    async def test_the_global_cap_blocks_every_code_once_reached(self, chain, devinbox, bus, stack):
        sent_last_hour = await chain.db.fetchval(
            "select count(*) from sms_gateway.sms where sent_at > now() - interval '1 hour'"
        )
        async with gateway_with(stack, SMS_MAX_GLOBAL_HOUR=str(sent_last_hour)):
            e164, _ = random_mobile()
            event, _ = otp_requested(e164)
            await chain.publish(event)
            failed = await bus.wait("sms.failed", challenge_of(event))
            assert failed["data"]["provider_code"] == "global-hourly-cap"
            assert metric(stack, "convocations_sms_blocked_total", reason="global-hourly-cap") == 1
        assert sms_to(devinbox, e164) == []

    async def test_neither_the_code_nor_the_number_ever_reaches_the_log_even_at_debug_level(
        self, chain, devinbox, bus, stack
    ):
        sent = []  # (number, code, challenge) of a success, a retried success, a failover and a failure
        for faults, failure in (([], None), ([503], None), ([503, 503], None), ([], 30003)):
            e164, _ = random_mobile()
            devinbox.inbox.sms_script("twilio", faults)
            if failure:
                devinbox.inbox.sms_fail_delivery(failure)
            event, code = otp_requested(e164)
            await chain.publish(event)
            await wait_sms_status(chain.db, challenge_of(event), "failed" if failure else "delivered")
            sent.append((e164, code, challenge_of(event)))

        log = stack.log_file("sms-gateway").read_text()
        for e164, code, challenge_id in sent:
            assert str(challenge_id) in log  # the lines are there, with their ids
            assert not re.search(rf"(?<![\w.]){code}(?!\w)", log), "an SMS code reached the log"
            for form in (e164, e164[1:], e164[3:], f"{e164[3:5]} {e164[5:8]} {e164[8:10]} {e164[10:]}"):
                assert form not in log, "a phone number reached the log"
        assert '"level": "debug"' in log  # DEBUG was really on
