"""SMS gateway process: the otp.requested handler on the bus, delivery-report webhooks, health, metrics."""

from pathlib import Path

import httpx
from fastapi import FastAPI

from shared.contracts import OtpRequestedV1, PatientErasedV1
from shared.runtime import Runtime
from shared.settings import secret
from sms_gateway import store
from sms_gateway.handlers import SmsHandlers
from sms_gateway.providers import GenericProvider, Provider, TwilioProvider
from sms_gateway.settings import SmsSettings
from sms_gateway.webhooks import webhook_router

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def build_providers(settings: SmsSettings, client: httpx.AsyncClient) -> list[Provider]:
    """The primary (Twilio) first, then the failover provider when one is configured."""
    providers: list[Provider] = [
        TwilioProvider(
            client,
            base_url=settings.sms_provider_url,
            account_sid=settings.sms_account_sid,
            auth_token=settings.sms_auth_token.get_secret_value(),
            sender=settings.sms_from,
        )
    ]
    if settings.sms_generic_url:
        providers.append(
            GenericProvider(client, url=settings.sms_generic_url, token=secret(settings.sms_generic_token))
        )
    return providers


def create_app(settings: SmsSettings | None = None) -> FastAPI:
    settings = settings or SmsSettings()
    runtime = Runtime("sms-gateway", "sms_gateway", settings, MIGRATIONS)
    client = httpx.AsyncClient(timeout=httpx.Timeout(settings.sms_timeout, connect=3.0))
    sandbox = (
        TwilioProvider(
            client,
            base_url=settings.sandbox_sms_provider_url,
            account_sid=settings.sandbox_sms_account_sid,
            auth_token=settings.sandbox_sms_auth_token.get_secret_value(),
            sender=settings.sms_from,
        )
        if settings.sandbox_sms_provider_url
        else None
    )
    handlers = SmsHandlers(settings, build_providers(settings, client), sandbox)
    runtime.consumer.subscribe(OtpRequestedV1, handlers.on_otp_requested)
    runtime.consumer.subscribe(PatientErasedV1, handlers.on_patient_erased)

    runtime.use_retries(handlers.retry)
    runtime.keep(store.retention_rules(settings.sms_retention_days))
    runtime.on_stopping.append(client.aclose)
    app = runtime.http_app()
    app.include_router(webhook_router(settings, lambda: runtime.pool))
    app.state.runtime = runtime
    return app
