"""Mailer handlers: email.requested -> the link e-mail -> email.sent or email.failed; message.revoked
and reminder.requested -> a notice to the patient, once; a late bounce -> email.failed."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import urlsplit

import asyncpg

from mailer import store
from mailer.compose import UnsafeHeader, bounce_address, build_message, smtp_message_id, to_bytes
from mailer.emails import RenderedEmail, render_email, render_notice
from mailer.metrics import NOTICES, SMTP_ATTEMPTS
from mailer.settings import MailerSettings
from mailer.signing import DkimSigner, parse_dkim_keys
from mailer.smtp import SmtpFailure, SmtpSender
from shared import crypto, erasure, rejections
from shared.consumer import Delivery, Rejected
from shared.contracts import (
    EmailFailedV1,
    EmailRequestedV1,
    EmailSentV1,
    MessageRevokedV1,
    PatientErasedV1,
    ReminderRequestedV1,
    envelope,
)
from shared.logs import get_logger
from shared.outbox import add_event
from shared.retry import RetryPolicy, schedule_retry

PRODUCER = "mailer"
log = get_logger(__name__)


def portal_link(base_url: str, message_id, link_secret: str) -> str:
    """The secret rides in the fragment, with its check: browsers never send it to a server or in a
    Referer, and the page tells a damaged link before anything is sent (``crypto.link_check``)."""
    return f"{base_url.rstrip('/')}/m/{message_id}#{crypto.link_fragment(link_secret)}"


def recipient_hash(keys, address: str) -> str:
    """The keyed hash of an address an e-mail went to, which a late bounce must name (mailer/bounces.py)."""
    return crypto.keyed_hash(keys, "mailer.bounce-recipient", address.strip().lower())


def recipient_context(message_id: uuid.UUID) -> str:
    return crypto.field_context("mailer.recipient", message_id, "mailer")


class MailerHandlers:
    def __init__(self, settings: MailerSettings, sender: SmtpSender, sandbox: SmtpSender | None = None) -> None:
        self.settings, self.sender, self.sandbox = settings, sender, sandbox
        self.retry = RetryPolicy.parse(settings.mailer_retry_delays)
        self.signer = DkimSigner(
            settings.dkim_domain or settings.sender_domain, tuple(parse_dkim_keys(settings.dkim_keys))
        )
        self.portal_host = urlsplit(settings.portal_base_url).hostname or settings.portal_base_url

    async def on_email_requested(self, conn: asyncpg.Connection, d: Delivery[EmailRequestedV1]) -> None:
        """The link e-mail. The event carries the link and no part of the letter (message.sealed takes
        the letter to the portal): no copy of it, retried or dead-lettered, opens a letter."""
        m = d.data
        row, previous_sent_at = await store.email_to_send(conn, m.message_id, m.convocation_id)
        if d.attempt and row is None:
            # A delayed retry of an e-mail whose row is gone: the patient's data was erased on request.
            log.info("retry of an erased e-mail dropped", attempt=d.attempt)
            return
        if row is not None and row["status"] in ("sent", "failed", "bounced", "revoked"):
            log.info("e-mail already handled; not sending again", status=row["status"])
            return
        recipient = crypto.open_field(
            self.settings.mailer_field_key,
            m.for_mailer,
            context=crypto.field_context(EmailRequestedV1.EVENT_TYPE, m.message_id, "mailer"),
        )
        mid = smtp_message_id(m.message_id, self.settings.mail_from)
        attempts = (row["attempts"] if row else 0) + 1
        if not recipient.get("email"):
            await self._failed(conn, d, mid, attempts, SmtpFailure(True, None, "no-email-address"))
            return
        contact = m.public_contact.model_dump(mode="json") if m.public_contact else {}
        rendered = render_email(
            language=m.language,
            patient_name=recipient["name"],
            link=portal_link(self.settings.portal_base_url, m.message_id, recipient["link_secret"]),
            hospital_name=self.settings.hospital_name,
            contact_phone=contact.get("phone"),
            contact_email=contact.get("email"),
            # "This replaces the e-mail of <date>" only to the address that got that e-mail: after the
            # secretariat corrected the address, the earlier one went elsewhere (or nowhere).
            replaces_date=None if recipient.get("address_corrected") else previous_sent_at,
            open_until=m.expires_at,
            # A new version from the hospital changed the letter; the secretariat's resend did not.
            replaced_because="sent-again" if recipient.get("sent_again") else "changed",
        )
        try:
            await self._send(conn, m.message_id, "link", rendered, recipient, m.language, sandbox=m.sandbox)
        except SmtpFailure as failure:
            delay = None if failure.permanent else self.retry.delay_for(attempts)
            if delay is None:
                await self._failed(conn, d, mid, attempts, failure)
            else:
                SMTP_ATTEMPTS.labels("transient").inc()
                await store.record_retry(
                    conn, m.message_id, m.convocation_id, mid, attempts, failure.code, failure.reason
                )
                await schedule_retry(conn, d, exchange=self.settings.events_exchange, attempt=attempts, delay=delay)
                log.warning(
                    "smtp transient failure; retry scheduled", smtp_code=failure.code, attempt=attempts, delay_s=delay
                )
            return
        now = datetime.now(timezone.utc)
        SMTP_ATTEMPTS.labels("accepted").inc()
        sealed_recipient = crypto.seal_field(
            self.settings.mailer_field_key,
            {"email": recipient["email"], "name": recipient["name"]},
            context=recipient_context(m.message_id),
        )
        await store.record_sent(
            conn,
            m.message_id,
            m.convocation_id,
            mid,
            attempts,
            now,
            recipient=sealed_recipient,
            language=m.language,
            public_contact=contact or None,
            expires_at=m.expires_at,
        )
        if m.sandbox:
            await store.mark_sandbox(conn, m.message_id)
        await add_event(
            conn,
            envelope(
                EmailSentV1(
                    message_id=m.message_id, convocation_id=m.convocation_id, smtp_message_id=mid, accepted_at=now
                ),
                producer=PRODUCER,
                correlation_id=d.envelope.correlation_id,
                causation_id=d.envelope.event_id,
            ),
        )
        log.info("e-mail accepted by the relay", attempt=attempts)

    async def on_message_revoked(self, conn: asyncpg.Connection, d: Delivery[MessageRevokedV1]) -> None:
        """A message cancelled by the hospital or withdrawn by the secretariat: tell the patient which, once.
        (A superseded one is told by the e-mail of the message replacing it.) Whatever the reason, the address
        then goes."""
        m = d.data
        if m.reason in ("cancelled", "withdrawn"):
            if not await self._notice(conn, d, m.reason):
                return  # a transient failure: retried later, the address is still needed
        # A link e-mail still waiting for a retry (or not seen yet) must never go out now.
        await store.record_revoked(
            conn, m.message_id, m.convocation_id, smtp_message_id(m.message_id, self.settings.mail_from)
        )
        await store.forget_recipient(conn, m.message_id)

    async def on_patient_erased(self, conn: asyncpg.Connection, d: Delivery[PatientErasedV1]) -> None:
        """The patient asked for their data to be erased: their e-mails go, and the mailer says so."""
        rows = await store.erase(conn, d.data.convocation_ids)
        await erasure.confirm_erased(conn, PRODUCER, d, rows)

    async def on_reminder_requested(self, conn: asyncpg.Connection, d: Delivery[ReminderRequestedV1]) -> None:
        await self._notice(conn, d, "reminder")

    async def _notice(
        self, conn: asyncpg.Connection, d: Delivery, kind: Literal["cancelled", "withdrawn", "reminder"]
    ) -> bool:
        """Send one notice about the message's e-mail; False when a retry was scheduled."""
        message_id = d.data.message_id
        row = await store.get_email(conn, message_id)
        if d.attempt and row is None:
            return True  # a delayed retry of a notice whose e-mail is gone: the patient's data was erased
        if await store.notice_done(conn, message_id, kind):
            return True
        now = datetime.now(timezone.utc)
        if row is None or row["status"] != "sent" or row["recipient"] is None:
            # Never e-mailed, bounced, or expired (the address is gone): nobody to write to.
            await store.record_notice(conn, message_id, kind, "skipped", now)
            NOTICES.labels(kind, "skipped").inc()
            log.info("notice skipped: no e-mail to refer to", kind=kind)
            return True
        recipient = crypto.open_field(
            self.settings.mailer_field_key, row["recipient"], context=recipient_context(message_id)
        )
        contact = (
            json.loads(row["public_contact"])
            if isinstance(row["public_contact"], str)
            else (row["public_contact"] or {})
        )
        rendered = render_notice(
            kind=kind,
            language=row["language"],
            patient_name=recipient["name"],
            hospital_name=self.settings.hospital_name,
            portal_host=self.portal_host,
            sent_at=row["sent_at"],
            contact_phone=contact.get("phone"),
            contact_email=contact.get("email"),
        )
        try:
            await self._send(conn, message_id, kind, rendered, recipient, row["language"], sandbox=row["sandbox"])
        except SmtpFailure as failure:
            delay = None if failure.permanent else self.retry.delay_for(d.attempt + 1)
            if delay is not None:
                await schedule_retry(
                    conn, d, exchange=self.settings.events_exchange, attempt=d.attempt + 1, delay=delay
                )
                log.warning("notice: smtp transient failure; retry scheduled", kind=kind, smtp_code=failure.code)
                return False
            await store.record_notice(conn, message_id, kind, "failed", now)
            NOTICES.labels(kind, "failed").inc()
            log.warning("notice failed", kind=kind, smtp_code=failure.code, reason=failure.reason)
            return True
        await store.record_notice(conn, message_id, kind, "sent", now)
        NOTICES.labels(kind, "sent").inc()
        log.info("notice sent", kind=kind)
        return True

    async def _send(
        self,
        conn,
        message_id: uuid.UUID,
        kind: str,
        rendered: RenderedEmail,
        recipient: dict,
        language: str,
        *,
        sandbox: bool = False,
    ) -> None:
        """Sign and send one e-mail from its own VERP envelope sender, whose token is kept (hashed)
        so that a bounce coming back later is recognised; a sandbox test's only to the sandbox endpoint.
        Raises SmtpFailure."""
        sender_smtp = self.sandbox if sandbox else self.sender
        if sender_smtp is None:
            raise SmtpFailure(True, None, "sandbox-not-configured")
        sender, token_hash = bounce_address(self.settings.bounce_domain or self.settings.sender_domain)
        try:
            message = build_message(
                rendered,
                mail_from=self.settings.mail_from,
                to_name=recipient["name"],
                to_address=recipient["email"],
                message_id=message_id,
                language=language,
                kind=kind,
            )
        except UnsafeHeader as exc:
            # The contracts refuse such names upstream; a producer that slipped one through is parked.
            raise Rejected(rejections.UNSAFE_HEADER, str(exc)) from None
        await sender_smtp.send(self.signer.sign(to_bytes(message)), sender=sender, recipients=[recipient["email"]])
        await store.add_bounce_token(
            conn, token_hash, message_id, kind, recipient_hash(self.settings.mailer_field_key, recipient["email"])
        )

    async def _failed(self, conn, d: Delivery[EmailRequestedV1], mid: str, attempts: int, failure: SmtpFailure) -> None:
        m, now = d.data, datetime.now(timezone.utc)
        SMTP_ATTEMPTS.labels("permanent" if failure.permanent else "exhausted").inc()
        await store.record_failed(
            conn, m.message_id, m.convocation_id, mid, attempts, failure.code, failure.reason, now
        )
        await add_event(
            conn,
            envelope(
                EmailFailedV1(
                    message_id=m.message_id,
                    convocation_id=m.convocation_id,
                    smtp_code=failure.code,
                    reason=failure.reason[:500],
                    failed_at=now,
                ),
                producer=PRODUCER,
                correlation_id=d.envelope.correlation_id,
                causation_id=d.envelope.event_id,
            ),
        )
        log.warning("e-mail failed", smtp_code=failure.code, reason=failure.reason, attempts=attempts)
