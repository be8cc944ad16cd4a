"""Who publishes and who consumes each event, and the exchanges and queues that follow from it.

One durable topic exchange, one quorum queue per consumer and event, each with its dead-letter
queue declared by hand (a rejected message is dropped unless its queue names a dead-letter exchange). ``BUS`` is the one table the consumers' producer check, the services'
subscriptions and the broker users' permissions (``broker_permissions``) are derived from;
``RETIRED`` lists the subscriptions services dropped, whose queues they delete at startup;
``ALSO_PUBLISHED_BY`` the events that a second party publishes too.

Dead-letter queues are durable *classic* queues: a classic queue has no delivery limit, so an operator
may look at a dead letter any number of times (``convocations-admin dlq``, which takes it unacknowledged
and hands it back) without the broker ever dropping it. RabbitMQ 4 gives every quorum queue a delivery
limit of 20 by default, and before 4.3 each look counted one; the DLQs of earlier releases were quorum
queues: a service leaves such a DLQ as it is (its binding keeps it filling) and says so in its log, and
``convocations-admin dlq migrate`` moves it to the classic shape without losing a letter (docs/runbooks.md).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from shared.logs import get_logger

if TYPE_CHECKING:
    from pamqp.commands import Queue
from pamqp.common import FieldTable

log = get_logger(__name__)

DELIVERY_LIMIT = 10  # redeliveries after handler crashes before RabbitMQ dead-letters the message

UPSTREAM = "upstream"  # the hospital's systems, as a party on the bus and in their queues' names
UPSTREAM_PRODUCER = "hospital-his"  # their envelopes' ``producer`` and their broker user
PRINT_ROOM = "print-room"  # the hospital's print room: its queues' middle name, its producer and broker user
GATEWAY = "hospital-gateway"  # the service that speaks HL7 v2 and FHIR with them (services/hospital-gateway)

# routing key: (owner, consumers). Only the owner may publish it (broker topic permissions) and an
# envelope naming another producer is dead-lettered (shared/consumer.py). The services subscribe
# to exactly their rows (Consumer.subscribe refuses others); the event catalogue is generated
# from this table (tools/devstack/contracts/).
BUS: dict[str, tuple[str, tuple[str, ...]]] = {
    "convocation.created.v1": (UPSTREAM, ("issuer",)),
    "convocation.cancelled.v1": (UPSTREAM, ("issuer",)),
    "message.sealed.v2": ("issuer", ("access-portal",)),
    "email.requested.v1": ("issuer", ("mailer",)),
    "message.revoked.v1": ("issuer", ("mailer", "access-portal")),
    "convocation.status.v1": ("issuer", (UPSTREAM, "secretariat", GATEWAY)),
    "postal.requested.v1": ("issuer", (PRINT_ROOM,)),
    "postal.cancelled.v1": ("issuer", (PRINT_ROOM,)),
    "postal.printed.v1": (PRINT_ROOM, ("issuer",)),
    "postal.posted.v1": (PRINT_ROOM, ("issuer",)),
    "postal.returned.v1": (PRINT_ROOM, ("issuer",)),
    "postal.progress.v1": ("issuer", ("access-portal",)),
    "reminder.requested.v1": ("issuer", ("mailer",)),
    "email.sent.v1": ("mailer", ("issuer",)),
    "email.failed.v1": ("mailer", ("issuer",)),
    "otp.requested.v1": ("access-portal", ("sms-gateway", "secretariat")),
    "document.released.v1": ("access-portal", ("issuer",)),
    "postal.chosen.v1": ("access-portal", ("issuer",)),
    "sms.sent.v1": ("sms-gateway", ("access-portal", "secretariat")),
    "sms.failed.v1": ("sms-gateway", ("access-portal", "secretariat")),
    "access.changed.v1": ("access-portal", ("secretariat",)),
    "staff.action.requested.v1": ("secretariat", ("issuer", "access-portal")),
    "convocation.reissue.requested.v1": ("issuer", (UPSTREAM, "secretariat", GATEWAY)),
    "patient.erasure.requested.v1": ("secretariat", ("issuer",)),
    "patient.erased.v1": ("issuer", ("mailer", "sms-gateway", "access-portal", "secretariat")),
    "patient.erasure.confirmed.v1": ("issuer", ("secretariat",)),
}
# Events a second party publishes too. The hospital gateway turns the HL7 v2 and FHIR messages of the
# hospital systems that use it into the same two events that the systems speaking our JSON publish
# themselves (as hospital-his): the issuer need not tell the two paths apart. Its broker user may publish
# them and its envelopes name it (``producers``).
ALSO_PUBLISHED_BY: dict[str, tuple[str, ...]] = {
    "convocation.created.v1": (GATEWAY,),
    "convocation.cancelled.v1": (GATEWAY,),
    # Each service that erases a patient's rows confirms it itself.
    "patient.erasure.confirmed.v1": ("mailer", "sms-gateway", "access-portal", GATEWAY),
}
# The queues of a party outside this system are declared for it by one of ours.
OUTBOUND_DECLARED_BY = {UPSTREAM: "issuer", PRINT_ROOM: "issuer"}
OUTSIDE = frozenset(OUTBOUND_DECLARED_BY)  # the parties that are not services of this system

# consumer: routing keys it consumed in an earlier release and no longer does. Deployments still have
# those queues, bound to the exchange, so left alone they would fill forever: the service deletes them
# at startup, and their DLQs once empty (delete_retired_queues). Its broker user keeps configure
# permission on these names for that alone (broker_permissions). An entry may go once every deployment
# has run a release that deleted its queues.
RETIRED: dict[str, tuple[str, ...]] = {
    # Its only effect was message.emailed_at, which nothing read; it cost a delivery, an inbox claim
    # and a transaction per convocation.
    "access-portal": ("email.sent.v1", "message.sealed.v1"),
    # message.sealed.v1 carried the sealed letter beside the link's secret sealed for the mailer: any copy
    # of it (a retry copy, a dead letter) opened with two server keys and no link. v2 carries the letter
    # alone, for the portal; the mailer gets the link alone, on email.requested.v1 (docs/architecture.md#security).
    "mailer": ("message.sealed.v1",),
}


def producer_name(party: str) -> str:
    """The envelope ``producer`` (and broker user) of a party."""
    return UPSTREAM_PRODUCER if party == UPSTREAM else party


def owner(routing_key: str) -> str:
    """The party an event with this routing key comes from (the table's owner)."""
    return producer_name(BUS[routing_key][0])


def producers(routing_key: str) -> tuple[str, ...]:
    """The envelope producers an event with this routing key may come from: its owner, then the parties
    that publish it too (``ALSO_PUBLISHED_BY``)."""
    return (owner(routing_key), *ALSO_PUBLISHED_BY.get(routing_key, ()))


def published_by(party: str) -> list[str]:
    """Routing keys ``party`` may publish, in the table's order."""
    return [key for key, (o, _) in BUS.items() if o == party or party in ALSO_PUBLISHED_BY.get(key, ())]


def consumed_by(consumer: str) -> list[str]:
    """Routing keys ``consumer`` has a queue for, in the table's order."""
    return [key for key, (_, consumers) in BUS.items() if consumer in consumers]


def retired_queues(exchange: str, consumer: str) -> list[str]:
    """The consumer queues ``consumer`` declared in earlier releases and deletes now (``RETIRED``)."""
    return [queue_name(exchange, consumer, key) for key in RETIRED.get(consumer, ())]


def events_exchange(name: str) -> RabbitExchange:
    return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)


