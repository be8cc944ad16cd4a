"""The one Prometheus registry of a service process and the metrics every service shares."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "convocations_events_consumed_total",
    "Events taken from the bus, by outcome (processed, duplicate, invalid, rejected, error).",
    ["service", "type", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "convocations_events_published_total", "Events the outbox relay published with a broker confirm.",
    ["service", "type"],
)
DEAD_LETTERED = Counter(
    "convocations_dead_lettered_total", "Events sent to a dead-letter queue, by reason.",
    ["service", "queue", "reason"],
)
HANDLER_SECONDS = Histogram(
    "convocations_handler_seconds", "Time to handle one event, transaction included.", ["service", "type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_PENDING = Gauge("convocations_outbox_pending", "Outbox rows not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "convocations_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
CHAIN_LATENCY = Histogram(
    "convocations_chain_latency_seconds",
    "Time from convocation.created to each later stage of the chain.",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 7 * 86400),
)

_faststream_middleware = None


def faststream_middleware(service: str):
    """FastStream's Prometheus middleware on the process registry (built once per process)."""
    global _faststream_middleware
    if _faststream_middleware is None:
        from faststream.rabbit.prometheus import RabbitPrometheusMiddleware

        _faststream_middleware = RabbitPrometheusMiddleware(registry=REGISTRY, app_name=service)
    return _faststream_middleware
