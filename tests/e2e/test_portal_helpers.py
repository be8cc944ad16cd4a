"""Helpers shared by the access portal's end-to-end and browser tests (this module holds no tests).

Time-based rules are tested without sleeping: :func:`travel` moves every stored time of a message
(its codes, its lock, its sessions) into the past, which is the same as moving the clock forward.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import aio_pika

from access_portal.settings import PortalSettings
from shared import crypto
from shared.contracts import SmsFailedV1, envelope
from tests.conftest import AMQP_URL
from tests.e2e.conftest import Chain, code_of, random_email, random_mobile
from tests.patient import PatientClient, csrf_of, find_link
from tests.waiting import PATIENCE

# The test stack runs the portal with its development keys; the tests use them to check what is stored.
PORTAL_KEY = PortalSettings().portal_secret_key
STATE_RE = re.compile(r'data-state="([a-z_]+)"')


def state_of(html: str) -> str | None:
    """Which state page this is (``data-state`` of its heading), or None for a form page."""
    match = STATE_RE.search(html)
    return match.group(1) if match else None


def neighbour(code: str) -> str:
    """A code that is certainly wrong."""
    return f"{(int(code) + 1) % 10**6:06d}"


@dataclass
class Letter:
    """One convocation as the patient receives it: the e-mail's link and the phone it names."""

    chain: Chain
    event: dict
    link: str
    e164: str | None
    national: str | None
    patient: PatientClient = field(init=False)

    def __post_init__(self) -> None:
        self.patient = PatientClient(self.link)

    @property
    def message_id(self) -> uuid.UUID:
        return self.patient.message_id

    @property
    def path(self) -> str:
        return urlsplit(self.link).path

    @property
    def convocation_id(self) -> str:
        return self.event["data"]["convocation_id"]

    @property
    def secretariat_phone(self) -> str:
        return self.event["data"]["appointment"]["department"]["secretariat_phone"]

    async def sms(self, nth: int = 1, to: str | None = None) -> dict:
        return await self.chain.sms_to(to or self.e164, nth=nth)

    async def code(self, nth: int = 1, to: str | None = None) -> str:
        return code_of(await self.sms(nth, to))

    def post(self, route: str, data: dict | None = None, *, csrf: bool = True, proof: bool = True):
        """POST to one of this message's routes with the CSRF token of a fresh page and (``proof``) the
        link's secret, as the page's JavaScript adds it to every form."""
        data = dict(data or {})
        if csrf:
            data["csrf"] = csrf_of(self.patient.get(self.path).text)
        if proof:
            data.setdefault("k", self.patient.secret)
        return self.patient.post(f"{self.path}/{route}" if route else self.path, data)

    def guess(self, code: str):
        return self.post("verify", {"code": code})

    async def log_in(self, phone: str | None = "national", nth: int = 1) -> None:
        """Ask for a code (typing the number when asked) and enter it: a live session."""
        typed = self.national if phone == "national" else phone
        sent = self.patient.request_code(typed)
        assert sent.status_code == 303, (sent.status_code, state_of(sent.text))
        verified = self.patient.enter_code(await self.code(nth))
        assert verified.status_code == 303, (verified.status_code, state_of(verified.text))

    async def travel(self, seconds: float) -> None:
        await travel(self.chain.db, [self.message_id], seconds)

    async def challenges(self) -> list:
        return await self.chain.db.fetch(
            "select * from access_portal.challenge where message_id = $1 order by created_at", self.message_id
        )

    async def sms_failed(self):
        """The provider could not deliver the code's SMS: sms.failed for this letter's one challenge, as the
        SMS gateway publishes it. Returns that challenge's row."""
        [challenge] = await self.challenges()
        await publish_as_service(
            self.chain,
            SmsFailedV1(
                challenge_id=challenge["id"],
                message_id=self.message_id,
                convocation_id=uuid.UUID(self.convocation_id),
                provider="twilio",
                provider_code="30003",
                reason="Unreachable destination handset",
                failed_at=datetime.now(timezone.utc),
            ),
            producer="sms-gateway",
        )
        return challenge

    async def message_row(self):
        return await self.chain.db.fetchrow(
            "select * from access_portal.message where message_id = $1", self.message_id
        )

    async def audit(self) -> list[tuple[str, str]]:
        rows = await self.chain.db.fetch(
            "select action, outcome from portal_audit.access_audit where message_id = $1 order by id", self.message_id
        )
        return [(r["action"], r["outcome"]) for r in rows]


