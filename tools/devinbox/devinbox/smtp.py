"""SMTP side: an aiosmtpd handler that records into the Inbox, and a Controller that accepts port 0."""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .inbox import Inbox


class InboxHandler:
    """Accepts every recipient and message unless the Inbox scripts another reply (see ``smtp_script``)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.inbox.next_smtp_reply("RCPT") or "250 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.inbox.next_smtp_reply("DATA") or "250 Message accepted for delivery"
        if reply.startswith("2"):
            raw = envelope.original_content or envelope.content or b""
            self.inbox.add_email(
                envelope.mail_from or "", envelope.rcpt_tos, raw if isinstance(raw, bytes) else raw.encode()
            )
        return reply


class InboxController(Controller):
    """aiosmtpd's start-up probe connects to ``self.port``, which fails for port 0: read the
    port the listener really got before probing."""

    def __init__(self, inbox: Inbox, hostname: str, port: int, **kwargs: Any) -> None:
        # server_hostname avoids socket.getfqdn(), which can stall on a DNS lookup.
        super().__init__(
            InboxHandler(inbox), hostname=hostname, port=port, server_hostname="devinbox", ready_timeout=5.0, **kwargs
        )

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
