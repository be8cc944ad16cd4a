"""The development print room on the real broker: it reads the queues the issuer declares, even when it
starts before the issuer has declared them (a whole e2e session once read nothing: its print room started
a moment too early, its reading task ended on the missing queue and nobody heard of it)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import aio_pika
import pytest

from devstack.printroom import DevPrintRoom, queue_names
from tests.conftest import AMQP_URL
from tests.waiting import until


async def declare_print_room_queues(exchange: str, after: float) -> None:
    await asyncio.sleep(after)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in queue_names(exchange):
            await channel.declare_queue(name, durable=True)


def test_a_print_room_started_before_the_issuer_waits_for_its_queues_and_reads_them():
    exchange = f"print-room-{uuid.uuid4().hex[:8]}"
    issuer = threading.Thread(target=lambda: asyncio.run(declare_print_room_queues(exchange, after=1.5)))
    issuer.start()
    room = DevPrintRoom(AMQP_URL, exchange).start()  # returns only once it reads the queues
    try:
        issuer.join()
        assert room.reading  # still reading, not ended on a missing queue
    finally:
        room.stop()


def test_a_print_room_whose_queues_never_appear_says_so_at_start():
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        DevPrintRoom(AMQP_URL, f"nobody-{uuid.uuid4().hex[:8]}").start(timeout=1)


async def delete_print_room_queues(exchange: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in queue_names(exchange):
            await channel.queue_delete(name)


async def put_letter(exchange: str, body: bytes) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        letters, _ = queue_names(exchange)
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=letters)


def test_a_print_room_whose_channel_is_closed_under_it_reads_on_and_says_so():
    """The queues vanish while it reads (its channel is closed by the broker) and come back: it reads the
    next message on a new channel, and keeps the reason it had to (a test that waits in vain prints it)."""
    exchange = f"print-room-{uuid.uuid4().hex[:8]}"
    asyncio.run(declare_print_room_queues(exchange, after=0))
    room = DevPrintRoom(AMQP_URL, exchange).start()
    try:
        asyncio.run(delete_print_room_queues(exchange))
        until(lambda: room.lost, what="the print room's lost channel")
        asyncio.run(declare_print_room_queues(exchange, after=0))
        asyncio.run(put_letter(exchange, b"not an event"))  # refused as unreadable, but read: the room is alive
        until(lambda: room.lost and room.reading and room.refused, what="the print room's reading on a new channel")
        assert room.reading and room.lost == ["ChannelNotFoundEntity"] and room.refused == 1
        assert "lost its channel 1 time" in room.problem()
    finally:
        room.stop()


def test_a_print_room_whose_broker_answers_late_reads_on_and_says_so(monkeypatch):
    """A basic.get that gets no answer within aio-pika's 5 s (the broker starved of CPU) ended the reading task
    for good, and every paper letter of an e2e session after it waited in vain; it now reads on."""
    exchange = f"print-room-{uuid.uuid4().hex[:8]}"
    asyncio.run(declare_print_room_queues(exchange, after=0))
    get, late = aio_pika.Queue.get, []

    async def answers_late_once(self, *args, **kwargs):
        if not late:
            late.append(self.name)
            raise TimeoutError
        return await get(self, *args, **kwargs)

    monkeypatch.setattr(aio_pika.Queue, "get", answers_late_once)
    room = DevPrintRoom(AMQP_URL, exchange).start()
    try:
        asyncio.run(put_letter(exchange, b"not an event"))
        until(lambda: room.refused, what="the print room's reading after a late answer")
        assert late and room.lost == ["TimeoutError"] and room.refused == 1
        assert "lost its channel 1 time" in room.problem()
    finally:
        room.stop()
