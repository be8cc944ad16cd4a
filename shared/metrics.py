"""The one Prometheus registry of a service process and the metrics every service shares."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "convocations_events_consumed_total",
    "Events taken from the bus, by outcome (processed, duplicate, invalid, rejected, error).",
    ["service", "type", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "convocations_events_published_total",
    "Events the outbox relay published with a broker confirm.",
    ["service", "type"],
)
DEAD_LETTERED = Counter(
    "convocations_dead_lettered_total",
    "Events sent to a dead-letter queue, by reason.",
    ["service", "queue", "reason"],
)
HANDLER_SECONDS = Histogram(
    "convocations_handler_seconds",
    "Time to handle one event, transaction included.",
    ["service", "type"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RETRIES_SCHEDULED = Counter(
    "convocations_retries_scheduled_total",
    "Delayed retry copies the outbox relay published (never counted as events_published).",
    ["service", "type"],
)
OUTBOX_PENDING = Gauge("convocations_outbox_pending", "Outbox rows not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "convocations_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
OUTBOX_LAST_SUCCESS = Gauge(
    "convocations_outbox_last_success_timestamp_seconds",
    "When the outbox relay last finished a pass without error (a stopped relay leaves it behind).",
    ["service"],
)
PERIODIC_LAST_SUCCESS = Gauge(
    "convocations_periodic_last_success_timestamp_seconds",
    "When a periodic job (the issuer's sweeper, each service's retention sweep) last finished without error.",
    ["service", "task"],  # not "job": that is the scrape job's label
)
RETENTION_SWEPT = Counter(
    "convocations_retention_swept_rows_total",
    "Rows deleted because they were past their retention period (shared/retention.py, docs/retention.md).",
    ["service", "table"],
)
DEPENDENCY_UP = Gauge(
    "convocations_dependency_up",
    "1 when the service's last readiness check reached the dependency (database, broker), else 0.",
    ["service", "dependency"],
)
FUNNEL = Counter(
    "convocations_funnel_total",
    "Convocations reaching a stage of the delivery funnel, each counted once per convocation, after the"
    " transaction recording it committed: created, sealed, e-mailed, bounced, code-requested, code-sent,"
    " verified, downloaded, paper.",
    ["stage"],
)
FUNNEL_STAGES = (
    "created",
    "sealed",
    "e-mailed",
    "bounced",
    "code-requested",
    "code-sent",
    "verified",
    "downloaded",
    "paper",
)
for _stage in FUNNEL_STAGES:  # every stage exported from the start: increase() sees the first one
    FUNNEL.labels(_stage)
CODE_HANDOFF = Histogram(
    "convocations_code_handoff_seconds",
    "Time from a code request (otp.requested) to the SMS provider accepting the first text for it.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
PAPER_REQUESTS = Counter(
    "convocations_paper_requests_total",
    "Letters handed to the print room, by timeliness: on-time, or late (after the paper deadline).",
    ["timeliness"],
)
for _timeliness in ("on-time", "late"):
    PAPER_REQUESTS.labels(_timeliness)  # exported from the start: the paper alert's increase() sees the first
PAPER_OVERDUE = Gauge(
    "convocations_paper_overdue",
    "Letters past their paper deadline, neither downloaded nor handed to the print room (sweeper's view).",
)
CHAIN_LATENCY = Histogram(
    "convocations_chain_latency_seconds",
    "Time from convocation.created to each later stage of the chain.",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 7 * 86400),
)

_on_commit: ContextVar[list | None] = ContextVar("convocations_on_commit", default=None)


def on_commit(action) -> None:
    """Run ``action()`` once the surrounding :func:`counted_after_commit` block ends without error.

    Counting inside a transaction that later rolls back (a crash, a lost connection, a redelivery)
    would count a convocation twice; outside such a block the action runs at once."""
    pending = _on_commit.get()
    if pending is None:
        action()
    else:
        pending.append(action)


@contextlib.contextmanager
def counted_after_commit():
    """Wrap a transaction: the metrics recorded with :func:`on_commit` inside it count only if it commits."""
    token = _on_commit.set([])
    try:
        yield
        for action in _on_commit.get() or ():
            action()
    finally:
        _on_commit.reset(token)


def reached(stage: str, *, after_seconds: float | None = None) -> None:
    """A convocation reached a funnel stage for the first time (``after_seconds`` after its creation)."""
    assert stage in FUNNEL_STAGES, stage

    def count() -> None:
        FUNNEL.labels(stage).inc()
        if after_seconds is not None:
            CHAIN_LATENCY.labels(stage).observe(max(0.0, after_seconds))

    on_commit(count)
