"""Exchanges and queues: one durable topic exchange, one quorum queue per consumer and event, each
with its dead-letter queue (a rejected message is dropped unless its queue names a dead-letter exchange: declare DLQs by hand, never rely on defaults)."""

from __future__ import annotations

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

DELIVERY_LIMIT = 10  # redeliveries after handler crashes before RabbitMQ dead-letters the message


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


def dead_letter_queue(queue: str) -> RabbitQueue:
    return RabbitQueue(f"{queue}.dlq", queue_type=QueueType.QUORUM, durable=True, routing_key=queue)


async def declare_dead_letter_queues(broker: RabbitBroker, exchange: str, queues: list[str]) -> None:
    """Declare the exchanges and, for each consumer queue, its DLQ bound on the DLX by queue name."""
    await broker.declare_exchange(events_exchange(exchange))
    dlx = await broker.declare_exchange(dead_letter_exchange(exchange))
    for queue in queues:
        dlq = await broker.declare_queue(dead_letter_queue(queue))
        await dlq.bind(dlx, routing_key=queue)


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


async def declare_outbound_queue(broker: RabbitBroker, exchange: str, consumer: str, routing_key: str) -> str:
    """A durable queue for a consumer outside this system (the hospital's systems), with its DLQ."""
    queue = consumer_queue(exchange, consumer, routing_key)
    declared = await broker.declare_queue(queue)
    await declared.bind(await broker.declare_exchange(events_exchange(exchange)), routing_key=routing_key)
    await declare_dead_letter_queues(broker, exchange, [queue.name])
    return queue.name
