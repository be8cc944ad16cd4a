"""SMTP delivery over a few reused connections (aiosmtplib), and failure classification."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass

import aiosmtplib

from mailer.settings import MailerSettings


@dataclass(frozen=True)
class SmtpFailure(Exception):
    """A send that did not succeed: ``permanent`` failures are never retried. ``reason`` is a short
    code from a fixed vocabulary (never text from outside, which may carry a name or an address)."""

    permanent: bool
    code: int | None
    reason: str


# An enhanced status code (RFC 3463, '5.1.1') at the start of a relay's reply: safe to keep.
_ENHANCED = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")


def _enhanced(message: str) -> str:
    match = _ENHANCED.match(message or "")
    return f" {match.group(1)}" if match else ""


def classify(exc: Exception) -> SmtpFailure:
    """4xx, connection errors and time-outs are transient; 5xx and refused recipients are permanent.

    Only the reply code, its enhanced status and the kind of error are kept: a relay's text or a
    local exception's message may echo the recipient's name or address, and the reason is stored,
    logged and published (email.failed, the hospital's delivery report)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0]
        return SmtpFailure(first.code >= 500, first.code, f"recipient-refused{_enhanced(first.message)}")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SmtpFailure(exc.code >= 500, exc.code, f"relay-refused{_enhanced(exc.message)}")
    return SmtpFailure(False, None, f"local-error {type(exc).__name__}")


class SmtpSender:
    def __init__(self, settings: MailerSettings) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max(1, settings.smtp_connections))

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_tls == "tls",
            start_tls=True if s.smtp_tls == "starttls" else False,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout,
            tls_context=ssl.create_default_context(cafile=s.smtp_ca_file) if s.smtp_tls != "none" else None,
        )

    async def send(self, message: bytes, *, sender: str, recipients: list[str]) -> str:
        """Send one message, as these exact (DKIM-signed) bytes, from ``sender`` to exactly
        ``recipients`` (never to addresses read from its headers); returns the server's reply.
        Raises SmtpFailure."""
        async with self._slots:
            reused = not self._idle.empty()
            client = self._idle.get_nowait() if reused else self._client()
            try:
                return await self._send_on(client, message, sender, recipients)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                await self._discard(client)
                if not reused:
                    raise classify(exc) from exc
            except Exception as exc:
                await self._discard(client)
                raise classify(exc) from exc
            # A kept connection the server had closed meanwhile: one fresh try, right away.
            client = self._client()
            try:
                return await self._send_on(client, message, sender, recipients)
            except Exception as exc:
                await self._discard(client)
                raise classify(exc) from exc

    async def _send_on(self, client: aiosmtplib.SMTP, message: bytes, sender: str, recipients: list[str]) -> str:
        if not client.is_connected:
            await client.connect()
        _errors, reply = await client.sendmail(sender, recipients, message)
        self._idle.put_nowait(client)
        return reply

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        # A connection being thrown away may already be broken in any way; closing it is best effort.
        with contextlib.suppress(Exception):
            if client.is_connected:
                client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                if client.is_connected:
                    await client.quit()
            except Exception:
                client.close()
