"""One trace per letter: OpenTelemetry spans from the event that asks for a letter to its download.

The context travels with each event: an outbox row keeps the W3C ``traceparent`` of the transaction that
wrote it (in its ``headers``), the relay publishes it in a PRODUCER span whose context goes in the AMQP
headers, and the consumer continues it in a CONSUMER span around the handler, whose PostgreSQL queries
(asyncpg) and new outbox rows are its children. HTTP requests (FastAPI) are SERVER spans. The portal
keeps a letter's context with the message, so the ``document.released`` a patient's download causes
belongs to the letter's trace too (the request itself is linked to it).

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, with the other ``OTEL_*`` variables of the SDK) and
``OTEL_SDK_DISABLED`` is not ``true``. Off, the spans below are the API's no-op ones: nothing is
recorded, no header is added, and each costs a function call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind

TRACER = trace.get_tracer("convocations")
_enabled = False


def wanted() -> bool:
    """What the environment asks for (see the module's docstring)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(service: str) -> Any:
    """Install the SDK with a batching OTLP/HTTP exporter for this process, and the asyncpg spans, if
    wanted. Returns the provider (to shut down last, flushing what is left) or None."""
    global _enabled
    if not wanted():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))  # reads OTEL_RESOURCE_ATTRIBUTES too
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads OTEL_EXPORTER_OTLP_*
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    _enabled = True
    return provider


def instrument_app(app: Any) -> None:
    """SERVER spans for the app's requests (not for the probes and the metrics scrapes)."""
    if _enabled:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz,metrics", exclude_spans=["send", "receive"]
        )


def current_context_headers() -> dict[str, str]:
    """The current span's context as message headers (``traceparent``, ``tracestate``); {} without one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_of(headers: Mapping[str, Any] | None) -> context.Context:
    """The context a message's headers carry (an empty one if none)."""
    carrier = {
        k: v.decode() if isinstance(v, bytes) else v
        for k, v in (headers or {}).items()
        if k in ("traceparent", "tracestate") and isinstance(v, (str, bytes))
    }
    return propagate.extract(carrier)


def _messaging_span(
    name: str,
    headers: Mapping[str, Any] | None,
    kind: SpanKind,
    operation: str,
    destination: str,
    event_id: str,
    event_type: str,
) -> Any:
    """A span of one message, continuing the trace its headers (or its outbox row's) carry."""
    return TRACER.start_as_current_span(
        name,
        context=context_of(headers),
        kind=kind,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation": operation,
            "messaging.destination.name": destination,
            "messaging.message.id": event_id,
            "convocations.event_type": event_type,
        },
    )


@contextlib.contextmanager
def consuming(headers: Mapping[str, Any] | None, queue: str, event_type: str, event_id: str | None) -> Iterator[Any]:
    """A CONSUMER span for one message, continuing the trace its headers carry."""
    with _messaging_span(
        f"{queue} process", headers, SpanKind.CONSUMER, "process", queue, event_id or "", event_type
    ) as span:
        yield span


@contextlib.contextmanager
def publishing(headers: Mapping[str, Any] | None, routing_key: str, event_type: str, event_id: str) -> Iterator[dict]:
    """A PRODUCER span for one outbox row, child of the context the row was written in; yields the headers
    to publish it with (the row's, its context replaced by this span's)."""
    with _messaging_span(
        f"{routing_key} publish", headers, SpanKind.PRODUCER, "publish", routing_key, event_id, event_type
    ):
        yield {**(headers or {}), **current_context_headers()}


@contextlib.contextmanager
def continued(headers: Mapping[str, Any] | None, name: str) -> Iterator[Any]:
    """A span in the trace ``headers`` carry (a letter's, kept with its message), linked to the current one
    (e.g. the patient's request that caused it)."""
    here = trace.get_current_span().get_span_context()
    links = [Link(here)] if here.is_valid else []
    with TRACER.start_as_current_span(name, context=context_of(headers), links=links) as span:
        yield span
