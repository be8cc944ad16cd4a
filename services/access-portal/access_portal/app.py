"""Access portal process: the patient pages, the bus handlers, health and metrics in one app."""

import re
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from access_portal import store
from access_portal.handlers import PortalHandlers
from access_portal.phones import Phones
from access_portal.routes import Portal
from access_portal.settings import PortalSettings
from shared.consumer import Batches
from shared.contracts import (
    MessageRevokedV1,
    MessageSealedV2,
    PatientErasedV1,
    PostalProgressV1,
    SmsFailedV1,
    SmsSentV1,
    StaffActionRequestedV1,
)
from shared.runtime import Runtime
from shared.web import security_headers, serve_pages

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
STATIC = Path(__file__).resolve().parent / "static"
MESSAGE_PATH = re.compile(r"^/m/([0-9a-f-]{36})(?:/|$)")

# The guide's video and its captions; the document page fetches the appointment; the code page polls
# whether its SMS was delivered.
SECURITY_HEADERS = security_headers(media_src="'self'", connect_src="'self'")


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()
    runtime = Runtime("access-portal", "access_portal", settings, MIGRATIONS)
    phones = Phones(settings.portal_secret_key, settings.portal_field_key)
    handlers = PortalHandlers(settings, phones)
    # Batched without waiting: the patient may open the link as soon as the e-mail arrives, and the message
    # must be stored by then. In the order of the patients, whose binding a message may change.
    runtime.consumer.subscribe(
        MessageSealedV2, handlers.on_message_sealed, batches=Batches(order=lambda m: m.patient_ref)
    )
    runtime.consumer.subscribe(MessageRevokedV1, handlers.on_message_revoked)
    runtime.consumer.subscribe(PostalProgressV1, handlers.on_postal_progress)
    runtime.consumer.subscribe(SmsSentV1, handlers.on_sms_sent)
    runtime.consumer.subscribe(SmsFailedV1, handlers.on_sms_failed)
    runtime.consumer.subscribe(StaffActionRequestedV1, handlers.on_staff_action)
    runtime.consumer.subscribe(PatientErasedV1, handlers.on_patient_erased)
    portal = Portal(settings, lambda: runtime.pool, phones)
    runtime.keep(
        store.retention_rules(
            settings.message_retention_days, settings.binding_retention_days, settings.audit_retention_days
        )
    )

    app = runtime.http_app()
    app.state.runtime = runtime
    app.include_router(portal.router())
    instrument_http(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Bad requests get a page in the patient's terms, never a bare JSON error (docs/architecture.md#security).
    serve_pages(
        app,
        headers=SECURITY_HEADERS,
        error_page=lambda request, status: portal.pages.state(
            request, "unknown" if status == 404 else "bad_request", status=status
        ),
    )

    @app.middleware("http")
    async def log_context(request: Request, call_next):
        # Log lines of this request carry the message id (never the fragment: it never arrives).
        structlog.contextvars.clear_contextvars()
        if match := MESSAGE_PATH.match(request.url.path):
            structlog.contextvars.bind_contextvars(message_id=match.group(1))
        return await call_next(request)

    return app


# Buckets around the latency SLO (300 ms, docs/slo.md): the SLI reads the le="0.3" bucket.
HTTP_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)


def instrument_http(app: FastAPI) -> None:
    """Patient-facing request rate, errors and latency by route template (``/m/{raw_id}/code``, never
    the message id itself): http_requests_total and http_request_duration_seconds."""
    Instrumentator(
        should_group_status_codes=True,  # 2xx/4xx/5xx: the SLO needs classes, not every code
        should_group_untemplated=True,  # probes of unknown paths count under "none", not one series each
        excluded_handlers=["^/metrics$", "^/healthz$", "^/readyz$"],
    ).add(http_metrics.requests()).add(http_metrics.latency(buckets=HTTP_LATENCY_BUCKETS)).instrument(app)
