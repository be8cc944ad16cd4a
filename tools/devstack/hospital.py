"""The development hospital system's answer to convocation.reissue.requested: it publishes the letter
again, as a real hospital system must (docs/contracts/README.md, "Sending a letter again").

It knows the letters it sent (``remember``), reads its queue of reissue requests and, for each, publishes
the same convocation.created again with the same convocation id and a new event id. A request for a letter
it never sent is left on the queue's dead-letter queue, as a real system would refuse it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import uuid
from datetime import datetime, timezone

import aio_pika

from devstack.sample import publish
from shared import topology
from shared.contracts import ConvocationReissueRequestedV1
from shared.logs import get_logger

log = get_logger(__name__)


def republished(event: dict) -> dict:
    """The same convocation, published again: a new event id and time, the same convocation id."""
    return {**event, "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(timezone.utc).isoformat()}


class DevHospital:
    """Answers reissue requests in a background thread until ``stop``."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url, self.exchange = amqp_url, exchange
        self.letters: dict[str, dict] = {}
        self.answered = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dev-hospital", daemon=True)
        self._stopped: asyncio.Event | None = None
        self._task: concurrent.futures.Future | None = None

    def remember(self, event: dict) -> None:
        self.letters[event["data"]["convocation_id"]] = event

    def start(self) -> DevHospital:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        return self

    def stop(self) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._task is not None:
            try:
                self._task.result(timeout=10)
            except Exception as exc:  # noqa: BLE001 - stopping anyway; say why it had ended
                log.warning("development hospital stopped with an error", error=type(exc).__name__)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        self._stopped = asyncio.Event()
        queue_name = topology.queue_name(self.exchange, topology.UPSTREAM, ConvocationReissueRequestedV1.routing_key())
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name, ensure=True)  # the issuer declared it
            while not self._stopped.is_set():
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    await asyncio.sleep(0.2)
                    continue
                await self.answer(message)

    async def answer(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)["data"]
            letter = self.letters.get(request["convocation_id"])
        except (ValueError, KeyError, TypeError):
            request, letter = {}, None
        if letter is None:
            log.warning("reissue request refused: unreadable, or for a letter this hospital never sent")
            await message.reject(requeue=False)
            return
        event = republished(letter)
        await publish(self.amqp_url, self.exchange, event)
        self.letters[request["convocation_id"]] = event
        self.answered += 1
        log.info("letter published again", reason=request["reason"])
        await message.ack()
