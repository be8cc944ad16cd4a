"""The bare baseline for ``make bench``: the same two-hop chain with aio-pika and asyncpg only, and an SMTP sink."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import aio_pika
import aiosmtplib
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PREFETCH = 16


class SmtpSink:
    """A tiny SMTP server that accepts every message and keeps only the recipients and the time it took them.

    Both chains send to it, so neither pays for the development inbox's parsing and storing.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, float]] = []  # (recipient, time accepted), one per message accepted
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def start(self) -> SmtpSink:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def clear(self) -> None:
        self.received = []

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0, limit=2**26))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink\r\n")
        rcpts: list[str] = []
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line.split(b":", 1)[1].strip().split(b" ")[0].strip(b"<>").decode())
                    writer.write(b"250 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await reader.readuntil(b"\r\n.\r\n")  # discarded
                    now = time.time()
                    self.received.extend((r, now) for r in rcpts)
                    rcpts = []
                    writer.write(b"250 accepted\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:  # HELO, MAIL, RSET, NOOP
                    if verb in (b"MAIL", b"RSET"):
                        rcpts = []
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # The development inbox's reading interface, as far as the bench uses it.
    def emails(self) -> list[dict]:
        return [{"rcpt_tos": [r], "received_at_ts": t} for r, t in list(self.received)]


SCHEMA = """
create table if not exists bare_inbox (event_id text primary key, hop text not null);
create table if not exists bare_letters (id uuid primary key, email text not null, pdf bytea not null);
create table if not exists bare_sent (id uuid primary key, email text not null, sent_at timestamptz not null);
"""


async def _serve(hop: str, amqp_url: str, dsn: str, exchange_name: str, smtp_port: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=PREFETCH // 2)
    async with pool.acquire() as c:
        await c.execute("select pg_advisory_lock(42)")  # both hops start together: one creates the tables
        await c.execute(SCHEMA)
        await c.execute("select pg_advisory_unlock(42)")
    conn = await aio_pika.connect_robust(amqp_url)
    channel = await conn.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    key = "convocation.created.v1" if hop == "sealer" else "letter.sealed.v1"
    queue = await channel.declare_queue(f"{exchange_name}.{hop}", durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange, key)
    smtp = None

    async def seal(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        data = event["data"]
        pdf = base64.b64decode(data.get("document_pdf_base64") or "")
        async with pool.acquire() as c, c.transaction():
            claimed = await c.fetchval(
                "insert into bare_inbox values ($1, 'sealer') on conflict do nothing returning event_id",
                event["event_id"],
            )
            if claimed:
                await c.execute(
                    "insert into bare_letters values ($1, $2, $3)",
                    data["convocation_id"],
                    data["patient"]["email"],
                    pdf,
                )
        if claimed:
            body = json.dumps(
                {
                    "event_id": f"sealed-{event['event_id']}",
                    "id": data["convocation_id"],
                    "email": data["patient"]["email"],
                    "pdf": base64.b64encode(pdf).decode(),
                }
            ).encode()
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="letter.sealed.v1"
            )
        await message.ack()

    async def mail(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal smtp
        event = json.loads(message.body)
        async with pool.acquire() as c, c.transaction():
            claimed = await c.fetchval(
                "insert into bare_inbox values ($1, 'mailer') on conflict do nothing returning event_id",
                event["event_id"],
            )
            if claimed:
                await c.execute("insert into bare_sent values ($1, $2, now())", event["id"], event["email"])
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = "hospital@example.ch", event["email"], "Convocation"
                msg.set_content("Your convocation is attached.")
                msg.add_attachment(
                    base64.b64decode(event["pdf"]), maintype="application", subtype="pdf", filename="convocation.pdf"
                )
                async with smtp_lock:
                    if smtp is None or not smtp.is_connected:
                        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False)
                        await smtp.connect()
                    await smtp.send_message(msg)  # inside the transaction: a failure rolls the claim back
        await message.ack()

    smtp_lock = asyncio.Lock()  # one SMTP connection, as the project's mailer keeps one
    handler = seal if hop == "sealer" else mail

    async def guarded(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            await handler(message)
        except Exception as exc:  # noqa: BLE001 - the baseline requeues on any failure, like the services
            print(f"{hop}: {type(exc).__name__}", file=sys.stderr)
            await message.nack(requeue=True)

    async with queue.iterator() as messages:
        print("ready", flush=True)
        async for message in messages:
            asyncio.create_task(guarded(message))  # at most PREFETCH at once: the broker's limit


class BareChain:
    """The two bare hops as processes, like the services, on their own exchange and queues."""

    def __init__(self, amqp_url: str, dsn: str, exchange: str, smtp_port: int) -> None:
        self.amqp_url, self.dsn, self.exchange, self.smtp_port = amqp_url, dsn, exchange, smtp_port
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> BareChain:
        for hop in ("sealer", "mailer"):
            self.processes[f"bare-{hop}"] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devstack.baseline",
                    hop,
                    self.amqp_url,
                    self.dsn,
                    self.exchange,
                    str(self.smtp_port),
                ],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT / "tools")},
            )
        for proc in self.processes.values():
            if proc.stdout is None or proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("a bare hop did not start")
        return self

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.terminate()
        for proc in self.processes.values():
            proc.wait(10)
        asyncio.run(self._delete_queues())

    async def _delete_queues(self) -> None:
        conn = await aio_pika.connect(self.amqp_url)
        async with conn:
            channel = await conn.channel()
            for hop in ("sealer", "mailer"):
                await channel.queue_delete(f"{self.exchange}.{hop}")
            await channel.exchange_delete(self.exchange)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one hop of the bare baseline chain")
    parser.add_argument("hop", choices=["sealer", "mailer"])
    parser.add_argument("amqp_url")
    parser.add_argument("dsn")
    parser.add_argument("exchange")
    parser.add_argument("smtp_port", type=int)
    a = parser.parse_args()
    try:
        asyncio.run(_serve(a.hop, a.amqp_url, a.dsn, a.exchange, a.smtp_port))
    except KeyboardInterrupt:
        pass
