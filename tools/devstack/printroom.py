"""The development print room: what the hospital's print room does with paper letters, on the bus.

It reads its queues (postal.requested, postal.cancelled), opens each letter with its private key (the
development key the issuer's default PRINT_ROOM_PUBLIC_KEY belongs to), keeps it until a print run, and
reports back as the broker user ``print-room``: postal.printed, then postal.posted at the next run, and
postal.returned when the post brings a letter back (``returned``). A letter the issuer cancels before a
run is dropped. With ``every`` set (``make run``) a print run happens that often; the tests call ``run``.

Letters are kept in memory only, and nothing about a patient is logged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import aio_pika

from devstack.sample import publish
from issuer.domain import print_room_context
from shared import crypto, topology
from shared.contracts import (
    EventPayload,
    PostalCancelledV1,
    PostalPostedV1,
    PostalPrintedV1,
    PostalRequestedV1,
    PostalReturnedV1,
    envelope,
)
from shared.logs import get_logger
from shared.settings import _decode_key, dev_key

log = get_logger(__name__)
# What a channel lost under the reader raises: closed by the broker, used while the connection comes back
# (aio-pika's RuntimeError "Connection was not opened" among them), or a broker that answers late (aio-pika's
# basic.get and channel.open give up after 5 s: seen on two cores under make test's whole load).
LOST = (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, RuntimeError, TimeoutError)
DEV_PRIVATE_KEYS = {"k1": _decode_key(dev_key("print-room"))}


def queue_names(exchange: str) -> list[str]:
    """The print room's queues, which the issuer declares: the letters to print, then the cancellations."""
    return [
        topology.queue_name(exchange, topology.PRINT_ROOM, event.routing_key())
        for event in (PostalRequestedV1, PostalCancelledV1)
    ]


@dataclass
class Job:
    """A letter the print room holds: what it opened, and how far it got."""

    convocation_id: str
    message_id: str | None
    reason: str
    patient_id: str
    patient_name: str
    pdf: bytes
    state: str = "waiting"  # waiting, printed, posted, returned, cancelled


