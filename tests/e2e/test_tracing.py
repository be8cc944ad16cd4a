"""Issue 18, item 8: one trace per letter. The services export their spans over OTLP/HTTP to a real
receiver (tools/devstack/otlp.py, decoding with opentelemetry-proto); the hospital publishes a
convocation in a trace of its own, and everything that follows for that letter, to the issuer taking the
patient's download (document.released), is in that trace: each hop's consumer a child of the publish
that sent it, the PostgreSQL queries children of the handler, the patient's requests SERVER spans."""

from __future__ import annotations

import json
import os
import uuid

import aio_pika
import pytest

from devstack.otlp import OtlpReceiver
from tests.conftest import AMQP_URL, inbox_stack
from tests.e2e.conftest import code_of
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
EXCHANGE = "test-trace"  # its own queues: the session's stack does not trace


async def publish_in_trace(event: dict, trace_id: str, span_id: str) -> None:
    """As a hospital system that traces publishes: a W3C traceparent in the message headers."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(event).encode(),
                content_type="application/json",
                message_id=event["event_id"],
                correlation_id=event["correlation_id"],
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
            ),
            routing_key="convocation.created.v1",
            mandatory=True,
        )


async def spans_until(otlp: OtlpReceiver, until, timeout: float = PATIENCE):  # batched exports, on two busy cores
    def shown():
        spans = otlp.spans()
        return spans if until(spans) else None

    return await eventually(
        shown,
        timeout,
        what="the expected spans",
        seen=lambda: sorted({(s.service, s.kind, s.name) for s in otlp.spans()}),
    )


async def test_one_letter_is_one_trace_from_convocation_created_to_document_released(
    chain, own_database, devinbox, tmp_path
):
    database, db = own_database
    with OtlpReceiver() as otlp:
        stack = inbox_stack(
            devinbox,
            database=database,
            exchange=EXCHANGE,
            log_dir=tmp_path,
            amqp_url=AMQP_URL,
            extra_env={
                "*": {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    # Every query is a span (the outbox relays poll twice a second), and the SDK drops the spans
                    # that find its queue full (2048 by default): a receiver slow to take a batch (it runs in
                    # this test's process, on two busy cores) must not cost the letter's spans.
                    "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
                    # Nor may it make the exporter give up on a batch: each export waits 10 s by default.
                    "OTEL_EXPORTER_OTLP_TIMEOUT": "60",
                    "LOG_LEVEL": "INFO",
                    "SMS_RETRY_DELAYS": "1,2,3",
                    "FORWARDED_ALLOW_IPS": "127.0.0.0/8",
                }
            },
        )
        try:
            stack.start(["issuer", "mailer", "access-portal", "sms-gateway"])
            trace_id, hospital_span = os.urandom(16).hex(), os.urandom(8).hex()
            event = chain.event()
            cid = event["data"]["convocation_id"]
            await publish_in_trace(event, trace_id, hospital_span)
            mail = await chain.email_to(event["data"]["patient"]["email"])
            patient = PatientClient(find_link(mail["text"]))
            await eventually(  # the portal stores the message beside the mailer sending it
                lambda: db.fetchval("select true from access_portal.message where convocation_id = $1", uuid.UUID(cid)),
                what="the portal's copy of the message",
            )
            phone = "+41" + event["data"]["patient"]["mobile"].replace(" ", "")[1:]
            assert patient.request_code(event["data"]["patient"]["mobile"]).status_code == 303
            code = code_of(await chain.sms_to(phone))
            assert patient.enter_code(code).status_code == 303
            assert patient.download().status_code == 200
            await eventually(
                lambda: db.fetchval(
                    "select downloaded_at is not null from issuer.convocation where id = $1", uuid.UUID(cid)
                ),
                what="the issuer's record of the download",
            )

            def released_taken(spans) -> bool:
                # The issuer took the release, and the portal exported the download's span (it ends with the
                # response, and may reach the receiver after the issuer's).
                return any(
                    s.service == "issuer" and s.kind == "CONSUMER" and "document.released" in s.name
                    for s in spans
                    if s.trace_id == trace_id
                ) and any(s.service == "access-portal" and s.kind == "SERVER" and "download" in s.name for s in spans)

            try:
                spans = await spans_until(otlp, released_taken)
            except AssertionError:
                for schema in ("mailer", "access_portal", "issuer"):
                    print(
                        schema,
                        [
                            dict(r)
                            for r in await db.fetch(
                                f"select event_type, attempts, last_error, headers from {schema}.outbox"
                            )
                        ],
                    )
                raise
            # From a log line to its trace: the lines logged while handling the letter carry its trace id.
            changed = [
                json.loads(line)
                for line in stack.log_file("issuer").read_text().splitlines()
                if '"status changed"' in line and event["correlation_id"] in line
            ]
            assert changed and {line.get("trace_id") for line in changed} == {trace_id}, changed
        finally:
            stack.stop()
    letter = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in letter}
    hops = {(s.service, s.kind, s.attributes.get("convocations.event_type")) for s in letter}
    for hop in [
        ("issuer", "CONSUMER", "convocation.created"),
        ("issuer", "PRODUCER", "message.sealed"),
        ("issuer", "PRODUCER", "email.requested"),
        ("mailer", "CONSUMER", "email.requested"),
        ("access-portal", "CONSUMER", "message.sealed"),
        ("mailer", "PRODUCER", "email.sent"),
        ("issuer", "CONSUMER", "email.sent"),
        ("access-portal", "PRODUCER", "document.released"),
        ("issuer", "CONSUMER", "document.released"),
    ]:
        assert hop in hops, f"{hop} is not in the letter's trace: {sorted(hops, key=str)}"
    # The first hop continues the hospital's span; every later consumer is a child of the publish that sent it.
    (created,) = [
        s
        for s in letter
        if s.kind == "CONSUMER" and s.attributes.get("convocations.event_type") == "convocation.created"
    ]
    assert created.parent_id == hospital_span
    for consumer in (s for s in letter if s.kind == "CONSUMER" and s is not created):
        producer = by_id.get(consumer.parent_id)
        assert producer is not None and producer.kind == "PRODUCER", consumer
        assert producer.attributes["convocations.event_type"] == consumer.attributes["convocations.event_type"]
    # PostgreSQL: the handlers' queries are spans of the letter's trace, under its consumer spans.
    queries = [s for s in letter if s.kind == "CLIENT" and s.attributes.get("db.system") == "postgresql"]
    assert {s.service for s in queries} >= {"issuer", "mailer", "access-portal"}
    assert all(by_id.get(q.parent_id) is not None for q in queries)
    # HTTP in: the patient's download is a SERVER span of its own, linked from the release it caused.
    downloads = [s for s in spans if s.service == "access-portal" and s.kind == "SERVER" and "download" in s.name]
    assert downloads and all(d.trace_id != trace_id for d in downloads)
    (released,) = [s for s in letter if s.name == "pdf released"]
    assert any(link in {(d.trace_id, d.span_id) for d in downloads} for link in released.links)
    # No secret or patient data in any span: queries carry placeholders, never the values bound.
    text = json.dumps([s.attributes for s in spans] + [s.name for s in spans])
    for secret in (event["data"]["patient"]["email"], event["data"]["patient"]["name"], code, phone):
        assert secret not in text
