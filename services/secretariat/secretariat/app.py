"""Secretariat process: the read model's handlers, the staff pages, the JSON API, health and metrics."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from secretariat import store
from secretariat.api import create_api
from secretariat.auth import Oidc
from secretariat.console import Console
from secretariat.handlers import SecretariatHandlers
from secretariat.settings import SecretariatSettings
from secretariat.web import Pages
from shared.consumer import Batches
from shared.contracts import (
    AccessChangedV1,
    ConvocationReissueRequestedV1,
    ConvocationStatusV1,
    OtpRequestedV1,
    PatientErasedV1,
    PatientErasureConfirmedV1,
    SmsFailedV1,
    SmsSentV1,
)
from shared.runtime import Runtime
from shared.web import security_headers, serve_pages

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: SecretariatSettings | None = None) -> FastAPI:
    settings = settings or SecretariatSettings()
    runtime = Runtime("secretariat", "secretariat", settings, MIGRATIONS)
    console = Console(settings, lambda: runtime.pool)
    handlers = SecretariatHandlers(console.patients)
    runtime.consumer.subscribe(
        ConvocationStatusV1,
        handlers.on_status,  # each writes its convocation's row
        batches=Batches(linger=settings.batch_linger_seconds, order=lambda s: s.convocation_id),
    )
    runtime.consumer.subscribe(OtpRequestedV1, handlers.on_code_requested)
    runtime.consumer.subscribe(SmsSentV1, handlers.on_code_sent)
    runtime.consumer.subscribe(SmsFailedV1, handlers.on_code_failed)
    runtime.consumer.subscribe(AccessChangedV1, handlers.on_access_changed)
    runtime.consumer.subscribe(ConvocationReissueRequestedV1, handlers.on_reissue_requested)
    runtime.consumer.subscribe(PatientErasedV1, handlers.on_patient_erased)
    runtime.consumer.subscribe(PatientErasureConfirmedV1, handlers.on_erasure_confirmed)
    oidc = Oidc(settings)
    pages = Pages(settings, console, oidc)
    runtime.keep(
        store.retention_rules(
            settings.convocation_retention_days, settings.binding_retention_days, settings.audit_retention_days
        )
    )
    runtime.every(settings.patient_reseal_interval_seconds, console.reseal_patients, "secretariat-patient-resealer")

    app = runtime.http_app()
    app.state.runtime = runtime
    app.include_router(pages.router())
    app.mount("/api", create_api(console, oidc))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The sign-in redirect continues to the identity provider; the time-out warning fetches keep-alive.
    headers = security_headers(form_action=f"'self' {settings.oidc_issuer}", connect_src="'self'")
    serve_pages(
        app,
        headers=headers,
        plain_paths=("/api/",),
        error_page=lambda request, status: pages.problem(
            request, None, "not-found" if status == 404 else "bad-request", status
        ),
    )

    return app
