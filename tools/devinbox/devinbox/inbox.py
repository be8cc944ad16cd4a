"""In-memory, thread-safe store of caught e-mails and SMS, with fault injection.

The SMTP handler (aiosmtpd's thread), the HTTP app (uvicorn's thread) and the test
thread all share one ``Inbox``, so every access goes through one ``Condition``:
blocking waiters are woken on each change instead of sleeping blindly.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any, Literal

Item = dict[str, Any]
Predicate = Callable[[Item], bool]
SmtpCommand = Literal["RCPT", "DATA"]
Provider = Literal["twilio", "generic"]

_REPLY_RE = re.compile(r"^[2-5]\d\d( .*)?$")
_LINK_RE = re.compile(r"https?://[^\s<>\"']+")


@dataclass(frozen=True)
class SmsFault:
    """One scripted answer of an SMS API: wait ``delay`` seconds, then answer with HTTP
    ``status`` (a provider-shaped error body), or handle the request normally if ``status`` is None.
    ``SmsFault(delay=30)`` makes a request hang long enough for the client to time out."""

    status: int | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class DeliveryFailure:
    """How the next accepted SMS ends: Twilio status "undelivered"/"failed" (generic: "failed")."""

    error_code: int | str = 30003
    status: Literal["undelivered", "failed"] = "undelivered"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_email(raw: bytes) -> Item:
    """Subject, Message-ID, plain and HTML bodies, and the http(s) links of the plain body."""
    try:
        msg = message_from_bytes(raw, policy=default_policy)

        def body(kind: str) -> str | None:
            part = msg.get_body(preferencelist=(kind,))
            return None if part is None else str(part.get_content())

        text, html = body("plain"), body("html")
        subject, message_id = msg["subject"], msg["message-id"]
    except Exception:  # a dev inbox must never drop a message because it is malformed
        text, html, subject, message_id = raw.decode("utf-8", "replace"), None, None, None
    # A link at the end of a sentence keeps its punctuation in the regex match; drop it.
    links = [link.rstrip(".,;:!?)]}") for link in _LINK_RE.findall(text or "")]
    return {
        "subject": None if subject is None else str(subject),
        "message_id": None if message_id is None else str(message_id),
        "text": text or "",
        "html": html,
        "links": list(dict.fromkeys(links)),
    }


def _copy(item: Item) -> Item:
    # Callers get snapshots: the live dicts keep changing (SMS status) in other threads.
    return {k: list(v) if isinstance(v, list) else v for k, v in item.items()}


def _matcher(predicate: Predicate | None, to: str | None) -> Predicate:
    def match(item: Item) -> bool:
        if to is not None:
            dest = item.get("rcpt_tos", item.get("to"))
            if (to not in dest) if isinstance(dest, list) else dest != to:
                return False
        return predicate is None or bool(predicate(item))

    return match


class Inbox:
    """Caught e-mails and SMS (oldest first) plus the scripted faults of both servers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # RLock inside: predicates may call back into the inbox
        self._emails: list[Item] = []
        self._sms: list[Item] = []
        self._smtp: dict[str, deque[str]] = {"RCPT": deque(), "DATA": deque()}
        self._sms_faults: dict[str, deque[SmsFault]] = {"twilio": deque(), "generic": deque()}
        self._failures: deque[DeliveryFailure] = deque()

    # ----------------------------------------------------------------- fault injection
    def smtp_script(self, replies: Iterable[str], *, at: SmtpCommand = "RCPT") -> None:
        """Answer the next SMTP commands of kind ``at`` with ``replies``, in order; then "250" again.

        - ``at="RCPT"``: each RCPT TO (one per recipient) takes the next reply. A 2xx reply accepts
          the recipient, any other refuses it (``"451 4.3.0 Try again later"``, ``"550 5.1.1 No such user"``).
        - ``at="DATA"``: each message, once its content is received, takes the next reply; with a
          non-2xx reply the message is not stored.
        A new call replaces the previous script of that command; ``clear()`` drops all scripts.
        """
        replies = list(replies)
        if at not in self._smtp:
            raise ValueError(f"at must be 'RCPT' or 'DATA', not {at!r}")
        if bad := [r for r in replies if not _REPLY_RE.match(r)]:
            raise ValueError(f"not SMTP replies (expected e.g. '451 4.3.0 Try again later'): {bad}")
        with self._cond:
            self._smtp[at] = deque(replies)

    def sms_script(self, provider: Provider, faults: Iterable[int | SmsFault]) -> None:
        """Answer the next authenticated send requests of ``provider`` ("twilio" or "generic")
        with ``faults`` in order (an int is an HTTP status, e.g. ``[503, 503]``); then normal success.
        A new call replaces that provider's script."""
        if provider not in self._sms_faults:
            raise ValueError(f"provider must be 'twilio' or 'generic', not {provider!r}")
        script = deque(f if isinstance(f, SmsFault) else SmsFault(status=int(f)) for f in faults)
        with self._cond:
            self._sms_faults[provider] = script

    def sms_fail_delivery(
        self, error_code: int | str = 30003, *, status: Literal["undelivered", "failed"] = "undelivered", count: int = 1
    ) -> None:
        """Make the next ``count`` accepted SMS (either provider) end failed with ``error_code``
        instead of "delivered"; the status callbacks report it."""
        with self._cond:
            self._failures.extend([DeliveryFailure(error_code, status)] * count)

    def next_smtp_reply(self, command: SmtpCommand) -> str | None:
        with self._cond:
            return self._smtp[command].popleft() if self._smtp[command] else None

    def next_sms_fault(self, provider: Provider) -> SmsFault | None:
        with self._cond:
            return self._sms_faults[provider].popleft() if self._sms_faults[provider] else None

    def next_delivery_failure(self) -> DeliveryFailure | None:
        with self._cond:
            return self._failures.popleft() if self._failures else None

    # ----------------------------------------------------------------- recording
    def add_email(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Item:
        item = {
            "id": uuid.uuid4().hex,
            "received_at": now_iso(),
            "mail_from": mail_from,
            "rcpt_tos": list(rcpt_tos),
            **parse_email(raw),
            "raw": raw,
        }
        with self._cond:
            self._emails.append(item)
            self._cond.notify_all()
        return _copy(item)

    def add_sms(
        self,
        *,
        id: str,
        provider: Provider,
        to: str,
        from_: str | None,
        body: str,
        status: str,
        status_callback: str | None,
        **extra: Any,
    ) -> Item:
        item = {
            "id": id,
            "received_at": now_iso(),
            "provider": provider,
            "to": to,
            "from_": from_,
            "body": body,
            "status": status,
            "status_callback": status_callback,
            "error_code": None,
            "callbacks": [],
            **extra,
        }
        with self._cond:
            self._sms.append(item)
            self._cond.notify_all()
        return _copy(item)

    def update_sms(self, sms_id: str, *, callback: Item | None = None, **changes: Any) -> None:
        """Change fields of a caught SMS; ``callback`` appends to its log of status callbacks."""
        with self._cond:
            for item in self._sms:
                if item["id"] == sms_id:
                    item.update(changes)
                    if callback is not None:
                        item["callbacks"].append(callback)
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget all e-mails and SMS and every scripted fault."""
        with self._cond:
            self._emails.clear()
            self._sms.clear()
            queues: list[deque[Any]] = [*self._smtp.values(), *self._sms_faults.values(), self._failures]
            for q in queues:
                q.clear()
            self._cond.notify_all()

    # ----------------------------------------------------------------- reading
    def emails(self) -> list[Item]:
        with self._cond:
            return [_copy(i) for i in self._emails]

    def sms(self) -> list[Item]:
        with self._cond:
            return [_copy(i) for i in self._sms]

    def get_email(self, email_id: str) -> Item | None:
        return next((i for i in self.emails() if i["id"] == email_id), None)

    def get_sms(self, sms_id: str) -> Item | None:
        return next((i for i in self.sms() if i["id"] == sms_id), None)

    def wait_for_email(
        self, predicate: Predicate | None = None, timeout: float = 10.0, *, to: str | None = None
    ) -> Item:
        """Block until an e-mail (already caught or new) matches ``predicate`` and, if given, has
        ``to`` among its recipients; return the first match (oldest first) or raise TimeoutError."""
        return self._wait("e-mail", self._emails, _matcher(predicate, to), timeout)

    def wait_for_sms(self, predicate: Predicate | None = None, timeout: float = 10.0, *, to: str | None = None) -> Item:
        """Like ``wait_for_email`` for SMS; status changes also wake the waiter, so
        ``lambda s: s["status"] == "delivered"`` works."""
        return self._wait("SMS", self._sms, _matcher(predicate, to), timeout)

    async def await_email(
        self, predicate: Predicate | None = None, timeout: float = 10.0, *, to: str | None = None
    ) -> Item:
        """``wait_for_email`` for async tests: polls without blocking the event loop."""
        return await self._await("e-mail", self._emails, _matcher(predicate, to), timeout)

    async def await_sms(
        self, predicate: Predicate | None = None, timeout: float = 10.0, *, to: str | None = None
    ) -> Item:
        return await self._await("SMS", self._sms, _matcher(predicate, to), timeout)

    def _find(self, items: list[Item], match: Predicate) -> Item | None:
        with self._cond:  # matched on the live items under the lock that guards them; only the match is copied
            return next((_copy(c) for c in items if match(c)), None)

    def _wait(self, what: str, items: list[Item], match: Predicate, timeout: float) -> Item:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := self._find(items, match)) is None:
                if (left := deadline - time.monotonic()) <= 0:
                    raise TimeoutError(self._timeout_message(what, items, timeout))
                self._cond.wait(left)
            return found

    async def _await(self, what: str, items: list[Item], match: Predicate, timeout: float) -> Item:
        deadline = time.monotonic() + timeout
        while (found := self._find(items, match)) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(what, items, timeout))
            await asyncio.sleep(0.02)
        return found

    def _timeout_message(self, what: str, items: list[Item], timeout: float) -> str:
        with self._cond:
            seen = [
                f"to={i['rcpt_tos']} subject={i['subject']!r}"
                if "rcpt_tos" in i
                else f"to={i['to']} status={i['status']} body={i['body'][:40]!r}"
                for i in items[-5:]
            ]
            return f"no matching {what} arrived within {timeout}s; caught {len(items)} {what}(s)" + (
                f", latest: {'; '.join(seen)}" if seen else ""
            )