def dead_letter_exchange(name: str) -> RabbitExchange:
    return RabbitExchange(f"{name}.dlx", type=ExchangeType.TOPIC, durable=True)


def retry_exchange(name: str) -> RabbitExchange:
    return RabbitExchange(f"{name}.retry", type=ExchangeType.DIRECT, durable=True)


def queue_name(exchange: str, service: str, routing_key: str) -> str:
    return f"{exchange}.{service}.{routing_key}"


def consumer_queue(exchange: str, service: str, routing_key: str) -> RabbitQueue:
    name = queue_name(exchange, service, routing_key)
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments={
            "x-dead-letter-exchange": f"{exchange}.dlx",
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )


DEAD_LETTER_QUEUE_ARGUMENTS: FieldTable = {"x-queue-type": "classic"}


def dead_letter_queue(queue: str) -> RabbitQueue:
    return RabbitQueue(f"{queue}.dlq", queue_type=QueueType.CLASSIC, durable=True, routing_key=queue)


async def declare_dead_letter_queues(
    broker: RabbitBroker, exchange: str, queues: list[str], amqp_url: str
) -> list[str]:
    """Declare the exchanges and, for each consumer queue, its DLQ bound on the DLX by queue name. Returns
    the DLQs left in an earlier release's shape (quorum): bound as they were, until ``dlq migrate``."""
    await broker.declare_exchange(events_exchange(exchange))
    dlx = await broker.declare_exchange(dead_letter_exchange(exchange))
    earlier = await earlier_dead_letter_queues(amqp_url, [f"{queue}.dlq" for queue in queues])
    for queue in queues:
        if f"{queue}.dlq" in earlier:
            continue
        dlq = await broker.declare_queue(dead_letter_queue(queue))
        await dlq.bind(dlx, routing_key=queue)
    if earlier:
        log.warning(
            "dead-letter queues of an earlier release (quorum queues) kept as they are: run "
            "`convocations-admin dlq migrate` (docs/runbooks.md)",
            queues=earlier,
        )
    return earlier


