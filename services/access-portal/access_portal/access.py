"""A patient's access to a letter, as plain Python over the store: open the link, ask for a code, check
it, read the appointment, download, ask for the post, leave. Each method runs its rules in one
connection (one transaction where it changes state), audits what happened and returns a typed outcome;
the routes (routes.py) turn outcomes into pages and redirects. What the request carried that only the
web layer can read (the CSRF check, the session cookie, the link's secret) comes in as arguments.

The rules that need no I/O are module functions below the service (tests/unit/test_patient_access.py).
docs/architecture.md#security says why each rule is there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from access_portal import calendar, policy, store
from access_portal.i18n import N_
from access_portal.metrics import DOCUMENTS_RELEASED, OTP_CHECKS, OTP_REQUESTS, UNKNOWN_LINKS
from access_portal.phones import Phones
from access_portal.records import Binding, Challenge, Message
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared import crypto, tracing
from shared.contracts import AccessChangedV1, DocumentReleasedV1, OtpRequestedV1, PostalChosenV1, envelope
from shared.keystore import KeyStore, PeriodKeyUnavailable
from shared.metrics import reached
from shared.outbox import add_event

PRODUCER = "access-portal"
# The code page's errors (translated by the routes in the page's language).
WRONG_CODE = N_("This code is not correct. Tries left: %(n)s.")
CODE_FORMAT = N_("Type the 6 digits of the code you received by SMS.")
# A code of this message that no longer works (expired, already used): told, never counted as a wrong try.
OLD_CODE = N_("This code no longer works: it has expired or was already used. Type the latest code we sent you.")
# Why a typed code was refused (CodeRefused.reason, the code page's ?told=) -> what the page says.
CODE_ERRORS = {"wrong_code": WRONG_CODE, "code_format": CODE_FORMAT, "old_code": OLD_CODE}
DOWNLOADS = {"pdf": "application/pdf", "ics": "text/calendar; charset=utf-8"}
# How far back a typed code is compared with the message's earlier codes (to tell "expired", not "wrong").
OLD_CODES_KEPT = timedelta(days=1)


# --- outcomes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatePage:
    """The request ends on one of the state pages (pages.STATES): a closed message, a refused form, no
    session, an expired code..."""

    state: str
    status: int
    message: Message | None = None


@dataclass(frozen=True)
class Wait:
    """Nothing may be sent or checked before ``until`` (a lock after failures, or a send limit)."""

    message: Message
    until: datetime


@dataclass(frozen=True)
class LinkPage:
    """The link's first page: the number codes go to without asking (``bound_hint``) or the field for it."""

    message: Message
    bound_hint: str | None


@dataclass(frozen=True)
class HelpPage:
    """ "This is not my number" or "I have no mobile phone": whom to call."""

    message: Message
    state: str


@dataclass(frozen=True)
class NumberRefused:
    """The first page again, with why the typed number was refused (a key of routes.NUMBER_ERRORS);
    ``hint``: the number on file's masked hint, for "does not match the one we have"."""

    message: Message
    reason: str
    bound_hint: str | None
    hint: str | None = None


@dataclass(frozen=True)
class TooEarly:
    """ "Send a new code" before a new one may be sent, while the code already sent still works: the code
    page again, saying when a new code can be asked (``until``) and until when the sent one works."""

    message: Message
    until: datetime
    code: Challenge


@dataclass(frozen=True)
class CodeSent:
    """A code was sent: the code page."""

    message_id: uuid.UUID


@dataclass(frozen=True)
class NoCodeYet:
    """The code page before any code was asked for: back to the link's page."""

    message_id: uuid.UUID


@dataclass(frozen=True)
class CodePage:
    """The code form for the latest code sent (``code``: its number's hint, its expiry)."""

    message: Message
    code: Challenge


@dataclass(frozen=True)
class CodeRefused:
    """The code page again with the error by the field: ``reason``, a key of CODE_ERRORS (the page counts the
    tries left when it is shown)."""

    message: Message
    code: Challenge
    reason: str


@dataclass(frozen=True)
class CodeStatus:
    """What the code page polls (GET …/code/status): whether the SMS of the latest code was delivered."""

    state: str  # "waiting", "sent", "failed", "none"


@dataclass(frozen=True)
class Verified:
    """The right code: a session was opened (``token`` goes into the browser's cookie)."""

    message_id: uuid.UUID
    token: str


