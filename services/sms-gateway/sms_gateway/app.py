"""SMS gateway process: wires the handler to the bus and serves health and metrics."""

from pathlib import Path

import httpx
from fastapi import FastAPI

from shared.contracts import OtpRequestedV1
from shared.runtime import Runtime
from sms_gateway.handlers import SmsHandlers
from sms_gateway.providers import TwilioProvider
from sms_gateway.settings import SmsSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def create_app(settings: SmsSettings | None = None) -> FastAPI:
    settings = settings or SmsSettings()
    runtime = Runtime("sms-gateway", "sms_gateway", settings, MIGRATIONS)
    client = httpx.AsyncClient(timeout=httpx.Timeout(settings.sms_timeout, connect=3.0))
    provider = TwilioProvider(client, base_url=settings.sms_provider_url, account_sid=settings.sms_account_sid,
                              auth_token=settings.sms_auth_token, sender=settings.sms_from)
    handlers = SmsHandlers(settings, provider)
    runtime.consumer.subscribe(OtpRequestedV1, handlers.on_otp_requested)

    async def declare_retries() -> None:
        await handlers.retry.declare(runtime.broker, settings.events_exchange, runtime.consumer.queues)

    runtime.on_started.append(declare_retries)
    runtime.on_stopping.append(client.aclose)
    app = runtime.http_app()
    app.state.runtime = runtime
    return app
