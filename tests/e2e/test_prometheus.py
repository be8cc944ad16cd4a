"""The alert rules and the dashboard judged by a real Prometheus against the live services of the end-to-end
run (tests/e2e/prometheus.py: Debian's Prometheus and blackbox exporter, started by the session's
``prometheus`` fixture for these tests, which run after every other end-to-end test; each service exposes
what it has counted since its last start).

- Every selector of every recording rule, alert and dashboard panel selects series the live services,
  the broker and the blackbox exporter really exposed (issue 18: ``le="300"`` where prometheus-client
  writes ``le="300.0"`` kept two SLO alerts and two panels silent for good), and every SLI is recorded.
- What the run exposed has not drifted from deploy/prometheus/series.yml, the label sets the promtool
  unit tests are checked against (``RECORD_SERIES=1``, i.e. ``make prometheus-series``, rewrites it).
- Alerts fire when their cause is induced, on the shipped rules at a test's time scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from devstack import series
from devstack.stack import SERVICES
from tests.conftest import DB_PORT
from tests.e2e.conftest import random_email, random_mobile
from tests.e2e.prometheus import rule_groups
from tests.e2e.proxy import TcpProxy
from tests.e2e.test_portal_helpers import letter
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/convocations-delivery.json"
# Metrics of exporters that exist only in a Kubernetes cluster (kube-state-metrics): nothing here exports them.
KUBERNETES_ONLY = {"kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}
# Alerts this tier does not induce, and why: each is proven by its promtool unit test
# (deploy/prometheus/alerts.test.yml, inputs checked against series.yml) and by the selector check below.
NOT_INDUCED = {
    "ConvocationsPodsNotReady": "needs kube-state-metrics (Kubernetes)",
    "ConvocationsPostgresDown": "every service's database at once: the session's stack would stop for all",
    "ConvocationsRabbitmqDown": "the session's broker down for everyone (tests/e2e/test_outages.py cuts its own)",
    "ConvocationsRabbitmqAlarm": "a memory alarm blocks every publisher of the session",
    "ConvocationsMemoryHigh": "200 MB resident for its window: a load the suite's time cannot afford",
    "ConvocationsConsumerErrors": "no event makes a handler crash on purpose",
    "ConvocationsQueueBacklog": "1000 letters waiting in a work queue",
    "ConvocationsQueueWithoutConsumer": "every consumer of a session queue gone",
    "ConvocationsReissueUnanswered": "a resend left unanswered by the development hospital system",
    "ConvocationsOutboxBacklog": "100 events unpublished",
    "ConvocationsOutboxStale": "the session's broker unreachable for the services",
    "ConvocationsSweeperStalled": "the issuer's database unreachable",
    "ConvocationsSmsFailureRate": "the SMS provider failing a fifth of sends",
    "ConvocationsOtpFailureSpike": "thirty wrong codes within the window",
    "ConvocationsSmsPumpingSuspected": "twenty SMS refused by the hourly caps",
    "ConvocationsSloSlowBurn": "its windows become the fast burn's 30 s on this time scale: nothing more to see",
    "ConvocationsPaperLate": "a letter past its paper deadline",
    # tests/e2e/test_period_keys.py stops its own stack's key store and reads the issuer's counter.
    "ConvocationsPeriodKeyUnavailable": "the session's key store stopped: every letter of the session dead-lettered",
    "ConvocationsPeriodKeyDestructionOverdue": "a key store whose volume refuses to destroy a key",
}


def alert_names() -> set[str]:
    return {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}


async def firing(prometheus, alertname: str, labels: dict[str, str], timeout: float = 90) -> dict:
    """The alert, once it fires with these labels (its rule's ``for`` comes on top of the chain's time)."""

    def fired() -> dict | None:
        return next(
            (
                alert
                for alert in prometheus.firing()
                if alert["labels"]["alertname"] == alertname and labels.items() <= alert["labels"].items()
            ),
            None,
        )

    return await eventually(
        fired,
        timeout,
        every=0.5,
        what=f"{alertname} {labels} firing",
        seen=lambda: f"firing: {[(a['labels']['alertname'], a['labels']) for a in prometheus.firing()]}",
    )


async def settled(prometheus, promql: str, until, timeout: float = PATIENCE) -> float | None:
    """The query's value once ``until(value)`` holds (Prometheus scrapes every second)."""
    value = None

    def holds() -> bool:
        nonlocal value
        value = prometheus.value(promql)
        return bool(until(value))

    await eventually(
        holds, timeout, every=0.5, what=f"the expected value of {promql}", seen=lambda: f"it stayed at {value}"
    )
    return value