async def earlier_dead_letter_queues(amqp_url: str, names: list[str]) -> list[str]:
    """Of these DLQs, those that exist as quorum queues; the others are declared classic here if missing.
    On a connection of its own: the broker closes the channel of a declaration that does not match."""
    earlier = []
    async with await aio_pika.connect(amqp_url) as connection:
        for name in names:
            async with _own_channel(connection) as channel:
                try:
                    await channel.declare_queue(name, durable=True, arguments=DEAD_LETTER_QUEUE_ARGUMENTS)
                except ChannelPreconditionFailed:
                    earlier.append(name)
    return earlier


async def declare_retry_queue(broker: RabbitBroker, exchange: str, queue: str, delay_seconds: int) -> str:
    """A holding queue whose messages return to ``queue`` after ``delay_seconds`` (TTL + dead-letter
    to the default exchange). Returns the routing key to publish on the retry exchange."""
    routing_key = f"{queue}.retry.{delay_seconds}s"
    holding = RabbitQueue(
        routing_key,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments={
            "x-message-ttl": delay_seconds * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        },
    )
    retry = await broker.declare_exchange(retry_exchange(exchange))
    declared = await broker.declare_queue(holding)
    await declared.bind(retry, routing_key=routing_key)
    return routing_key


async def declare_outbound_queue(
    broker: RabbitBroker, exchange: str, consumer: str, routing_key: str, amqp_url: str
) -> str:
    """A durable queue for a consumer outside this system (the hospital's systems), with its DLQ."""
    queue = consumer_queue(exchange, consumer, routing_key)
    declared = await broker.declare_queue(queue)
    await declared.bind(await broker.declare_exchange(events_exchange(exchange)), routing_key=routing_key)
    await declare_dead_letter_queues(broker, exchange, [queue.name], amqp_url)
    return queue.name


async def delete_retired_queues(connection: AbstractConnection, exchange: str, consumer: str) -> bool:
    """Delete ``consumer``'s retired queues (``RETIRED``) with what waits in them, and then each one's
    DLQ if it is empty: a dead letter there may still need an operator (``convocations-admin dlq``),
    so a DLQ holding any is kept, with a warning, until a later start finds it emptied.

    A retired queue that still has consumers (replicas of the previous release, during a rolling
    update) is left for now: deleted, it would come back as their client recovers its connection.
    Returns False while such a queue remains, True once nothing is left to wait for. (Quorum queues
    refuse ``queue.delete`` with if-empty or if-unused, closing the connection: hence the looks first.)"""
    settled = True
    for name in retired_queues(exchange, consumer):
        async with _own_channel(connection) as channel:
            queue = await _looked_up(channel, name)
            if queue is not None and queue.consumer_count:
                log.info(
                    "retired queue still consumed by an earlier release; deleting it later",
                    queue=name,
                    consumers=queue.consumer_count,
                )
                settled = False
                continue
            if queue is not None:
                await channel.queue_delete(name)
                log.info("retired queue deleted", queue=name, messages_dropped=queue.message_count)
        async with _own_channel(connection) as channel:
            dlq = await _looked_up(channel, f"{name}.dlq")
            if dlq is not None and (dlq.message_count or dlq.consumer_count):
                log.warning(
                    "retired queue's DLQ kept: it holds dead letters; list them (convocations-admin"
                    " dlq list) and purge them; the service deletes it once empty",
                    queue=f"{name}.dlq",
                    messages=dlq.message_count,
                )
            elif dlq is not None:
                await channel.queue_delete(f"{name}.dlq")
                log.info("retired DLQ deleted", queue=f"{name}.dlq")
    return settled


