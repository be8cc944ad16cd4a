"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the chain's four services (issuer, mailer, sms-gateway, access-portal) during a run: the funnel
queries return this run's own numbers, and an SMTP relay that refuses everything fires the alert of
deploy/prometheus/alerts.yml (its windows and `for:` shortened, the expression otherwise the same)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import random_email

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("issuer", "mailer", "sms-gateway", "access-portal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shortened(rule: dict) -> dict:
    """The same alert on a test's time scale: range windows of 1 minute, `for:` of 5 seconds."""
    return {**rule, "expr": re.sub(r"\[\d+[smh]\]", "[1m]", rule["expr"]), "for": "5s"}


def alert_rules(*names: str) -> list[dict]:
    """The named alerts of deploy/prometheus/alerts.yml, as shipped."""
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if r.get("alert") in names]


@contextlib.contextmanager
def running_prometheus(stack, rules: list[dict], home: Path, services=SERVICES):
    """Debian's Prometheus scraping the stack's services every second and evaluating ``rules``; its URL."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("Debian's prometheus is not installed: scripts/bootstrap.sh --with-browser installs it")
    (home / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": rules}]}))
    targets = [{"targets": [stack.url(s).removeprefix("http://")], "labels": {"service": s}} for s in services]
    (home / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(home / "rules.yml")],
        "scrape_configs": [{"job_name": "convocations", "honor_labels": True, "static_configs": targets}],
    }))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=subprocess.DEVNULL, stderr=(home / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (home / "prometheus.log").read_text()[-2000:]
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    rules = [shortened(r) for r in alert_rules("ConvocationsSmtpFailureRate")]
    with running_prometheus(stack, rules, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def firing(url: str, alertname: str) -> list[dict]:
    """The alerts of that name firing now."""
    return [a for a in httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def query(url: str, promql: str) -> float | None:
    result = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def settled(url: str, promql: str, until, timeout: float = 60) -> float | None:
    """The query's value once ``until(value)`` holds (Prometheus scrapes every second)."""
    value = None
    for _ in range(int(timeout * 2)):
        value = query(url, promql)
        if until(value):
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql} stayed at {value}")


async def test_funnel_queries_return_this_runs_numbers_and_smtp_down_fires_its_alert(chain, prometheus):
    for service in SERVICES:  # every service scraped
        await settled(prometheus, f'up{{job="convocations",service="{service}"}}', lambda v: v == 1)
    funnel = 'sum(convocations_funnel_total{{stage="{}"}})'
    await asyncio.sleep(2)  # what earlier tests left in flight has landed
    before = {stage: query(prometheus, funnel.format(stage)) or 0.0 for stage in ("created", "e-mailed", "bounced", "paper")}

    events = [chain.event() for _ in range(3)]
    for event in events:
        await chain.publish(event)
    for event in events:
        await chain.wait_status(event["data"]["convocation_id"], "e-mailed", timeout=30)
    for stage, n in (("created", 3), ("e-mailed", 3)):
        await settled(prometheus, funnel.format(stage), lambda v, s=stage, n=n: v == before[s] + n)

    # The SMTP relay goes down: it refuses every recipient until the end of the test.
    chain.inbox.smtp_script(["421 4.3.0 Service not available"] * 200)
    try:
        down = [chain.event(email=random_email()) for _ in range(3)]
        for event in down:
            await chain.publish(event)
        for _ in range(180):
            if fired := firing(prometheus, "ConvocationsSmtpFailureRate"):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("ConvocationsSmtpFailureRate never fired while the relay refused everything")
        assert fired[0]["labels"]["severity"] == "critical"
        assert fired[0]["annotations"]["runbook_url"] == "docs/runbooks.md#convocationssmtpfailurerate"
        # The exhausted letters bounce and go to paper: each counted once, whatever the number of attempts.
        await settled(prometheus, funnel.format("bounced"), lambda v: v == before["bounced"] + 3)
        await settled(prometheus, funnel.format("paper"), lambda v: v == before["paper"] + 3)
        await settled(prometheus, funnel.format("created"), lambda v: v == before["created"] + 6)
    finally:
        chain.inbox.smtp_script([])