async def test_funnel_queries_return_this_runs_numbers_and_smtp_down_fires_its_alert(chain, prometheus):
    for service in SERVICES:  # every service scraped
        await settled(prometheus, f'up{{job="convocations",service="{service}"}}', lambda v: v == 1)
    funnel = 'sum(convocations_funnel_total{{stage="{}"}})'
    await asyncio.sleep(2)  # what earlier tests left in flight has landed
    before = {
        stage: prometheus.value(funnel.format(stage)) or 0.0 for stage in ("created", "e-mailed", "bounced", "paper")
    }
    events = [chain.event() for _ in range(3)]
    for event in events:
        await chain.publish(event)
    for event in events:
        await chain.wait_status(event["data"]["convocation_id"], "e-mailed")
    for stage, n in (("created", 3), ("e-mailed", 3)):
        await settled(prometheus, funnel.format(stage), lambda v, s=stage, n=n: v == before[s] + n)

    # The SMTP relay goes down: it refuses every recipient until the end of the test. The print room's staff
    # are away too: the paper letters that follow wait in its queue.
    chain.inbox.smtp_script(["421 4.3.0 Service not available"] * 200)
    chain.print_room.paused.set()
    try:
        down = [chain.event(email=random_email()) for _ in range(3)]
        for event in down:
            await chain.publish(event)
        alert = await firing(prometheus, "ConvocationsSmtpFailureRate", {})
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#convocationssmtpfailurerate"
        # The exhausted letters bounce and go to paper: each counted once, whatever the number of attempts.
        await settled(prometheus, funnel.format("bounced"), lambda v: v == before["bounced"] + 3)
        await settled(prometheus, funnel.format("paper"), lambda v: v == before["paper"] + 3)
        await settled(prometheus, funnel.format("created"), lambda v: v == before["created"] + 6)
        # Nobody collects them: the print room's queue is not emptied within the (scaled) window.
        unread = await firing(
            prometheus,
            "ConvocationsPrintRoomQueueUnread",
            {"queue": f"{chain.exchange}.print-room.postal.requested.v1"},
        )
        assert unread["labels"]["severity"] == "warning"
    finally:
        chain.inbox.smtp_script([])
        chain.print_room.paused.clear()