async def letter(chain: Chain, *, mobile: str | None | bool = True, **kw) -> Letter:
    """Publish a convocation and wait for its e-mail. ``mobile=True``: a fresh number on file;
    ``None``: no number on file; a string: that number (national form)."""
    e164 = national = None
    if mobile is True:
        e164, national = random_mobile()
    elif isinstance(mobile, str):
        national = mobile
        e164 = "+41" + mobile.replace(" ", "")[1:]
    event = chain.event(mobile=national, email=kw.pop("email", random_email()), **kw)
    await chain.publish(event)
    mail = await chain.email_to(event["data"]["patient"]["email"])
    found = Letter(chain, event, find_link(mail["text"]), e164, national)
    await chain.portal_copy(found.message_id)
    return found


async def travel(db, message_ids: list[uuid.UUID], seconds: float) -> None:
    """Move the portal's clock ``seconds`` forward for these messages (their stored times move back)."""
    delta, ids = timedelta(seconds=seconds), message_ids
    await db.execute(
        "update access_portal.challenge set created_at = created_at - $2::interval,"
        " expires_at = expires_at - $2::interval where message_id = any($1::uuid[])",
        ids,
        delta,
    )
    await db.execute(
        "update access_portal.message set locked_until = locked_until - $2::interval"
        " where message_id = any($1::uuid[])",
        ids,
        delta,
    )
    await db.execute(
        "update access_portal.session set created_at = created_at - $2::interval,"
        " last_seen_at = last_seen_at - $2::interval where message_id = any($1::uuid[])",
        ids,
        delta,
    )


async def publish_as_service(chain: Chain, payload, producer: str) -> None:
    """Publish an event as the service that owns it would (used for sms.failed)."""
    env = envelope(payload, producer=producer, correlation_id=payload.convocation_id)
    await chain.publish(json.loads(env.model_dump_json()))


def code_hash(challenge_id: uuid.UUID, code: str) -> str:
    return crypto.keyed_hash(PORTAL_KEY, "otp", f"{challenge_id}:{code}")


class EventSpy:
    """A private queue bound to the run's exchange: sees what the services publish."""

    def __init__(self, exchange: str, *routing_keys: str) -> None:
        self.exchange, self.routing_keys = exchange, routing_keys
        self.seen: list[dict] = []

    async def __aenter__(self) -> EventSpy:
        self._conn = await aio_pika.connect(AMQP_URL)
        channel = await self._conn.channel()
        self._queue = await channel.declare_queue(exclusive=True)
        for key in self.routing_keys:
            await self._queue.bind(self.exchange, routing_key=key)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._conn.close()

    async def collect(self, until=lambda seen: False, timeout: float = PATIENCE, quiet: float = 1.0) -> list[dict]:
        """Gather events until ``until(seen)`` holds (or the timeout), then ``quiet`` seconds more (to listen
        for events that must not come, give no ``until`` and a short timeout)."""
        loop = asyncio.get_running_loop()
        deadline, settled = loop.time() + timeout, None
        while loop.time() < deadline:
            message = await self._queue.get(no_ack=True, fail=False, timeout=PATIENCE)
            if message is not None:
                self.seen.append(json.loads(message.body))
                continue
            if settled is None and until(self.seen):
                settled = loop.time() + quiet
            if settled is not None and loop.time() >= settled:
                break
            await asyncio.sleep(0.05)
        return self.seen


__all__ = [
    "EventSpy",
    "Letter",
    "code_hash",
    "letter",
    "neighbour",
    "publish_as_service",
    "random_mobile",
    "state_of",
    "travel",
]
