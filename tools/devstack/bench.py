"""``make bench``: figures for docs/architecture.md#performance, printed, never asserted.

Runs the four services as processes against the local RabbitMQ and Postgres (a throw-away database
and exchange), with the development inbox as SMTP server, and measures:
- throughput of convocation.created -> e-mail accepted by SMTP (1 KB and 150 KB PDFs);
- latency of that chain at half the measured rate (p50/p95/p99);
- portal page latency under a fixed request rate;
- the issuer's peak resident memory with four 10 MB letters in flight at once;
- resident memory of each service afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import aio_pika
import httpx

from devinbox import DevInbox
from devstack.sample import convocation_event, sample_pdf
from devstack.stack import ROOT, Stack

AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or the peak since the process started (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_letters_run(stack, inbox, count: int = 4) -> None:
    """Four letters of the documented maximum (10 MB) published at once: the issuer's peak memory."""
    from shared.contracts import MAX_PDF_BYTES

    pid = stack.processes["issuer"].pid
    before = rss_mb(pid)
    pdf = sample_pdf("x" * (MAX_PDF_BYTES - 1024))
    events = [convocation_event(email=f"big-{uuid.uuid4().hex[:10]}@example.ch", pdf=pdf) for _ in range(count)]
    inbox.clear()
    t0 = time.monotonic()
    sent = asyncio.run(publish_all(stack.exchange, events, None))
    del events, pdf
    received = wait_received(inbox, set(sent), timeout=120)
    print(f"Issuer with {count} letters of {MAX_PDF_BYTES // 2**20} MB in flight: RSS {before:.0f} MB before, "
          f"peak {rss_mb(pid, 'VmHWM'):.0f} MB, {len(received)}/{count} e-mails in {time.monotonic() - t0:.1f} s")
    print("  peak of the services that receive the sealed letters: " + ", ".join(
        f"{name} {rss_mb(stack.processes[name].pid, 'VmHWM'):.0f} MB" for name in ("mailer", "access-portal")))


async def publish_all(exchange: str, events: list[dict], rate: float | None) -> dict[str, float]:
    """Publish like an upstream system; returns publish time per e-mail address."""
    sent: dict[str, float] = {}
    conn = await aio_pika.connect_robust(AMQP)
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        ex = await channel.get_exchange(exchange)
        start = time.monotonic()
        for i, event in enumerate(events):
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[event["data"]["patient"]["email"]] = time.time()
            await ex.publish(aio_pika.Message(json.dumps(event).encode(), message_id=event["event_id"],
                                              delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                              content_type="application/json"),
                             routing_key="convocation.created.v1")
    return sent


def wait_received(inbox, addresses: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {a for m in inbox.emails() for a in m["rcpt_tos"]} & addresses
        if len(got) == len(addresses):
            break
        time.sleep(0.5)  # reading the inbox copies every message: poll gently, times come from stamps
    received = {}
    for m in inbox.emails():
        for a in m["rcpt_tos"]:
            if a in addresses:
                received[a] = datetime.fromisoformat(m["received_at"]).timestamp()
    return received


def chain_run(stack, inbox, n: int, pdf_kb: int, rate: float | None) -> tuple[float, list[float]]:
    pdf = sample_pdf("x" * max(0, pdf_kb * 1024 - 600))
    events = [convocation_event(email=f"b-{uuid.uuid4().hex[:10]}@example.ch", pdf=pdf) for _ in range(n)]
    inbox.clear()
    t0 = time.time()
    sent = asyncio.run(publish_all(stack.exchange, events, rate))
    received = wait_received(inbox, set(sent), timeout=max(60, n / 5))
    elapsed = max(received.values()) - t0 if received else float("nan")
    latencies = [received[a] - sent[a] for a in received]
    if len(received) < n:
        print(f"  ! only {len(received)} of {n} e-mails arrived")
    return len(received) / elapsed, latencies


async def portal_load(url: str, rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        async def one() -> None:
            t = time.perf_counter()
            r = await client.get(url)
            latencies.append(time.perf_counter() - t)
            assert r.status_code < 500

        tasks, start = [], time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description="Convocations benchmarks")
    parser.add_argument("-n", type=int, default=300, help="convocations per throughput run")
    parser.add_argument("--big-letters-only", action="store_true", help="only the 10 MB letters' memory figure")
    args = parser.parse_args()
    database = f"convocations_bench_{uuid.uuid4().hex[:6]}"
    subprocess.run([str(ROOT / "scripts/db-setup.sh"), database], check=True, capture_output=True)
    inbox = DevInbox().start()
    stack = Stack(database=database, exchange="bench", smtp_port=inbox.smtp_port, amqp_url=AMQP,
                  sms_provider_url=inbox.twilio_base_url, sms_account_sid=inbox.account_sid,
                  sms_auth_token=inbox.auth_token, log_dir=Path(tempfile.mkdtemp()) / "logs",
                  extra_env={"*": {"LOG_LEVEL": "WARNING", "OUTBOX_POLL_SECONDS": "1"}})
    try:
        stack.start()
        chain_run(stack, inbox.inbox, 20, 1, None)  # warm-up
        big_letters_run(stack, inbox.inbox)  # first: the peak (VmHWM) is the process's since its start
        if args.big_letters_only:
            return
        print(f"Chain convocation.created -> e-mail accepted ({os.cpu_count()} cores, services as processes)")
        rates = {}
        for kb in (1, 150):
            rate, lat = chain_run(stack, inbox.inbox, args.n, kb, None)
            rates[kb] = rate
            print(f"  throughput, {kb:>3} KB PDF: {rate:7.1f} convocations/s  (n={args.n}, "
                  f"p50 {percentile(lat, 50) * 1000:.0f} ms under saturation)")
        half = rates[1] / 2
        _, lat = chain_run(stack, inbox.inbox, int(half * 10), 1, half)
        print(f"  latency at {half:.0f}/s (half the max), 1 KB: p50 {percentile(lat, 50) * 1000:.0f} ms, "
              f"p95 {percentile(lat, 95) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms")
        for path in ("/m/00000000-0000-0000-0000-000000000000", "/healthz"):  # a page read + audit insert
            lat = asyncio.run(portal_load(stack.url("access-portal") + path, 200, 5))
            if path.startswith("/m/"):
                lat = [x for x in lat]
            print(f"  portal GET {path.split('/')[1]:<8} at 200 req/s: p50 {statistics.median(lat) * 1000:.1f} ms, "
                  f"p99 {percentile(lat, 99) * 1000:.1f} ms")
        print("Resident memory after the runs:")
        for name, proc in stack.processes.items():
            print(f"  {name:<14} {rss_mb(proc.pid):6.1f} MB")
    finally:
        stack.stop()
        inbox.stop()
        subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c",
                        f'drop database if exists "{database}" with (force)'], capture_output=True)


if __name__ == "__main__":
    main()
