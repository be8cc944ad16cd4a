"""Issuer process: wires the handlers to the bus and serves health and metrics."""

from pathlib import Path

from fastapi import FastAPI

from issuer import store
from issuer.handlers import IssuerHandlers
from issuer.settings import IssuerSettings
from issuer.sweeper import Sweeper
from shared import topology
from shared.consumer import Batches, LargeMessages
from shared.contracts import (
    ConvocationCancelledV1,
    ConvocationCreatedV1,
    DocumentReleasedV1,
    EmailFailedV1,
    EmailSentV1,
    PatientErasureRequestedV1,
    PostalChosenV1,
    PostalPostedV1,
    PostalPrintedV1,
    PostalReturnedV1,
    StaffActionRequestedV1,
)
from shared.runtime import Runtime

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
LARGE_LETTER_BYTES = 1024 * 1024  # a convocation.created this big carries a sizeable PDF


def create_app(settings: IssuerSettings | None = None) -> FastAPI:
    settings = settings or IssuerSettings()
    runtime = Runtime("issuer", "issuer", settings, MIGRATIONS)
    handlers = IssuerHandlers(settings)
    runtime.consumer.subscribe(
        ConvocationCreatedV1,
        handlers.on_convocation_created,
        prefetch=settings.letters_prefetch,
        large=LargeMessages(min_bytes=LARGE_LETTER_BYTES, at_once=settings.large_letters_at_once),
    )
    runtime.consumer.subscribe(ConvocationCancelledV1, handlers.on_convocation_cancelled)
    runtime.consumer.subscribe(
        EmailSentV1,
        handlers.on_email_sent,  # each locks its convocation's row
        batches=Batches(linger=settings.batch_linger_seconds, order=lambda e: e.convocation_id),
    )
    runtime.consumer.subscribe(EmailFailedV1, handlers.on_email_failed)
    runtime.consumer.subscribe(DocumentReleasedV1, handlers.on_document_released)
    runtime.consumer.subscribe(StaffActionRequestedV1, handlers.on_staff_action)
    runtime.consumer.subscribe(PostalChosenV1, handlers.on_postal_chosen)
    runtime.consumer.subscribe(PostalPrintedV1, handlers.on_postal_printed)
    runtime.consumer.subscribe(PostalPostedV1, handlers.on_postal_posted)
    runtime.consumer.subscribe(PostalReturnedV1, handlers.on_postal_returned)
    runtime.consumer.subscribe(PatientErasureRequestedV1, handlers.on_patient_erasure_requested)
    sweeper = Sweeper(handlers, lambda: runtime.pool)

    async def declare_outside_queues() -> None:
        # Events the hospital's systems and its print room consume: their queues exist before the first
        # publish, so the outbox relay's mandatory publishes are routable and nothing is lost.
        for party, declared_by in topology.OUTBOUND_DECLARED_BY.items():
            for routing_key in topology.consumed_by(party) if declared_by == "issuer" else ():
                await topology.declare_outbound_queue(
                    runtime.broker, settings.events_exchange, party, routing_key, settings.amqp_url
                )

    runtime.declarations.append(declare_outside_queues)
    runtime.every(settings.sweep_seconds, sweeper.sweep_once, "issuer-sweeper")
    runtime.keep(store.retention_rules(settings.convocation_retention_days))
    app = runtime.http_app()
    app.state.runtime = runtime
    return app
