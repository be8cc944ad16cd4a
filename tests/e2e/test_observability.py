"""What the SRE reads on /metrics: a funnel that counts each convocation once, portal HTTP metrics by
route template, liveness timestamps and dependency health."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import http
from tests.e2e.conftest import code_of, random_mobile
from tests.patient import PatientClient, find_link
from tests.waiting import eventually

pytestmark = __import__("pytest").mark.e2e
SERVICES = ("issuer", "mailer", "sms-gateway", "access-portal")


def scrape(stack) -> dict[tuple[str, frozenset], float]:
    """Every sample of the chain's services' /metrics, keyed by (name, labels) with the service added."""
    samples: dict[tuple[str, frozenset], float] = {}
    for service in SERVICES:
        text = http("GET", stack.url(service) + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, frozenset({**s.labels, "service": service}.items()))
                samples[key] = s.value
    return samples


def total(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def funnel(samples) -> dict[str, float]:
    stages = (
        "created",
        "sealed",
        "e-mailed",
        "bounced",
        "code-requested",
        "code-sent",
        "verified",
        "downloaded",
        "paper",
    )
    return {stage: total(samples, "convocations_funnel_total", stage=stage) for stage in stages}


async def test_retries_and_repeats_count_each_convocation_once_per_funnel_stage(chain):
    before = scrape(chain.stack)
    e164, national = random_mobile()
    event = chain.event(mobile=national)
    cid = event["data"]["convocation_id"]
    chain.inbox.smtp_script(["451 4.3.0 Mailbox busy, try again later"])  # one SMTP retry copy
    chain.inbox.sms_script("twilio", [503])  # one SMS retry copy

    await chain.publish(event)
    await chain.publish(event)  # the hospital's system publishes the same event again
    mail = await chain.email_to(event["data"]["patient"]["email"])
    await chain.wait_status(cid, "e-mailed")
    patient = PatientClient(find_link(mail["text"]))
    assert patient.open_link().status_code == 200
    assert patient.request_code(national).status_code == 303
    sms = await chain.sms_to(e164)
    assert patient.enter_code(code_of(sms)).status_code == 303
    assert patient.download("pdf").status_code == 200
    assert patient.download("pdf").status_code == 200  # a second download is not a second conversion
    await chain.wait_status(cid, "downloaded")

    # The issuer counts a stage after the transaction recording it commits: the status shows a moment before.
    after = await eventually(
        lambda: (s := scrape(chain.stack)) and funnel(s)["downloaded"] > funnel(before)["downloaded"] and s,
        what="the download counted in the funnel",
    )
    moved = {stage: after_n - funnel(before)[stage] for stage, after_n in funnel(after).items()}
    assert moved == {
        "created": 1,
        "sealed": 1,
        "e-mailed": 1,
        "bounced": 0,
        "code-requested": 1,
        "code-sent": 1,
        "verified": 1,
        "downloaded": 1,
        "paper": 0,
    }
    # The retry copies went out, but as retries: "events of type email.requested" still says one.
    assert (
        total(after, "convocations_retries_scheduled_total", type="email.requested")
        - total(before, "convocations_retries_scheduled_total", type="email.requested")
        == 1
    )
    assert (
        total(after, "convocations_retries_scheduled_total", type="otp.requested")
        - total(before, "convocations_retries_scheduled_total", type="otp.requested")
        == 1
    )
    assert (
        total(after, "convocations_events_published_total", service="issuer", type="message.sealed")
        - total(before, "convocations_events_published_total", service="issuer", type="message.sealed")
        == 1
    )
    # Chain latency is observed once per stage too.
    assert (
        total(after, "convocations_chain_latency_seconds_count", stage="e-mailed")
        - total(before, "convocations_chain_latency_seconds_count", stage="e-mailed")
        == 1
    )
    assert (
        total(after, "convocations_code_handoff_seconds_count")
        - total(before, "convocations_code_handoff_seconds_count")
        == 1
    )


async def test_portal_requests_are_measured_by_route_template_without_the_message_id(chain):
    event = chain.event()
    await chain.publish(event)
    mail = await chain.email_to(event["data"]["patient"]["email"])
    link = find_link(mail["text"])
    message_id = link.split("/m/")[1].split("#")[0]
    patient = PatientClient(link)
    before = scrape(chain.stack)
    assert patient.open_link().status_code == 200
    assert http("GET", chain.stack.url("access-portal") + "/no/such/page", timeout=5).status_code == 404
    after = scrape(chain.stack)

    def moved(name, **labels):
        return total(after, name, service="access-portal", **labels) - total(
            before, name, service="access-portal", **labels
        )

    assert moved("http_requests_total", handler="/m/{raw_id}", method="GET", status="2xx") == 1
    assert moved("http_request_duration_seconds_count", handler="/m/{raw_id}", method="GET") == 1
    assert moved("http_request_duration_seconds_bucket", handler="/m/{raw_id}", method="GET", le="0.3") <= 1
    assert moved("http_requests_total", handler="none", status="4xx") == 1  # unknown paths share one series
    text = http("GET", chain.stack.url("access-portal") + "/metrics", timeout=5).text
    assert message_id not in text and "/no/such/page" not in text
    assert 'handler="/metrics"' not in text  # scrapes and probes are not patients' requests


async def test_liveness_and_dependency_gauges_are_fresh_on_every_service(chain):
    samples = scrape(chain.stack)
    now = time.time()
    for service in SERVICES:
        stamp = total(samples, "convocations_outbox_last_success_timestamp_seconds", service=service)
        assert now - 30 < stamp <= now + 1, f"{service}'s relay has not reported a good pass"
        for dependency in ("database", "broker"):
            assert total(samples, "convocations_dependency_up", service=service, dependency=dependency) == 1
    sweeper = total(
        samples, "convocations_periodic_last_success_timestamp_seconds", service="issuer", task="issuer-sweeper"
    )
    assert now - 30 < sweeper <= now + 1
    assert total(samples, "convocations_paper_overdue", service="issuer") == 0
    # The error outcome is exported before the first error, so that rate() sees the first one.
    assert (
        "convocations_events_consumed_total",
        frozenset({"service": "mailer", "type": "email.requested", "outcome": "error"}.items()),
    ) in samples