class DevPrintRoom:
    """Reads its queues and reports in a background thread until ``stop``."""

    def __init__(
        self, amqp_url: str, exchange: str, *, every: float | None = None, private_keys: dict[str, bytes] | None = None
    ) -> None:
        self.amqp_url, self.exchange, self.every = amqp_url, exchange, every
        self.private_keys = private_keys or DEV_PRIVATE_KEYS
        self.jobs: dict[str, Job] = {}  # by convocation id: the latest letter asked for it
        self.requests: list[dict] = []  # every postal.requested read, as it came (the tests look at them)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dev-print-room", daemon=True)
        self._stopped: asyncio.Event | None = None
        self.paused = threading.Event()  # set: the staff are away and nobody reads the queues (tests set it)
        self._reading = threading.Event()  # set once the queues are found
        self.lost: list[str] = []  # the errors that closed its channel while it read (it read on)
        self.refused = 0  # messages it could not read (rejected, not requeued)
        self._task: concurrent.futures.Future | None = None

    def start(self, timeout: float = 60) -> DevPrintRoom:
        """Start reading, once the issuer has declared the print room's queues (it does as it starts: a
        print room started beside it waits for them); fails if they do not appear within ``timeout``."""
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(timeout), self._loop)
        while not self._reading.wait(0.1):
            if self._task.done():
                self._task.result()  # the print room's own error (no queue after ``timeout``, no broker)
                raise RuntimeError("the development print room ended before it read its queues")
        return self

    @property
    def reading(self) -> bool:
        """True while it reads its queues."""
        return self._reading.is_set() and self._task is not None and not self._task.done()

    def stop(self) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._task is not None:
            try:
                self._task.result(timeout=10)
            except Exception as exc:  # noqa: BLE001 - stopping anyway; say why it had ended
                log.warning("development print room stopped with an error", error=type(exc).__name__)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # --- what the print room's staff do ----------------------------------------------------------

    def run(self, *convocation_ids: str) -> None:
        """A print run: letters printed at the last run are posted, waiting ones are printed (only those of
        these convocations, when named: the tests share one print room)."""
        asyncio.run_coroutine_threadsafe(self._print_run(set(convocation_ids)), self._loop).result(timeout=30)

    def returned(self, convocation_id: str, reason: str = "address-unknown") -> None:
        """The post brought this letter back."""
        job = self.jobs[convocation_id]
        job.state = "returned"
        asyncio.run_coroutine_threadsafe(self._report(PostalReturnedV1, job, reason=reason), self._loop).result(
            timeout=30
        )

    # --- the bus ---------------------------------------------------------------------------------

    async def _run(self, timeout: float) -> None:
        self._stopped = asyncio.Event()
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection:
            queues = await self._queues(connection, self._loop.time() + timeout)
            self._reading.set()
            next_run = self._loop.time() + (self.every or 0)
            while not self._stopped.is_set():
                got = False
                try:
                    for queue in queues if not self.paused.is_set() else ():
                        message = await queue.get(no_ack=False, fail=False)
                        if message is not None:
                            got = True
                            await self._take(message)
                except LOST as exc:
                    # A channel closed under it (the connection came back, a queue looked at the wrong
                    # moment): the letters wait on their queues; read them on a channel of its own again.
                    self.lost.append(type(exc).__name__)
                    log.warning("development print room lost its channel; reading again", error=type(exc).__name__)
                    with contextlib.suppress(*LOST):
                        await queues[0].channel.close()
                    await asyncio.sleep(0.2)
                    queues = await self._queues(connection, self._loop.time() + timeout)
                    continue
                if self.every and self._loop.time() >= next_run:
                    await self._print_run()
                    next_run = self._loop.time() + self.every
                if not got:
                    await asyncio.sleep(0.2)

    async def _queues(self, connection: aio_pika.abc.AbstractRobustConnection, deadline: float) -> list:
        """The print room's two queues on a new channel, once the issuer has declared them."""
        while True:
            try:  # the issuer declares them: a missing queue closes the channel, and we look again
                await connection.ready()  # a connection coming back opens no channel until it is
                channel = await connection.channel()
                return [await channel.get_queue(name, ensure=True) for name in queue_names(self.exchange)]
            except LOST:
                if self._loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def problem(self) -> str:
        """Why letters may not have been read, for a test's failure message ("" when it reads as it should)."""
        if self._task is not None and self._task.done():
            ended = "it was cancelled" if self._task.cancelled() else repr(self._task.exception())
            return f"the print room stopped reading: {ended}"
        return f"the print room lost its channel {len(self.lost)} time(s): {self.lost}" if self.lost else ""

    async def _take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
            data = event["data"]
            if event["type"] == PostalCancelledV1.EVENT_TYPE:
                self._cancel(data)
            else:
                self._hold(data)
                if event.get("event_id") not in {e.get("event_id") for e in self.requests}:  # a redelivery
                    self.requests.append(event)
        except (ValueError, KeyError, TypeError, crypto.CannotOpen) as exc:
            log.warning("print room refused a message it cannot read", error=type(exc).__name__)
            self.refused += 1
            await message.reject(requeue=False)
            return
        await message.ack()

    def _hold(self, data: dict) -> None:
        cid = data["convocation_id"]
        letter = json.loads(
            crypto.open_for_recipient(
                self.private_keys, data["for_print_room"], context=print_room_context(uuid.UUID(cid))
            )
        )
        self.jobs[cid] = Job(
            cid,
            data.get("message_id"),
            data["reason"],
            letter["patient_id"],
            letter["patient_name"],
            crypto.b64d(letter["document_pdf_base64"]),
        )
        log.info("letter received for printing", reason=data["reason"])

    def _cancel(self, data: dict) -> None:
        job = self.jobs.get(data["convocation_id"])
        if job is not None and job.state == "waiting" and job.message_id == data["message_id"]:
            job.state = "cancelled"
            log.info("letter dropped before printing", reason=data["reason"])

    async def _print_run(self, only: set[str] | None = None) -> None:
        for job in list(self.jobs.values()):
            if only and job.convocation_id not in only:
                continue
            if job.state == "printed":
                job.state = "posted"
                await self._report(PostalPostedV1, job)
            elif job.state == "waiting":
                job.state = "printed"
                await self._report(PostalPrintedV1, job)

    async def _report(self, event: type[EventPayload], job: Job, **fields) -> None:
        cid = uuid.UUID(job.convocation_id)
        payload = event(convocation_id=cid, message_id=job.message_id, at=datetime.now(timezone.utc), **fields)
        env = envelope(payload, producer=topology.producer_name(topology.PRINT_ROOM), correlation_id=cid)
        await publish(self.amqp_url, self.exchange, json.loads(env.model_dump_json()))
        log.info("print room report sent", step=event.EVENT_TYPE)
