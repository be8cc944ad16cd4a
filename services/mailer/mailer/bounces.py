"""Late bounces: an SMTP listener the relay forwards mail for bounces+<token>@domain to; RFC 3464
delivery status notifications are read with the standard library's parser, a hard one becomes email.failed."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

import structlog
from aiosmtpd.smtp import SMTP

from mailer import store
from mailer.compose import token_hash
from mailer.metrics import BOUNCES
from mailer.settings import MailerSettings
from shared import crypto
from shared.contracts import EmailFailedV1, envelope
from shared.logs import get_logger
from shared.outbox import add_event

log = get_logger(__name__)
MAX_RECIPIENTS = 10
# Refused recipients a connection may try before it is closed: guessing bounce tokens costs a database
# look-up each, and a real relay names the one address it was given.
MAX_REFUSED_RECIPIENTS = 10
_LOCAL = re.compile(r"^bounces\+([a-z2-7]{24})$")
_SMTP_CODE = re.compile(r"\s*([45]\d\d)\b")
_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True)
class Verdict:
    kind: str  # hard, soft, auto-reply, not-a-bounce
    status: str | None = None  # RFC 3463 status, e.g. 5.1.1
    smtp_code: int | None = None
    recipients: tuple[str, ...] = ()  # the addresses the report says failed (Final- and Original-Recipient)

    @property
    def reason(self) -> str:
        # Codes only, like every failure the mailer reports: the report's text may quote the address.
        return f"late-bounce {self.status}" if self.status else "late-bounce"


def classify(message: Message) -> Verdict:
    """Hard (a 5.x.x failure), soft (4.x.x, delayed), an auto-reply (out of office: Auto-Submitted
    without a delivery report), or not a bounce at all."""
    if message.get_content_type() == "multipart/report":
        for part in message.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            # The parser gives one header block per paragraph: per-message fields, then one per recipient.
            blocks = part.get_payload()
            recipients = [b for b in blocks[1:] if isinstance(b, Message)] if isinstance(blocks, list) else []
            verdicts = [_recipient_verdict(b) for b in recipients]
            for wanted in ("hard", "soft"):
                found = [v for v in verdicts if v.kind == wanted]
                if found:
                    failed = tuple(a for v in found for a in v.recipients)
                    return Verdict(found[0].kind, found[0].status, found[0].smtp_code, failed)
            return Verdict("not-a-bounce")  # e.g. "delivered" or "relayed" reports
    if (message.get("Auto-Submitted") or "no").strip().lower() != "no":
        return Verdict("auto-reply")
    return Verdict("not-a-bounce")


def _recipient_verdict(block: Message) -> Verdict:
    # Only codes are kept from a report: its text may quote the patient's address.
    action = (block.get("Action") or "").strip().lower()
    match = _STATUS.match(block.get("Status") or "")
    status = match.group(1) if match else ""
    code = _SMTP_CODE.match((block.get("Diagnostic-Code") or "").partition(";")[2])
    smtp_code = int(code.group(1)) if code else None
    addresses = tuple(
        address
        for field in ("Final-Recipient", "Original-Recipient")
        if (address := (block.get(field) or "").partition(";")[2].strip().strip("<>").lower())
    )
    if action == "failed" and status.startswith("5."):
        return Verdict("hard", status, smtp_code, addresses)
    if action in ("failed", "delayed") and (status.startswith("4.") or action == "delayed"):
        return Verdict("soft", status or None, smtp_code)
    return Verdict("not-a-bounce", status or None)


def token_of(address: str, bounce_domain: str) -> str | None:
    local, _, domain = address.strip("<>").rpartition("@")
    match = _LOCAL.match(local.lower())
    return match.group(1) if match and domain.lower() == bounce_domain.lower() else None


class BounceHandler:
    """aiosmtpd handler: RCPT is refused unless it names a token of an e-mail we sent; DATA is
    classified and, for a hard bounce, recorded with its email.failed in one transaction."""

    def __init__(self, settings: MailerSettings, pool_getter) -> None:
        self.domain = settings.bounce_domain or settings.sender_domain
        self.keys = settings.mailer_field_key
        self._pool = pool_getter

    async def handle_RCPT(self, server, session, smtp_envelope, address: str, rcpt_options) -> str:
        if len(smtp_envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        refused = getattr(session, "refused_recipients", 0)
        if refused >= MAX_REFUSED_RECIPIENTS:
            BOUNCES.labels("too-many-refused").inc()
            log.warning("bounce listener: too many refused recipients; closing the connection")
            asyncio.get_running_loop().call_soon(server.transport.close)  # once the reply is written
            return "421 4.7.0 Too many unknown recipients, closing connection"
        token = token_of(address, self.domain)
        known = False
        if token is not None:
            async with self._pool().acquire() as conn:
                known = await store.message_of_token(conn, token_hash(token)) is not None
        if not known:
            session.refused_recipients = refused + 1
            return "550 5.1.1 No such bounce address"
        smtp_envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, smtp_envelope) -> str:
        # compat32 parses message/delivery-status into its header blocks like the default policy, faster.
        try:
            verdict = classify(message_from_bytes(smtp_envelope.content, policy=compat32))
        except RecursionError:  # MIME parts nested thousands deep: no report of ours looks like that
            BOUNCES.labels("malformed").inc()
            log.warning("mail on the bounce address refused: MIME structure nested too deep")
            return "554 5.6.0 Message structure too deeply nested"
        if verdict.kind != "hard":
            BOUNCES.labels(verdict.kind).inc()
            log.info("mail on the bounce address ignored", verdict=verdict.kind, status=verdict.status)
            return "250 OK"
        now = datetime.now(timezone.utc)
        async with self._pool().acquire() as conn, conn.transaction():
            for address in smtp_envelope.rcpt_tos:
                found = await store.token_recipient(conn, token_hash(token_of(address, self.domain) or ""))
                message_id, sent_to = found or (None, None)
                if sent_to is not None and not any(
                    crypto.hash_matches(self.keys, "mailer.bounce-recipient", a, sent_to) for a in verdict.recipients
                ):
                    # A report about another address (a forwarded copy, a forged report): the letter's own
                    # address was not refused.
                    BOUNCES.labels("other-recipient").inc()
                    log.warning("hard bounce for another recipient ignored", status=verdict.status)
                    continue
                row = await store.get_email(conn, message_id) if message_id else None
                if (
                    row is None
                    or message_id is None
                    or not await store.record_bounced(conn, message_id, verdict.smtp_code, verdict.reason, now)
                ):
                    BOUNCES.labels("duplicate").inc()
                    continue
                with structlog.contextvars.bound_contextvars(correlation_id=str(row["convocation_id"])):
                    await add_event(conn, envelope_for(row, verdict, now))
                    BOUNCES.labels("hard").inc()
                    log.warning("late hard bounce", status=verdict.status, smtp_code=verdict.smtp_code)
        return "250 OK"


def envelope_for(row, verdict: Verdict, at: datetime):
    return envelope(
        EmailFailedV1(
            message_id=row["message_id"],
            convocation_id=row["convocation_id"],
            smtp_code=verdict.smtp_code,
            reason=verdict.reason,
            failed_at=at,
            late=True,
        ),
        producer="mailer",
        correlation_id=row["convocation_id"],
    )


class BounceListener:
    """The inbound SMTP server, in the service's own event loop."""

    def __init__(self, settings: MailerSettings, pool_getter) -> None:
        self.settings, self.handler = settings, BounceHandler(settings, pool_getter)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        s = self.settings
        if not s.bounce_smtp_port:
            return
        # aiosmtpd logs every command line at INFO: RCPT TO would put the bounce tokens in the logs.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(
                self.handler,
                data_size_limit=s.bounce_max_bytes,
                hostname=self.handler.domain,
                ident="convocations-mailer bounces",
                timeout=60,
                loop=loop,
            ),
            host=s.bounce_smtp_host,
            port=s.bounce_smtp_port,
        )
        log.info("bounce listener started", port=s.bounce_smtp_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
