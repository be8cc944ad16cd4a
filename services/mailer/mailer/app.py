"""Mailer process: wires the handler to the bus and serves health and metrics."""

from pathlib import Path

from fastapi import FastAPI

from mailer.handlers import MailerHandlers
from mailer.settings import MailerSettings
from mailer.smtp import SmtpSender
from shared.contracts import MessageSealedV1
from shared.runtime import Runtime

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def create_app(settings: MailerSettings | None = None) -> FastAPI:
    settings = settings or MailerSettings()
    runtime = Runtime("mailer", "mailer", settings, MIGRATIONS)
    sender = SmtpSender(settings)
    handlers = MailerHandlers(settings, sender)
    runtime.consumer.subscribe(MessageSealedV1, handlers.on_message_sealed)

    runtime.use_retries(handlers.retry)
    runtime.on_stopping.append(sender.close)
    app = runtime.http_app()
    app.state.runtime = runtime
    return app