@dataclass(frozen=True)
class PaperTold:
    """The letter goes on paper: who asked (``by``: "patient", "secretariat" or "hospital"), when it was asked
    and, once the print room reported it, when it was posted. Every page of the message says so."""

    by: str
    requested_at: datetime
    posted_at: datetime | None


@dataclass(frozen=True)
class DocumentPage:
    """The page after the code; ``details``: the appointment as the letter states it, when the link's
    secret came with the request."""

    message: Message
    postal_offered: bool
    details: dict[str, Any] | None = None
    paper: PaperTold | None = None


@dataclass(frozen=True)
class ToDocument:
    """Back to the page after the code; ``notice``: what the page says about the request that led there
    (a key of pages.NOTICES)."""

    message_id: uuid.UUID
    notice: str | None = None


@dataclass(frozen=True)
class Released:
    """A download: the letter (pdf) or the appointment for a calendar (ics)."""

    body: bytes
    filename: str
    media_type: str


@dataclass(frozen=True)
class LoggedOut:
    message_id: uuid.UUID | None


# What the request for a code sends to, and what a right code then binds.
@dataclass(frozen=True)
class Target:
    phone_hash: str
    phone_hint: str
    phone_enc: str
    bind_source: str | None  # "hospital", "first-use" or None (already bound)


@dataclass(frozen=True)
class NumberRefusal:
    reason: str  # a key of routes.NUMBER_ERRORS
    hint: str | None = None  # the number on file's masked hint, when the typed one does not match it


# --- rules without I/O -------------------------------------------------------------------------------


# The states closed_state() answers: a letter that no longer opens, which every page of it says, and nothing else.
CLOSED = frozenset({"unknown", "expired", "cancelled", "withdrawn", "superseded"})


def closed_state(message: Message | None, now: datetime) -> tuple[str, int] | None:
    """Why this message cannot be opened, as (state, HTTP status), or None."""
    if message is None:
        return "unknown", 404
    if message.state == "revoked":
        reason = message.revoked_reason
        return (reason if reason in ("cancelled", "superseded", "withdrawn") else "cancelled"), 410
    if message.state == "expired" or message.expires_at <= now:
        return "expired", 410
    return None


def usable_binding(message: Message, binding: Binding | None, phones: Phones) -> Binding | None:
    """The number codes go to without asking: the patient's number on file once proven (it carries over
    to later letters, unless the hospital now has another one on file), else a number proven through this
    very link (it binds this message only: whoever holds one link must not choose where the patient's
    later letters are texted). ``binding``: the patient's binding, if any."""
    if binding is not None and (
        message.phone_hash is None
        or phones.same_number(message.phone_hash, message.phone_enc, message.patient_ref, binding.phone_hash)
    ):
        return binding
    if message.proven_hash is not None and message.proven_hint is not None and message.proven_enc is not None:
        return Binding(message.patient_ref, message.proven_hash, message.proven_hint, message.proven_enc, "first-use")
    return None


def choose_target(
    message: Message, bound: Binding | None, latest: Challenge | None, typed: str, *, resend: bool, phones: Phones
) -> Target | NumberRefusal:
    """Where a requested code goes. ``bound``: usable_binding(); ``latest``: the message's latest challenge,
    needed only for "send a new code" with no number posted."""
    if bound is not None:
        return Target(bound.phone_hash, bound.phone_hint, bound.phone_enc, None)
    if resend and not typed.strip() and latest is not None:
        # "Send a new code" on the code page: where the last code went, the number typed on the first page
        # not being posted again.
        return Target(latest.phone_hash, latest.phone_hint, latest.phone_enc, latest.bind_source)
    e164 = policy.normalise_phone(typed)
    if e164 is None:
        return NumberRefusal("number_invalid")
    if message.phone_hash is not None and message.phone_hint is not None and message.phone_enc is not None:
        if not phones.matches(e164, message.phone_hash):
            # Told plainly, with the hint on file: only the holder of the whole link gets this far.
            return NumberRefusal("number_mismatch", message.phone_hint)
        return Target(message.phone_hash, message.phone_hint, message.phone_enc, "hospital")
    # No number on file: trust on first use, for this message only, once the code proves it.
    stored = phones.stored(e164, message.patient_ref)
    return Target(stored.phone_hash, stored.phone_hint, stored.phone_enc, "first-use")


