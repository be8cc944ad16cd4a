"""Mailer process: wires the handlers to the bus, listens for bounces, and serves health and metrics."""

from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI

from mailer import store
from mailer.bounces import BounceListener
from mailer.handlers import MailerHandlers
from mailer.settings import MailerSettings
from mailer.smtp import SmtpSender
from shared.contracts import EmailRequestedV1, MessageRevokedV1, PatientErasedV1, ReminderRequestedV1
from shared.logs import get_logger
from shared.runtime import Runtime

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = get_logger(__name__)


def create_app(settings: MailerSettings | None = None) -> FastAPI:
    settings = settings or MailerSettings()
    runtime = Runtime("mailer", "mailer", settings, MIGRATIONS)
    sender = SmtpSender(settings)
    sandbox_settings = settings.sandbox_smtp()
    sandbox = SmtpSender(sandbox_settings) if sandbox_settings else None
    handlers = MailerHandlers(settings, sender, sandbox)
    runtime.consumer.subscribe(EmailRequestedV1, handlers.on_email_requested)
    runtime.consumer.subscribe(MessageRevokedV1, handlers.on_message_revoked)
    runtime.consumer.subscribe(ReminderRequestedV1, handlers.on_reminder_requested)
    runtime.consumer.subscribe(PatientErasedV1, handlers.on_patient_erased)

    async def forget_expired() -> None:
        # Also when the issuer's message.revoked(expired) never comes: the mailer's own clock.
        pool = runtime.pool
        assert pool is not None  # the runtime runs its periodic tasks once started
        async with pool.acquire() as conn, conn.transaction():
            if forgotten := await store.forget_expired(conn, datetime.now(timezone.utc)):
                log.info("expired recipients destroyed", count=forgotten)

    bounces = BounceListener(settings, lambda: runtime.pool)
    runtime.use_retries(handlers.retry)
    runtime.on_started.append(bounces.start)
    runtime.on_stopping.append(bounces.stop)
    runtime.on_stopping.append(sender.close)
    if sandbox is not None:
        runtime.on_stopping.append(sandbox.close)
    runtime.every(settings.sweep_seconds, forget_expired, "mailer-expiry")
    runtime.keep(store.retention_rules(settings.email_retention_days))
    app = runtime.http_app()
    app.state.runtime = runtime
    return app
