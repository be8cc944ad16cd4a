"""Mailer handler: message.sealed -> one e-mail with the link -> email.sent or email.failed."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from mailer import store
from mailer.compose import UnsafeHeader, build_message, envelope_sender, smtp_message_id
from mailer.emails import render_email
from mailer.metrics import SMTP_ATTEMPTS
from mailer.settings import MailerSettings
from mailer.smtp import SmtpFailure, SmtpSender
from shared import crypto
from shared.consumer import Delivery, Rejected
from shared.contracts import EmailFailedV1, EmailSentV1, MessageSealedV1, envelope
from shared.logs import get_logger
from shared.outbox import add_event
from shared.retry import RetryPolicy, schedule_retry

PRODUCER = "mailer"
log = get_logger(__name__)


def portal_link(base_url: str, message_id, link_secret: str) -> str:
    """The secret rides in the fragment: browsers never send it to a server or in a Referer."""
    return f"{base_url.rstrip('/')}/m/{message_id}#{link_secret}"


class MailerHandlers:
    def __init__(self, settings: MailerSettings, sender: SmtpSender) -> None:
        self.settings, self.sender = settings, sender
        self.retry = RetryPolicy.parse(settings.mailer_retry_delays)

    async def on_message_sealed(self, conn: asyncpg.Connection, d: Delivery[MessageSealedV1]) -> None:
        m = d.data
        if not m.send_email:
            return
        row = await store.get_email(conn, m.message_id)
        if row is not None and row["status"] in ("sent", "failed"):
            log.info("e-mail already handled; not sending again", status=row["status"])
            return
        recipient = crypto.open_field(
            self.settings.mailer_field_key, m.for_mailer,
            context=crypto.field_context("message.sealed", m.message_id, "mailer"),
        )
        mid = smtp_message_id(m.message_id, self.settings.mail_from)
        attempts = (row["attempts"] if row else 0) + 1
        if not recipient.get("email"):
            await self._failed(conn, d, mid, attempts, SmtpFailure(True, None, "no-email-address"))
            return
        rendered = render_email(
            language=m.language, patient_name=recipient["name"],
            link=portal_link(self.settings.portal_base_url, m.message_id, recipient["link_secret"]),
            hospital_name=self.settings.hospital_name, secretariat_phone=m.secretariat_phone,
            secretariat_email=m.secretariat_email,
        )
        try:
            message = build_message(rendered, mail_from=self.settings.mail_from, to_name=recipient["name"],
                                    to_address=recipient["email"], message_id=m.message_id, language=m.language)
        except UnsafeHeader as exc:
            # The contracts refuse such names upstream; a producer that slipped one through is parked.
            raise Rejected("unsafe-header", str(exc)) from None
        try:
            await self.sender.send(message, sender=envelope_sender(self.settings.mail_from),
                                   recipients=[recipient["email"]])
        except SmtpFailure as failure:
            delay = None if failure.permanent else self.retry.delay_for(attempts)
            if delay is None:
                await self._failed(conn, d, mid, attempts, failure)
            else:
                SMTP_ATTEMPTS.labels("transient").inc()
                await store.record_retry(conn, m.message_id, m.convocation_id, mid, attempts, failure.code,
                                         failure.reason)
                await schedule_retry(conn, d, exchange=self.settings.events_exchange, attempt=attempts, delay=delay)
                log.warning("smtp transient failure; retry scheduled", smtp_code=failure.code, attempt=attempts,
                            delay_s=delay)
            return
        now = datetime.now(timezone.utc)
        SMTP_ATTEMPTS.labels("accepted").inc()
        await store.record_sent(conn, m.message_id, m.convocation_id, mid, attempts, now)
        await add_event(conn, envelope(
            EmailSentV1(message_id=m.message_id, convocation_id=m.convocation_id, smtp_message_id=mid,
                        accepted_at=now),
            producer=PRODUCER, correlation_id=d.envelope.correlation_id, causation_id=d.envelope.event_id))
        log.info("e-mail accepted by the relay", attempt=attempts)

    async def _failed(self, conn, d: Delivery[MessageSealedV1], mid: str, attempts: int, failure: SmtpFailure) -> None:
        m, now = d.data, datetime.now(timezone.utc)
        SMTP_ATTEMPTS.labels("permanent" if failure.permanent else "exhausted").inc()
        await store.record_failed(conn, m.message_id, m.convocation_id, mid, attempts, failure.code,
                                  failure.reason, now)
        await add_event(conn, envelope(
            EmailFailedV1(message_id=m.message_id, convocation_id=m.convocation_id, smtp_code=failure.code,
                          reason=failure.reason[:500], failed_at=now),
            producer=PRODUCER, correlation_id=d.envelope.correlation_id, causation_id=d.envelope.event_id))
        log.warning("e-mail failed", smtp_code=failure.code, reason=failure.reason, attempts=attempts)