def paper_told(message: Message, paper: Any) -> PaperTold | None:
    """Whether (and at whose request) the letter goes on paper: the patient's own request on this portal,
    or what the issuer reported (``paper``: the ``paper`` row, postal.progress), or None."""
    if paper is not None and paper["requested_at"] is not None:
        by = {"patient-request": "patient", "secretariat": "secretariat"}.get(paper["reason"], "hospital")
        if message.postal_requested_at is not None:
            by = "patient"
        return PaperTold(by, paper["requested_at"], paper["posted_at"])
    if message.postal_requested_at is not None:
        return PaperTold("patient", message.postal_requested_at, paper["posted_at"] if paper is not None else None)
    return None


def tries_left(max_wrong_per_code: int, wrong: int, failed_checks: int) -> int:
    """Tries before something happens: the code dies, or the message must wait."""
    return min(max_wrong_per_code - wrong, policy.tries_before_wait(failed_checks))


# --- the service --------------------------------------------------------------------------------------


class PatientAccess:
    def __init__(
        self, settings: PortalSettings, pool_getter: Callable[[], asyncpg.Pool], phones: Phones, sessions: Sessions
    ) -> None:
        self.settings, self._pool, self.phones, self.sessions = settings, pool_getter, phones, sessions
        self.key_store = KeyStore(settings.key_store_url, settings.key_store_token.get_secret_value())
        self.limits = policy.SendLimits(
            settings.otp_resend_seconds, settings.otp_max_per_message_hour, settings.otp_max_per_number_day
        )

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool()

    def client_hash(self, host: str | None) -> str | None:
        """The audited client address: a keyed hash, never the address."""
        return crypto.keyed_hash(self.settings.portal_secret_key, "client", host) if host else None

    # --- reading ---------------------------------------------------------------------------------------

    async def open_link(self, message_id: uuid.UUID | None, client: str | None) -> LinkPage | StatePage:
        """The link's page. Read-only: records a 'view' audit entry and nothing else."""
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, message, message_id, "view", client):
                return refused
            assert message is not None
            await store.audit(conn, message.message_id, "view", "ok", client)
            bound = await self._usable_binding(conn, message)
        return LinkPage(message, bound.phone_hint if bound else None)

    async def help_page(
        self, message_id: uuid.UUID | None, state: str, action: str, client: str | None
    ) -> HelpPage | StatePage:
        """Where "this is not my number" and "I have no mobile phone" lead. Read-only, like every GET."""
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, message, message_id, action, client):
                return refused
            assert message is not None
            await store.audit(conn, message.message_id, action, "ok", client)
        return HelpPage(message, state)

    async def code_page(self, message_id: uuid.UUID | None, client: str | None) -> CodePage | NoCodeYet | StatePage:
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, message, message_id, "code-view", client):
                return refused
            assert message is not None
            challenge = await store.latest_challenge(conn, message.message_id)
            outcome = "no-code" if challenge is None else "sms-failed" if challenge.sms_failed else "ok"
            await store.audit(conn, message.message_id, "code-view", outcome, client)
        if challenge is None:
            return NoCodeYet(message.message_id)
        if challenge.sms_failed:
            return StatePage("sms_failed", 200, message)
        return CodePage(message, challenge)

    async def code_status(self, message_id: uuid.UUID | None) -> CodeStatus:
        """What the code page polls: whether the latest code's SMS was delivered, failed, or is on its way.
        Read-only and not audited (the page asks every few seconds); it tells nothing but that."""
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if message is None or closed_state(message, datetime.now(timezone.utc)) is not None:
                return CodeStatus("none")
            challenge = await store.latest_challenge(conn, message.message_id)
        if challenge is None:
            return CodeStatus("none")
        return CodeStatus("failed" if challenge.sms_failed else "sent" if challenge.sms_sent_at else "waiting")

    async def pace(self, message_id: uuid.UUID | None) -> Wait | TooEarly | None:
        """What a page telling a refused request recomputes (post/redirect/get: the POST counted it, the GET
        only reads): the lock running, else when the next code may be sent (``TooEarly`` while the code
        already sent still works), else None (nothing holds the patient back any more)."""
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if message is None:
                return None
            if message.locked_until and message.locked_until > now:
                return Wait(message, message.locked_until)
            latest = await store.latest_challenge(conn, message.message_id)
            bound = await self._usable_binding(conn, message)
            # The number the next code would go to: where the last one went, else the number on file.
            enc = latest.phone_enc if latest else bound.phone_enc if bound else message.phone_enc
            if enc is None:
                return None
            hashes = self.phones.hashes(self.phones.open(enc, message.patient_ref))
            counts = await store.send_counts(
                conn, message.message_id, hashes, now, per_number=message.phone_hash is not None
            )
        until = policy.send_wait(
            self.limits, now, counts.last_sent, counts.hour_n, counts.day_n, counts.hour_oldest, counts.day_oldest
        )
        if until is None:
            return None
        if latest is not None and latest.live(now) and not latest.sms_failed:
            return TooEarly(message, until, latest)
        return Wait(message, until)

    def tries_left(self, message: Message, code: Challenge) -> int:
        """The tries left on the code page after a wrong code, as the database now counts them."""
        return tries_left(self.settings.otp_max_wrong_per_code, code.wrong, message.failed_checks)

    # --- the code -------------------------------------------------------------------------------------

    async def request_code(
        self,
        message_id: uuid.UUID | None,
        *,
        csrf_ok: bool,
        link_secret: str,
        phone: str,
        resend: bool,
        client: str | None,
    ) -> CodeSent | NumberRefused | TooEarly | Wait | StatePage:
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await self._unlocked(
                conn, message_id, "code-request", csrf_ok=csrf_ok, link_secret=link_secret, client=client, now=now
            )
            if isinstance(message, Wait):
                OTP_REQUESTS.labels("locked").inc()
            if isinstance(message, StatePage) and message.state == "no_proof":
                OTP_REQUESTS.labels("no-proof").inc()
            if not isinstance(message, Message):
                return message
            mid = message.message_id
            bound = await self._usable_binding(conn, message)
            latest = await store.latest_challenge(conn, mid)
            target = choose_target(message, bound, latest, phone, resend=resend, phones=self.phones)
            if isinstance(target, NumberRefusal):
                await store.audit(conn, mid, "code-request", target.reason, client)
                OTP_REQUESTS.labels(target.reason).inc()
                return NumberRefused(message, target.reason, None, target.hint)  # only when no number is bound
            e164 = self.phones.open(target.phone_enc, message.patient_ref)
            # The number's hash under every key: rows from before a key rotation count too. The lock is on
            # the current key's hash.
            hashes = self.phones.hashes(e164)
            await store.lock_number(conn, hashes[-1])  # the per-number cap holds under concurrency
            counts = await store.send_counts(conn, mid, hashes, now, per_number=message.phone_hash is not None)
            until = policy.send_wait(
                self.limits, now, counts.last_sent, counts.hour_n, counts.day_n, counts.hour_oldest, counts.day_oldest
            )
            if until:
                await store.audit(conn, mid, "code-request", "rate-limited", client)
                OTP_REQUESTS.labels("rate-limited").inc()
                if latest is not None and latest.live(now) and not latest.sms_failed:
                    return TooEarly(message, until, latest)  # the code already sent still works
                return Wait(message, until)
            first_request = latest is None
            challenge_id, code = uuid.uuid4(), policy.new_code()
            expires_at = now + timedelta(seconds=self.settings.otp_ttl_seconds)
            await store.insert_challenge(
                conn,
                challenge_id=challenge_id,
                message_id=mid,
                code_hash=self.code_hash(challenge_id, code),
                phone_hash=target.phone_hash,
                phone_hint=target.phone_hint,
                phone_enc=target.phone_enc,
                bind_source=target.bind_source,
                created_at=now,
                expires_at=expires_at,
            )
            await add_event(
                conn,
                envelope(
                    OtpRequestedV1(
                        challenge_id=challenge_id,
                        message_id=mid,
                        convocation_id=message.convocation_id,
                        language=message.language,
                        portal_host=self.settings.portal_host,
                        expires_at=expires_at,
                        sandbox=message.sandbox,
                        phone_hint=target.phone_hint,
                        for_sms=crypto.seal_field(
                            self.settings.sms_field_key,
                            {"phone": e164, "code": code},
                            context=crypto.field_context("otp.requested", challenge_id, "sms"),
                        ),
                    ),
                    producer=PRODUCER,
                    correlation_id=message.convocation_id,
                ),
            )
            await store.audit(conn, mid, "code-request", "sent", client)
        OTP_REQUESTS.labels("sent").inc()
        if first_request:  # counted once the transaction committed, once per message
            reached("code-requested")
        return CodeSent(mid)

    async def verify(
        self, message_id: uuid.UUID | None, *, csrf_ok: bool, link_secret: str, code: str, client: str | None
    ) -> Verified | CodeRefused | Wait | StatePage:
        """A typed code. Every code of the message works until it expires (a patient who asked for a second
        code may type the first); a wrong guess counts on every live code it was compared with, so each code
        still meets at most OTP_MAX_WRONG_PER_CODE guesses. A code that no longer works (expired, used) is
        told as such and never counted as a wrong try."""
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await self._unlocked(
                conn, message_id, "code-check", csrf_ok=csrf_ok, link_secret=link_secret, client=client, now=now
            )
            if isinstance(message, StatePage) and message.state == "no_proof":
                OTP_CHECKS.labels("no-proof").inc()
            if not isinstance(message, Message):
                return message
            mid = message.message_id
            recent = await store.recent_challenges(conn, mid, now - OLD_CODES_KEPT, lock=True)
            latest = recent[0] if recent else None
            if latest is not None and latest.sms_failed:
                await store.audit(conn, mid, "code-check", "sms-failed", client)
                return StatePage("sms_failed", 410, message)
            live = [c for c in recent if c.live(now)]
            if not live:
                await store.audit(conn, mid, "code-check", "expired", client)
                OTP_CHECKS.labels("expired").inc()
                return StatePage("code_expired", 410, message)
            shown = live[0]  # the latest live code: the one the page speaks of
            typed = policy.clean_code(code)
            if typed is None:  # cannot be a code: not a guess, nothing counted
                await store.audit(conn, mid, "code-check", "malformed", client)
                return CodeRefused(message, shown, "code_format")
            right = next((c for c in live if self._is_code(c, typed)), None)
            if right is None:
                if any(self._is_code(c, typed) for c in recent if not c.live(now)):
                    # An earlier code that expired or was used: the patient's own, not a guess.
                    await store.audit(conn, mid, "code-check", "old-code", client)
                    OTP_CHECKS.labels("old-code").inc()
                    return CodeRefused(message, shown, "old_code")
                return await self._wrong_code(conn, message, live, now, client)
            first_verification = not await store.has_challenge(conn, mid, used=True)
            await store.use_challenge(conn, right.id)  # and every other live code of the message ends
            if right.bind_source == "hospital":
                await store.bind_phone(
                    conn, message.patient_ref, right.phone_hash, right.phone_hint, right.phone_enc, "hospital"
                )
            elif right.bind_source == "first-use":
                await store.prove_for_message(conn, mid, right.phone_hash, right.phone_hint, right.phone_enc)
            if right.bind_source:
                await store.audit(conn, mid, "binding", right.bind_source, client)
            # The secretariat's console shows whether the patient has a verified number for later letters.
            await add_event(
                conn,
                envelope(
                    AccessChangedV1(
                        message_id=mid,
                        convocation_id=message.convocation_id,
                        change="verified",
                        at=now,
                        bound=right.bind_source != "first-use",
                    ),
                    producer=PRODUCER,
                    correlation_id=message.convocation_id,
                ),
            )
            token = await self.sessions.open(conn, mid)
            await store.audit(conn, mid, "code-check", "right", client)
        OTP_CHECKS.labels("right").inc()
        if first_verification:
            reached("verified")
        return Verified(mid, token)

    def _is_code(self, challenge: Challenge, typed: str) -> bool:
        return crypto.hash_matches(
            self.settings.portal_secret_key, "otp", f"{challenge.id}:{typed}", challenge.code_hash
        )

    async def _wrong_code(
        self, conn: asyncpg.Connection, message: Message, live: list[Challenge], now: datetime, client: str | None
    ) -> CodeRefused | Wait | StatePage:
        """A wrong guess: one more wrong entry on each live code (``live``, latest first) and one failure of the
        message."""
        wrong = await store.record_wrong_codes(conn, [c.id for c in live], self.settings.otp_max_wrong_per_code)
        latest = live[0]
        dead = wrong[latest.id] >= self.settings.otp_max_wrong_per_code  # the latest has the fewest wrong entries
        await store.audit(conn, message.message_id, "code-check", "wrong", client, "code dead" if dead else None)
        OTP_CHECKS.labels("wrong").inc()
        _, lock = await self._count_failure(conn, message, now, client)
        if lock:
            return Wait(message, now + lock)
        if dead:
            return StatePage("code_expired", 410, message)
        return CodeRefused(message, latest, "wrong_code")

    async def _count_failure(
        self, conn: asyncpg.Connection, message: Message, now: datetime, client: str | None
    ) -> tuple[int, timedelta | None]:
        """Count one failure against the message: (failures so far, the wait it now imposes or None)."""
        failed = await store.add_failure(conn, message.message_id)
        lock = policy.lock_for(failed)
        if lock:
            await store.lock_message(conn, message.message_id, now + lock)
            await store.audit(
                conn, message.message_id, "lock", f"{int(lock.total_seconds())}s", client, f"after {failed} failures"
            )
            # The department's secretariat sees who is locked out, and may unlock.
            await add_event(
                conn,
                envelope(
                    AccessChangedV1(
                        message_id=message.message_id,
                        convocation_id=message.convocation_id,
                        change="locked",
                        at=now,
                        locked_until=now + lock,
                    ),
                    producer=PRODUCER,
                    correlation_id=message.convocation_id,
                ),
            )
            OTP_CHECKS.labels("locked").inc()
        return failed, lock

    def code_hash(self, challenge_id: uuid.UUID, code: str) -> str:
        return crypto.keyed_hash(self.settings.portal_secret_key, "otp", f"{challenge_id}:{code}")

    # --- after the code -------------------------------------------------------------------------------

    async def document(
        self, message_id: uuid.UUID | None, *, session: str | None, client: str | None
    ) -> DocumentPage | StatePage:
        async with self.pool.acquire() as conn:
            message = await self._session_guard(conn, message_id, "document-view", client, session=session)
            if isinstance(message, StatePage):
                return message
            await store.audit(conn, message.message_id, "document-view", "ok", client)
            return await self._document_page(conn, message)

    async def appointment(
        self, message_id: uuid.UUID | None, *, csrf_ok: bool, session: str | None, link_secret: str, client: str | None
    ) -> DocumentPage | StatePage:
        """The document page with the appointment as text: opened with the link's secret, like a download."""
        async with self.pool.acquire() as conn:
            message = await self._session_guard(
                conn, message_id, "appointment-view", client, session=session, csrf_ok=csrf_ok
            )
            if isinstance(message, StatePage):
                return message
            try:
                details = json.loads(await self.open(message, link_secret, "details"))
            except crypto.CannotOpen:
                await store.audit(conn, message.message_id, "appointment-view", "link-incomplete", client)
                return StatePage("link_incomplete", 400, message)
            except PeriodKeyUnavailable:
                await store.audit(conn, message.message_id, "appointment-view", "keys-unavailable", client)
                return StatePage("try_later", 503, message)
            await store.audit(conn, message.message_id, "appointment-view", "ok", client)
            return await self._document_page(conn, message, details)

    async def extend(
        self, message_id: uuid.UUID | None, *, csrf_ok: bool, session: str | None, client: str | None
    ) -> ToDocument | StatePage:
        """ "Stay on the page": the session's idle time starts again (the guard touches it)."""
        async with self.pool.acquire() as conn:
            message = await self._session_guard(
                conn, message_id, "session-extend", client, session=session, csrf_ok=csrf_ok
            )
            if isinstance(message, StatePage):
                return message
            await store.audit(conn, message.message_id, "session-extend", "ok", client)
        return ToDocument(message.message_id)

    async def choose_post(
        self, message_id: uuid.UUID | None, *, csrf_ok: bool, session: str | None, client: str | None
    ) -> ToDocument | StatePage:
        """ "Receive this convocation by post instead": only after the code, so only the patient can ask."""
        now = datetime.now(timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await self._session_guard(
                conn, message_id, "postal-request", client, session=session, csrf_ok=csrf_ok
            )
            if isinstance(message, StatePage):
                return message
            mid = message.message_id
            if await store.pdf_released(conn, mid):  # delivered already: no paper copy is left
                await store.audit(conn, mid, "postal-request", "already-downloaded", client)
                return ToDocument(mid, "post_after_download")
            if await store.request_postal(conn, mid, now):  # once, however often it is pressed
                await add_event(
                    conn,
                    envelope(
                        PostalChosenV1(message_id=mid, convocation_id=message.convocation_id, chosen_at=now),
                        producer=PRODUCER,
                        correlation_id=message.convocation_id,
                    ),
                )
            await store.audit(conn, mid, "postal-request", "ok", client)
        # Post/redirect/get: the document page then says the letter goes by post (PaperTold).
        return ToDocument(mid)

    async def release(
        self,
        message_id: uuid.UUID | None,
        kind: str,
        *,
        csrf_ok: bool,
        session: str | None,
        link_secret: str,
        client: str | None,
        language: str | None = None,
    ) -> Released | StatePage:
        """A download, opened with the link's secret; the first of each kind is reported as delivered. The file's
        words (the .ics, the file name) follow ``language``, the page's, else the letter's."""
        now = datetime.now(timezone.utc)
        if kind not in DOWNLOADS:
            return StatePage("unknown", 404)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, message, message_id, "download", client):
                return refused
            assert message is not None
            mid = message.message_id
            if not csrf_ok:
                return await self._refuse_csrf(conn, message, "download", client)
            if not await self.sessions.current(conn, session, mid):
                await store.audit(conn, mid, "download", "no-session", client, kind)
                return StatePage("session_expired", 401, message)
            shown_in = language or message.language
            try:
                details = json.loads(await self.open(message, link_secret, "details"))
                body = (
                    await self.open(message, link_secret, "document")
                    if kind == "pdf"
                    else calendar.ics(
                        details,
                        message_id=mid,
                        host=self.settings.portal_host,
                        language=shown_in,
                        hospital=self.settings.hospital_name,
                    )
                )
            except crypto.CannotOpen:
                # The message id and a session without the link's secret open nothing.
                await store.audit(conn, mid, "download", "link-incomplete", client, kind)
                return StatePage("link_incomplete", 400, message)
            except PeriodKeyUnavailable:
                await store.audit(conn, mid, "download", "keys-unavailable", client, kind)
                return StatePage("try_later", 503, message)
            if await store.record_release(conn, mid, kind):  # the first download of each kind
                # In the letter's trace (kept with the message), linked to this request's.
                with tracing.continued(message.trace_context, f"{kind} released"):
                    await add_event(
                        conn,
                        envelope(
                            DocumentReleasedV1(
                                message_id=mid, convocation_id=message.convocation_id, kind=kind, released_at=now
                            ),
                            producer=PRODUCER,
                            correlation_id=message.convocation_id,
                        ),
                    )
                DOCUMENTS_RELEASED.labels(kind).inc()
            await store.audit(conn, mid, "download", "ok", client, kind)
        return Released(body, calendar.file_name(kind, details, shown_in), DOWNLOADS[kind])

    async def log_out(
        self, message_id: uuid.UUID | None, *, csrf_ok: bool, session: str | None, client: str | None
    ) -> LoggedOut | StatePage:
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if not csrf_ok:
                if message is not None:
                    await store.audit(conn, message.message_id, "logout", "csrf-refused", client)
                return StatePage("bad_request", 403, message)
            await self.sessions.end(conn, session)
            if message is not None:
                await store.audit(conn, message.message_id, "logout", "ok", client)
        return LoggedOut(message.message_id if message else None)

    async def open(self, message: Message, link_secret: str, purpose: str) -> bytes:
        """A sealed part of the letter ("document" or "details"), opened with the link's secret, the seal key
        and, for letters sealed under a period, that period's key from the key store (gone once destroyed)."""
        seal_key_id, period_id = crypto.split_key_id(message.key_id)
        server_key = self.settings.seal_keys.get(seal_key_id)
        nonce, ciphertext = (
            (message.document_nonce, message.document_ciphertext)
            if purpose == "document"
            else (message.details_nonce, message.details_ciphertext)
        )
        if server_key is None or not link_secret or nonce is None or ciphertext is None:
            raise crypto.CannotOpen("cannot open")

        def opened(key: bytes) -> bytes:
            return crypto.open_sealed(
                bytes(nonce),
                bytes(ciphertext),
                link_secret=link_secret,
                server_key=key,
                key_id=message.key_id,
                message_id=message.message_id,
                purpose=purpose,
            )

        if period_id is None:  # sealed before period keys
            return opened(server_key)
        held = await self._period_key(period_id)
        try:
            return opened(crypto.bound_to_period(server_key, held))
        except crypto.CannotOpen as wrong:
            # A wrong link, or a period key the store made anew (after losing its volume): ask it once more.
            try:
                fresh = await self._period_key(period_id, again=True)
            except PeriodKeyUnavailable:
                raise wrong from None
            if fresh == held:
                raise
            return opened(crypto.bound_to_period(server_key, fresh))

    async def _period_key(self, period_id: str, *, again: bool = False) -> bytes:
        try:
            return (await self.key_store.get(period_id, again=again)).key
        except PeriodKeyUnavailable as exc:
            if exc.reason in ("destroyed", "unknown"):  # after its expiry, or a row naming no period we made
                raise crypto.CannotOpen("the period key is gone") from None
            raise  # the store down or refusing us: our problem, the patient is told to try again shortly

    # --- the checks every request shares ---------------------------------------------------------------

    async def _refuse_closed(
        self,
        conn: asyncpg.Connection,
        message: Message | None,
        message_id: uuid.UUID | None,
        action: str,
        client: str | None,
    ) -> StatePage | None:
        """The distinct page of a message that cannot be opened (audited), or None if it can."""
        closed = closed_state(message, datetime.now(timezone.utc))
        if closed is None:
            return None
        if message is None:
            # Audit only what exists: requests for unknown ids are a counter, not rows that anyone could
            # add by the thousand and that would be kept a year.
            UNKNOWN_LINKS.inc()
        else:
            await store.audit(conn, message_id, action, closed[0], client)
        return StatePage(closed[0], closed[1], message)

    async def _refuse_csrf(
        self, conn: asyncpg.Connection, message: Message, action: str, client: str | None
    ) -> StatePage:
        await store.audit(conn, message.message_id, action, "csrf-refused", client)
        return StatePage("bad_request", 403, message)

    async def _unlocked(
        self,
        conn: asyncpg.Connection,
        message_id: uuid.UUID | None,
        action: str,
        *,
        csrf_ok: bool,
        link_secret: str,
        client: str | None,
        now: datetime,
    ) -> Message | Wait | StatePage:
        """The message, row-locked for this transaction, when it is open, the form is this browser's, the
        request proves the whole link and no wait is running; else the refusal (audited). The row lock
        serialises concurrent code requests and guesses: no race gets past the caps. A request without the
        link's proof is refused before anything is counted: whoever has only the message id can neither
        probe numbers nor make the patient wait."""
        message = await store.get_message(conn, message_id, lock=True) if message_id else None
        if refused := await self._refuse_closed(conn, message, message_id, action, client):
            return refused
        assert message is not None
        if not csrf_ok:
            return await self._refuse_csrf(conn, message, action, client)
        try:
            proven = await self.proves_link(message, link_secret)
        except PeriodKeyUnavailable:  # nothing can be checked until the key store answers: nothing is counted
            await store.audit(conn, message.message_id, action, "keys-unavailable", client)
            return StatePage("try_later", 503, message)
        if not proven:
            await store.audit(conn, message.message_id, action, "no-proof", client)
            return StatePage("no_proof", 403, message)
        if message.locked_until and message.locked_until > now:
            await store.audit(conn, message.message_id, action, "locked", client)
            return Wait(message, message.locked_until)
        return message

    async def proves_link(self, message: Message, link_secret: str) -> bool:
        """Whether ``link_secret`` is the whole link's: it opens the letter's sealed details (nothing else is
        stored to check it against, and only the link carries the secret)."""
        try:
            await self.open(message, link_secret, "details")
        except crypto.CannotOpen:
            return False
        return True

    async def _session_guard(
        self,
        conn: asyncpg.Connection,
        message_id: uuid.UUID | None,
        action: str,
        client: str | None,
        *,
        session: str | None,
        csrf_ok: bool | None = None,
    ) -> Message | StatePage:
        """The message when this browser holds a live session on it and it is open, else the refusal."""
        message = await store.get_message(conn, message_id) if message_id else None
        if refused := await self._refuse_closed(conn, message, message_id, action, client):
            return refused
        assert message is not None
        if csrf_ok is False:
            return await self._refuse_csrf(conn, message, action, client)
        if not await self.sessions.current(conn, session, message.message_id):
            await store.audit(conn, message.message_id, action, "no-session", client)
            return StatePage("session_expired", 401, message)
        return message

    async def _usable_binding(self, conn: asyncpg.Connection, message: Message) -> Binding | None:
        return usable_binding(message, await store.get_binding(conn, [message.patient_ref]), self.phones)

    async def _document_page(
        self, conn: asyncpg.Connection, message: Message, details: dict[str, Any] | None = None
    ) -> DocumentPage:
        # The post is offered until the letter is downloaded (the print copy is dropped then) or paper was
        # asked, here or elsewhere (the secretariat, the hospital's fallback: postal.progress).
        paper = paper_told(message, await store.paper_of(conn, message.message_id))
        postal_offered = paper is None and not await store.pdf_released(conn, message.message_id)
        return DocumentPage(message, postal_offered, details, paper)

    async def paper(self, message: Message) -> PaperTold | None:
        """Whether the letter goes on paper, for the pages before the code (read-only)."""
        async with self.pool.acquire() as conn:
            return paper_told(message, await store.paper_of(conn, message.message_id))