@contextlib.asynccontextmanager
async def _own_channel(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A channel for one queue's look-up: looking up a missing queue closes its channel."""
    channel = await connection.channel()
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()


async def _looked_up(channel: AbstractChannel, name: str) -> Queue.DeclareOk | None:
    """Ready messages and consumers of a queue, or None if there is no such queue."""
    try:
        return (await channel.declare_queue(name, passive=True)).declaration_result
    except ChannelNotFoundEntity:
        return None


# --- broker users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerPermissions:
    """What one broker user may do in the vhost: RabbitMQ's configure/write/read regular
    expressions on exchange and queue names, and per topic exchange the routing keys it may
    publish (write) and bind queues with (read)."""

    user: str
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]  # exchange -> (write, read)


def _escaped(name: str) -> str:
    # Names here are dotted lowercase words: escaping the dots is all a regular expression needs.
    if not re.fullmatch(r"[a-z0-9._-]*", name):
        raise ValueError(f"unexpected character in exchange or queue name {name!r}")
    return name.replace(".", "\\.")


def _only(names: list[str]) -> str:
    """A pattern for exactly these names; "^$" allows nothing when there are none."""
    return f"^({'|'.join(_escaped(n) for n in names)})$" if names else "^$"


def _queues(exchange: str, consumer: str, keys: list[str], suffixes: str) -> str:
    alternatives = "|".join(_escaped(k) for k in keys)
    return f"{_escaped(queue_name(exchange, consumer, ''))}({alternatives}){suffixes}"


def broker_permissions(exchange: str = "convocations") -> dict[str, BrokerPermissions]:
    """The broker user of the hospital's system, of its print room and of each service, derived from ``BUS``: each may
    publish only the events it owns, and configure, read and write exactly the exchanges and
    queues it declares (its consumer queues with their DLQs and retry holding queues, and for
    the issuer the hospital's queues), and configure too its retired queues and their DLQs, which it
    deletes (``RETIRED``). ``amq.default`` is written to declare retry holding queues (they
    dead-letter to the default exchange, and RabbitMQ checks write access to a queue's DLX)."""
    dlx = dead_letter_exchange(exchange).name
    exchanges = "|".join(_escaped(e) for e in (exchange, dlx, retry_exchange(exchange).name))
    parties = {o for o, _ in BUS.values()} | {c for _, cs in BUS.values() for c in cs}
    parties |= {p for ps in ALSO_PUBLISHED_BY.values() for p in ps}
    services = sorted(parties - OUTSIDE)  # one user each, named as the service
    users: dict[str, BrokerPermissions] = {}
    for service in services:
        consumed = consumed_by(service)
        outbound = {c: consumed_by(c) for c, by in OUTBOUND_DECLARED_BY.items() if by == service}
        queues = [_queues(exchange, service, consumed, r"(\.dlq|\.retry\.[0-9]+s)?")]
        queues += [_queues(exchange, c, keys, r"(\.dlq)?") for c, keys in outbound.items()]
        dead_letter_keys = [queue_name(exchange, service, k) for k in consumed]
        retired = [_queues(exchange, service, list(RETIRED[service]), r"(\.dlq)?")] if service in RETIRED else []
        names = f"^({exchanges}|{'|'.join(queues)})$"
        users[service] = BrokerPermissions(
            user=service,
            configure=f"^({exchanges}|{'|'.join(queues + retired)})$",
            write=f"^({exchanges}|amq\\.default|{'|'.join(queues)})$",
            read=names,
            topics={
                exchange: (
                    _only(published_by(service)),
                    _only(consumed + [k for keys in outbound.values() for k in keys]),
                ),
                # Consumers dead-letter invalid events themselves, by queue name (shared/consumer.py);
                # DLQs are bound by queue name too.
                dlx: (
                    _only(dead_letter_keys),
                    _only(
                        dead_letter_keys + [queue_name(exchange, c, k) for c, keys in outbound.items() for k in keys]
                    ),
                ),
            },
        )
    for party in sorted(OUTSIDE):
        user = producer_name(party)
        users[user] = BrokerPermissions(
            user=user,
            configure="^$",  # its queues are declared for it by the issuer
            write=_only([exchange]),
            read="^" + _queues(exchange, party, consumed_by(party), r"(\.dlq)?") + "$",
            topics={exchange: (_only(published_by(party)), "^$")},
        )
    return users