async def test_alerts_fire_when_their_cause_is_induced(chain, prometheus, stack, tmp_path):
    """A portal replica loses its database (5xx and a failing /readyz), a malformed event is dead-lettered,
    then the replica dies and a scrape target vanishes: each alert fires with the labels an on-call reads."""
    assert alert_names() - set(NOT_INDUCED) == INDUCED | {
        "ConvocationsSmtpFailureRate",
        "ConvocationsPrintRoomQueueUnread",
    }, "update NOT_INDUCED"
    with TcpProxy(DB_PORT) as proxy:
        extra = {
            **stack.extra_env,
            "access-portal": {
                **stack.extra_env.get("access-portal", {}),
                "DATABASE_URL": f"postgresql://access_portal:access_portal@127.0.0.1:{proxy.port}/{stack.database}",
            },
        }
        replica = dataclasses.replace(stack, ports={}, processes={}, log_dir=tmp_path, extra_env=extra)
        replica_url = replica.url("access-portal")
        replica_host = replica_url.removeprefix("http://")
        watched = {name: list(urls) for name, urls in prometheus.services.items()}
        try:
            replica.start(["access-portal"])
            prometheus.watch({**watched, "access-portal": [*watched["access-portal"], replica_url]})
            await settled(prometheus, f'up{{instance="{replica_host}"}}', lambda v: v == 1)
            proxy.cut()
            event_id = str(uuid.uuid4())
            await chain.publish(b"{not json", message_id=event_id, routing_key="convocation.created.v1")
            async with httpx.AsyncClient(timeout=10) as client:

                async def failing_requests() -> None:
                    while True:
                        with contextlib.suppress(httpx.HTTPError):  # the replica fails, however it answers
                            await client.get(f"{replica_url}/m/{uuid.uuid4()}")
                        await asyncio.sleep(0.1)

                load = asyncio.create_task(failing_requests())
                try:
                    await settled(
                        prometheus,
                        f'sum(http_requests_total{{instance="{replica_host}",status="5xx"}})',
                        lambda v: (v or 0) > 0,
                    )
                    alerts = await asyncio.gather(
                        firing(
                            prometheus,
                            "ConvocationsServiceNotReady",
                            {"service": "access-portal", "instance": f"{replica_url}/readyz"},
                        ),
                        firing(prometheus, "ConvocationsSloFastBurn", {"slo": "portal-availability"}),
                        firing(
                            prometheus,
                            "ConvocationsDeadLettered",
                            {
                                "service": "issuer",
                                "reason": "malformed-json",
                                "queue": f"{stack.exchange}.issuer.convocation.created.v1",
                            },
                        ),
                        firing(
                            prometheus,
                            "ConvocationsDeadLettersWaiting",
                            {"queue": f"{stack.exchange}.issuer.convocation.created.v1.dlq"},
                        ),
                        # The replica's outbox relay cannot reach its database either.
                        firing(
                            prometheus,
                            "ConvocationsOutboxRelayStalled",
                            {"service": "access-portal", "instance": replica_host},
                        ),
                    )
                finally:
                    load.cancel()
            assert [a["labels"]["severity"] for a in alerts] == [
                "critical",
                "critical",
                "warning",
                "warning",
                "critical",
            ]
            # The replica dies; a scrape target vanishes (the secretariat's, from the configuration).
            replica.stop()
            prometheus.watch(
                {
                    **{n: u for n, u in watched.items() if n != "secretariat"},
                    "access-portal": [*watched["access-portal"], replica_url],
                }
            )
            down, missing = await asyncio.gather(
                firing(prometheus, "ConvocationsServiceDown", {"instance": replica_host}),
                firing(prometheus, "ConvocationsTargetMissing", {"job": "convocations", "service": "secretariat"}),
            )
            assert down["annotations"]["summary"] == (f"access-portal is down: Prometheus cannot scrape {replica_host}")
            for alert in (*alerts, down, missing):
                name = alert["labels"]["alertname"]
                assert alert["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        finally:
            replica.stop()
            prometheus.watch(watched)


INDUCED = {
    "ConvocationsServiceNotReady",
    "ConvocationsSloFastBurn",
    "ConvocationsDeadLettered",
    "ConvocationsDeadLettersWaiting",
    "ConvocationsServiceDown",
    "ConvocationsTargetMissing",
    "ConvocationsOutboxRelayStalled",
    "ConvocationsGatewayDeadLettered",
}


async def test_a_letter_the_gateway_accepted_and_the_issuer_never_sealed_pages(chain, prometheus, hospital):
    """The hospital gateway acknowledged (AA) a letter the issuer then parked (active content in its PDF): the
    gateway's sweep dead-letters it and ConvocationsGatewayDeadLettered pages, naming the hospital system."""
    from tests.e2e.test_hospital_gateway import siu
    from tests.e2e.test_mail_security import pdf_with_open_action_javascript

    appointment = f"APT-{uuid.uuid4().hex[:8]}"
    ack = hospital.send_hl7(
        siu(
            "siu-s12.hl7",
            appointment=appointment,
            email=random_email(),
            mobile=random_mobile()[0],
            pdf=pdf_with_open_action_javascript(),
        )
    )
    assert "MSA|AA|" in ack, ack
    alert = await firing(prometheus, "ConvocationsGatewayDeadLettered", {"system": "dev-his", "reason": "not-sealed"})
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#convocationsgatewaydeadlettered"


def dashboard_queries() -> list[str]:
    queries = []
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$service", ".*")):
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


async def test_every_rule_and_panel_selects_live_series_and_every_sli_is_recorded(chain, prometheus):
    # One patient's journey (e-mail, code by SMS after a retry, the document): with this file's other tests
    # (dead letters, SMTP failures, a portal's 5xx), the checks hold for this file alone.
    mail = await letter(chain)
    chain.inbox.sms_script("twilio", [503])  # the provider fails the first send once: retried, counted
    assert mail.patient.request_code(mail.national).status_code == 303
    assert mail.patient.enter_code(await mail.code(1)).status_code == 303
    assert mail.patient.download().status_code == 200
    await settled(prometheus, "sum(convocations_code_handoff_seconds_count)", lambda v: (v or 0) > 0)
    await asyncio.sleep(2)  # the last scrapes and rule evaluations
    live = series.record(prometheus.series('{job=~".+"}'))
    if os.environ.get("RECORD_SERIES"):
        series.write(live)
    expressions = [r["expr"] for g in rule_groups() for r in g["rules"]] + dashboard_queries()
    dead = set()
    for expr in expressions:
        for selector in series.selectors(expr):
            name = selector.split("{")[0]
            if name not in KUBERNETES_ONLY and not prometheus.series(selector):
                dead.add(selector)
    assert not dead, f"selectors that match no series the live services exposed: {sorted(dead)}"
    objectives = {
        r["labels"]["slo"] for g in rule_groups() for r in g["rules"] if r.get("record") == "slo:objective:ratio"
    }
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                slo = rule.get("labels", {}).get("slo")
                recorded = prometheus.series(f'{rule["record"]}{{slo="{slo}"}}' if slo else rule["record"])
                assert recorded, f"{rule['record']} {slo}: the rule never returned a sample"
                assert slo in objectives
    recorded = series.load()
    drift = []
    for name, entry in live.items():
        if name not in recorded:
            drift.append(f"new metric {name}")
            continue
        for shape in entry["shapes"]:
            if shape not in recorded[name]["shapes"]:
                drift.append(f"{name}: labels {shape}, recorded {recorded[name]['shapes']}")
        for label, values in entry["values"].items():
            new = set(values) - set(recorded[name]["values"].get(label, []))
            if new:
                drift.append(f"{name}: {label} values {sorted(new)} not recorded")
    assert not drift, (
        "the live metrics drifted from deploy/prometheus/series.yml (make prometheus-series): " + "; ".join(drift[:30])
    )
