"""The patient's pages (the routes). A GET never changes state (mail scanners fetch and even click every link);
only a correct SMS code opens a session, and only a download counts as delivery."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from access_portal import calendar, policy, store
from access_portal.csrf import Csrf
from access_portal.handlers import PortalHandlers
from access_portal.i18n import N_, gettext
from access_portal.metrics import DOCUMENTS_RELEASED, OTP_CHECKS, OTP_REQUESTS, UNKNOWN_LINKS
from access_portal.pages import Pages, chosen_language
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared import crypto, tracing
from shared.contracts import AccessChangedV1, DocumentReleasedV1, OtpRequestedV1, PostalChosenV1, envelope
from shared.http import parse_uuid
from shared.logs import get_logger
from shared.metrics import reached
from shared.outbox import add_event

PRODUCER = "access-portal"
MAX_FORM_BYTES = 16 * 1024
GUIDE_VIDEOS = Path(__file__).resolve().parent / "static" / "guide"
NUMBER_ERRORS = {
    "number_invalid": N_("Enter a mobile number, like 079 123 45 67 or +41 79 123 45 67."),
}
WRONG_CODE = N_("This code is not correct. Tries left: %(n)s.")
CODE_FORMAT = N_("Type the 6 digits of the code you received by SMS.")
log = get_logger(__name__)


class Portal:
    def __init__(self, settings: PortalSettings, pool_getter, handlers: PortalHandlers) -> None:
        self.settings, self._pool, self.h = settings, pool_getter, handlers
        self.sessions = Sessions(settings)
        self.csrf = Csrf(settings.portal_secret_key, "__Host-csrf" if settings.cookie_secure else "csrf",
                         self.sessions.cookie_name)
        self.pages = Pages(settings, self.csrf, self.sessions)
        self.limits = policy.SendLimits(settings.otp_resend_seconds, settings.otp_max_per_message_hour,
                                        settings.otp_max_per_number_day)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool()

    def client_hash(self, request: Request) -> str | None:
        host = request.client.host if request.client else None
        return crypto.keyed_hash(self.settings.portal_secret_key, "client", host) if host else None

    @staticmethod
    def closed_state(message, now: datetime) -> tuple[str, int] | None:
        """Why this message cannot be opened, as (state, HTTP status), or None."""
        if message is None:
            return "unknown", 404
        if message["state"] == "revoked":
            return (message["revoked_reason"] if message["revoked_reason"] in ("cancelled", "superseded", "withdrawn")
                    else "cancelled"), 410
        if message["state"] == "expired" or message["expires_at"] <= now:
            return "expired", 410
        return None

    parse_id = staticmethod(parse_uuid)

    def router(self) -> APIRouter:
        r = APIRouter()
        r.add_api_route("/", self.home, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}", self.view, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/code", self.request_code, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/code", self.code_form, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/verify", self.verify, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/document", self.document, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/document", self.appointment, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/extend", self.extend, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/postal", self.postal, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/not-my-number", self.not_my_number, methods=["GET", "HEAD"],
                        response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/no-phone", self.no_phone, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/guide", self.guide, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/download/{kind}", self.download, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/logout", self.logout, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        return r

    async def home(self, request: Request) -> HTMLResponse:
        return self.pages.state(request, "unknown", "fr", status=200)

    async def guide(self, request: Request) -> HTMLResponse:
        """The step-by-step guide (and its video, when `make guide` made one for the language)."""
        response = self.pages.render(request, "guide.html", "fr", videos=GUIDE_VIDEOS.is_dir())
        return response

    async def not_my_number(self, request: Request, raw_id: str) -> HTMLResponse:
        """Where "this is not my number" leads: whom to call. Read-only, like every GET."""
        return await self._help(request, raw_id, "not_my_number", "not-my-number")

    async def no_phone(self, request: Request, raw_id: str) -> HTMLResponse:
        """Where "I have no mobile phone" leads: the secretariat can post the convocation."""
        return await self._help(request, raw_id, "no_phone", "no-phone")

    async def _help(self, request: Request, raw_id: str, state: str, action: str) -> HTMLResponse:
        message_id = self.parse_id(raw_id)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            client = self.client_hash(request)
            if refused := await self._refuse_closed(conn, request, message, message_id, action, client):
                return refused
            await store.audit(conn, message_id, action, "ok", client)
        return self.pages.state(request, state, message["language"], status=200, message=message,
                                phone=message["secretariat_phone"])

    async def _refuse_closed(self, conn, request: Request, message, message_id, action: str, client):
        """The distinct page of a message that cannot be opened (audited), or None if it can."""
        closed = self.closed_state(message, datetime.now(timezone.utc))
        if closed is None:
            return None
        if message is None:
            # Audit only what exists: requests for unknown ids are a counter, not rows that anyone could
            # add by the thousand and that would be kept a year.
            UNKNOWN_LINKS.inc()
        else:
            await store.audit(conn, message_id, action, closed[0], client)
        return self.pages.state(request, closed[0], message["language"] if message else "fr", status=closed[1],
                               message=message)

    async def _refuse_csrf(self, conn, request: Request, message, action: str, client) -> HTMLResponse:
        await store.audit(conn, message["message_id"], action, "csrf-refused", client)
        return self.pages.state(request, "bad_request", message["language"], status=403, message=message)

    async def view(self, request: Request, raw_id: str) -> HTMLResponse:
        """The link's page. Read-only: records a 'view' audit entry and nothing else."""
        message_id = self.parse_id(raw_id)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            client = self.client_hash(request)
            if refused := await self._refuse_closed(conn, request, message, message_id, "view", client):
                return refused
            await store.audit(conn, message_id, "view", "ok", client)
            binding = await self._usable_binding(conn, message)
        return self.pages.render(request, "message.html", message["language"], message=message,
                         bound_hint=binding["phone_hint"] if binding else None, hint=message["phone_hint"])

    async def _usable_binding(self, conn, message):
        """The number codes go to without asking: the patient's number on file once proven (it carries
        over to later letters, unless the hospital now has another one on file), else a number proven
        through this very link (it binds this message only: whoever holds one link must not choose
        where the patient's later letters are texted)."""
        binding = await store.get_binding(conn, [message["patient_ref"]])
        if binding is not None and (message["phone_hash"] is None or self.h.same_number(
                message["phone_hash"], message["phone_enc"], message["patient_ref"], binding["phone_hash"])):
            return binding
        if message["proven_hash"] is not None:
            return {"phone_hash": message["proven_hash"], "phone_hint": message["proven_hint"],
                    "phone_enc": message["proven_enc"]}
        return None

    async def request_code(self, request: Request, raw_id: str, csrf: str = Form(""),
                           phone: str = Form(""), resend: str = Form("")) -> Response:
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await store.get_message(conn, message_id, lock=True) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "code-request", client):
                return refused
            lang = message["language"]
            if not self.csrf.ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "code-request", client)
            if message["locked_until"] and message["locked_until"] > now:
                await store.audit(conn, message_id, "code-request", "locked", client)
                OTP_REQUESTS.labels("locked").inc()
                return self.pages.wait(request, message, message["locked_until"])
            target = await self._target_phone(conn, message, phone, resend=bool(resend))
            if isinstance(target, str):
                await store.audit(conn, message_id, "code-request", target, client)
                OTP_REQUESTS.labels(target).inc()
                return await self._number_error(conn, request, message, target, phone)
            phone_hash, hint, phone_enc, bind_source, decoy = target
            e164 = self.h.open_phone(phone_enc, message["patient_ref"]) if phone_enc else None
            # The number's hash under every key (rows from before a key rotation count too); a decoy's
            # is the typed number's under the current key. The lock is on the current key's hash.
            hashes = self.h.phone_hashes(e164) if e164 else [phone_hash]
            await store.lock_number(conn, hashes[-1])  # the per-number cap holds under concurrency
            counts = await store.send_counts(conn, message_id, hashes, now,
                                             per_number=message["phone_hash"] is not None)
            until = policy.send_wait(self.limits, now, counts["last_sent"], counts["hour_n"], counts["day_n"],
                                     counts["hour_oldest"], counts["day_oldest"])
            if until:
                await store.audit(conn, message_id, "code-request", "rate-limited", client)
                OTP_REQUESTS.labels("rate-limited").inc()
                return self.pages.wait(request, message, until)
            first_request = not await store.has_challenge(conn, message_id)
            challenge_id, code = uuid.uuid4(), policy.new_code()
            expires_at = now + timedelta(seconds=self.settings.otp_ttl_seconds)
            await store.insert_challenge(
                conn, challenge_id=challenge_id, message_id=message_id, code_hash=self.code_hash(challenge_id, code),
                phone_hash=phone_hash, phone_hint=hint, phone_enc=phone_enc, bind_source=bind_source,
                created_at=now, expires_at=expires_at, decoy=decoy,
            )
            if decoy:
                # Not the number on file: the same answer as for the right one (the code page, the same
                # waits next time), nothing texted and nothing counted against the message.
                await store.audit(conn, message_id, "code-request", "number_mismatch", client)
                OTP_REQUESTS.labels("number_mismatch").inc()
                return RedirectResponse(f"/m/{message_id}/code", status_code=303)
            await add_event(conn, envelope(
                OtpRequestedV1(
                    challenge_id=challenge_id, message_id=message_id, convocation_id=message["convocation_id"],
                    language=lang, portal_host=self.settings.portal_host, expires_at=expires_at, phone_hint=hint,
                    for_sms=crypto.seal_field(self.settings.sms_field_key, {"phone": e164, "code": code},
                                              context=crypto.field_context("otp.requested", challenge_id, "sms")),
                ),
                producer=PRODUCER, correlation_id=message["convocation_id"]))
            await store.audit(conn, message_id, "code-request", "sent", client)
        OTP_REQUESTS.labels("sent").inc()
        if first_request:  # counted once the transaction committed, once per message
            reached("code-requested")
        return RedirectResponse(f"/m/{message_id}/code", status_code=303)

    async def _number_error(self, conn, request: Request, message, target: str, typed: str) -> HTMLResponse:
        """The first page again, the typed number kept and the error by the field (no separate page)."""
        binding = await self._usable_binding(conn, message)
        error = {"state": target, "field": "phone", "text": gettext(
            chosen_language(request) or message["language"], NUMBER_ERRORS[target])}
        return self.pages.render(request, "message.html", message["language"], status=400, message=message,
                                 bound_hint=binding["phone_hint"] if binding else None, hint=message["phone_hint"],
                                 typed=typed[:40], error=error)

    async def _target_phone(self, conn, message, typed: str, *, resend: bool = False):
        """(hash, hint, encrypted number, bind source, decoy) to text the code to, or a refusal state."""
        binding = await self._usable_binding(conn, message)
        if binding is not None:
            return binding["phone_hash"], binding["phone_hint"], binding["phone_enc"], None, False
        if resend and not typed.strip():
            # "Send a new code" on the code page: where the last code went (a decoy again for a number
            # not on file), the number typed on the first page not being posted again.
            latest = await store.latest_challenge(conn, message["message_id"])
            if latest is not None:
                return (latest["phone_hash"], latest["phone_hint"], latest["phone_enc"], latest["bind_source"],
                        latest["decoy"])
        e164 = policy.normalise_phone(typed)
        if e164 is None:
            return "number_invalid"
        typed_hash = self.h.phone_hash(e164)
        if message["phone_hash"] is not None:
            if not crypto.hash_matches(self.settings.portal_secret_key, "phone", e164, message["phone_hash"]):
                # A decoy for the typed number: the page shows the hint on file, nothing is texted.
                return typed_hash, message["phone_hint"], None, None, True
            return message["phone_hash"], message["phone_hint"], message["phone_enc"], "hospital", False
        # No number on file: trust on first use, for this message only, once the code proves it.
        return (typed_hash, policy.phone_hint(e164), self.h.seal_phone(e164, message["patient_ref"]), "first-use",
                False)

    async def _count_failure(self, conn, message, now: datetime, client) -> tuple[int, timedelta | None]:
        """Count one failure against the message: (failures so far, the wait it now imposes or None)."""
        failed = await store.add_failure(conn, message["message_id"])
        lock = policy.lock_for(failed)
        if lock:
            await store.lock_message(conn, message["message_id"], now + lock)
            await store.audit(conn, message["message_id"], "lock", f"{int(lock.total_seconds())}s", client,
                              f"after {failed} failures")
            # The department's secretariat sees who is locked out, and may unlock.
            await add_event(conn, envelope(
                AccessChangedV1(message_id=message["message_id"], convocation_id=message["convocation_id"],
                                change="locked", at=now, locked_until=now + lock),
                producer=PRODUCER, correlation_id=message["convocation_id"]))
            OTP_CHECKS.labels("locked").inc()
        return failed, lock

    def code_hash(self, challenge_id: uuid.UUID, code: str) -> str:
        return crypto.keyed_hash(self.settings.portal_secret_key, "otp", f"{challenge_id}:{code}")

    async def code_form(self, request: Request, raw_id: str) -> HTMLResponse:
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "code-view", client):
                return refused
            challenge = await store.latest_challenge(conn, message_id)
            outcome = "no-code" if challenge is None else "sms-failed" if challenge["sms_failed"] else "ok"
            await store.audit(conn, message_id, "code-view", outcome, client)
        if challenge is None:
            return RedirectResponse(f"/m/{message_id}", status_code=303)
        if challenge["sms_failed"]:
            return self.pages.state(request, "sms_failed", message["language"], status=200, message=message)
        return self.pages.render(request, "code.html", message["language"], message=message, hint=challenge["phone_hint"],
                         error=None)

    async def verify(self, request: Request, raw_id: str, csrf: str = Form(""), code: str = Form("")) -> Response:
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn, conn.transaction():
            # The row lock serialises concurrent guesses: no race gets past the per-code cap.
            message = await store.get_message(conn, message_id, lock=True) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "code-check", client):
                return refused
            lang = message["language"]
            if not self.csrf.ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "code-check", client)
            if message["locked_until"] and message["locked_until"] > now:
                await store.audit(conn, message_id, "code-check", "locked", client)
                return self.pages.wait(request, message, message["locked_until"])
            challenge = await store.latest_challenge(conn, message_id, lock=True)
            if challenge is not None and challenge["sms_failed"]:
                await store.audit(conn, message_id, "code-check", "sms-failed", client)
                return self.pages.state(request, "sms_failed", lang, status=410, message=message)
            if challenge is None or challenge["status"] != "active" or challenge["expires_at"] <= now:
                await store.audit(conn, message_id, "code-check", "expired", client)
                OTP_CHECKS.labels("expired").inc()
                return self.pages.state(request, "code_expired", lang, status=410, message=message)
            typed = policy.clean_code(code)
            if typed is None:  # cannot be a code: not a guess, nothing counted
                await store.audit(conn, message_id, "code-check", "malformed", client)
                return self._code_error(request, message, challenge, CODE_FORMAT, code)
            # After a decoy (a wrong number typed), the patient's real code, if still live, still works;
            # wrong guesses count on what the page shows, so decoy and code answer alike.
            real = await store.latest_challenge(conn, message_id, lock=True, real=True) if challenge["decoy"] \
                else challenge
            live = real is not None and real["status"] == "active" and real["expires_at"] > now
            if not live or not crypto.hash_matches(self.settings.portal_secret_key, "otp", f"{real['id']}:{typed}",
                                                   real["code_hash"]):
                return await self._wrong_code(conn, request, message, challenge, now, client, code)
            challenge = real
            first_verification = not await store.has_challenge(conn, message_id, used=True)
            await store.use_challenge(conn, challenge["id"])
            if challenge["bind_source"] == "hospital":
                await store.bind_phone(conn, message["patient_ref"], challenge["phone_hash"], challenge["phone_hint"],
                                       challenge["phone_enc"], "hospital")
            elif challenge["bind_source"] == "first-use":
                await store.prove_for_message(conn, message_id, challenge["phone_hash"], challenge["phone_hint"],
                                              challenge["phone_enc"])
            if challenge["bind_source"]:
                await store.audit(conn, message_id, "binding", challenge["bind_source"], client)
            token = await self.sessions.open(conn, message_id)
            await store.audit(conn, message_id, "code-check", "right", client)
        OTP_CHECKS.labels("right").inc()
        if first_verification:
            reached("verified")
        response = RedirectResponse(f"/m/{message_id}/document", status_code=303)
        self.sessions.start(response, token)
        return response

    async def _wrong_code(self, conn, request, message, challenge, now, client, code: str) -> HTMLResponse:
        wrong = challenge["wrong"] + 1
        dead = wrong >= self.settings.otp_max_wrong_per_code
        await store.record_wrong_code(conn, challenge["id"], dead=dead)
        await store.audit(conn, message["message_id"], "code-check", "wrong", client, "code dead" if dead else None)
        OTP_CHECKS.labels("wrong").inc()
        failed, lock = await self._count_failure(conn, message, now, client)
        if lock:
            return self.pages.wait(request, message, now + lock)
        if dead:
            return self.pages.state(request, "code_expired", message["language"], status=410, message=message)
        # Tries before something happens: the code dies, or the message must wait.
        left = min(self.settings.otp_max_wrong_per_code - wrong, policy.tries_before_wait(failed))
        return self._code_error(request, message, challenge, WRONG_CODE, code, n=left)

    def _code_error(self, request: Request, message, challenge, msgid: str, typed: str, **values) -> HTMLResponse:
        error = {"state": "code_error", "field": "code",
                 "text": gettext(chosen_language(request) or message["language"], msgid, **values)}
        return self.pages.render(request, "code.html", message["language"], status=400, message=message,
                                 hint=challenge["phone_hint"], typed=typed[:12], error=error)

    async def _session_guard(self, conn, request: Request, message_id, action: str, client, csrf: str | None = None):
        """(message, None) when this browser holds a live session on an open message, else (message, refusal)."""
        message = await store.get_message(conn, message_id) if message_id else None
        if refused := await self._refuse_closed(conn, request, message, message_id, action, client):
            return message, refused
        if csrf is not None and not self.csrf.ok(request, csrf, message_id):
            return message, await self._refuse_csrf(conn, request, message, action, client)
        if not await self.sessions.current(conn, request, message_id):
            await store.audit(conn, message_id, action, "no-session", client)
            return message, self.pages.state(request, "session_expired", message["language"], status=401,
                                             message=message)
        return message, None

    async def _document_page(self, conn, request: Request, message, *, details: dict | None = None) -> HTMLResponse:
        idle, warn = self.settings.session_idle_seconds, self.settings.session_warning_seconds
        # The post is offered until the letter is downloaded: the print copy is dropped then.
        postal_offered = (message["postal_requested_at"] is None
                          and not await store.pdf_released(conn, message["message_id"]))
        return self.pages.render(
            request, "document.html", message["language"], message=message, details=details, after_code=True,
            postal_requested=message["postal_requested_at"] is not None, postal_offered=postal_offered,
            warn_after=max(0, idle - warn), warning_minutes=max(1, round(min(warn, idle) / 60)))

    async def document(self, request: Request, raw_id: str) -> HTMLResponse:
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            message, refused = await self._session_guard(conn, request, message_id, "document-view", client)
            if refused:
                return refused
            await store.audit(conn, message_id, "document-view", "ok", client)
            return await self._document_page(conn, request, message)

    async def appointment(self, request: Request, raw_id: str, csrf: str = Form(""), k: str = Form("")) -> Response:
        """The document page with the appointment as text: opened with the link's secret, like a download."""
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            message, refused = await self._session_guard(conn, request, message_id, "appointment-view", client, csrf)
            if refused:
                return refused
            try:
                details = json.loads(self.open(message, k, "details"))
            except crypto.CannotOpen:
                await store.audit(conn, message_id, "appointment-view", "link-incomplete", client)
                return self.pages.state(request, "link_incomplete", message["language"], status=400, message=message)
            await store.audit(conn, message_id, "appointment-view", "ok", client)
            language = chosen_language(request) or message["language"]
            shown = {"when": calendar.when(details, language), "place": details["place"],
                     "address": details["address"], "department": details["department"],
                     "instructions": details.get("instructions")}
            return await self._document_page(conn, request, message, details=shown)

    async def extend(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        """"Stay on the page": the session's idle time starts again (the guard touches it)."""
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            _, refused = await self._session_guard(conn, request, message_id, "session-extend", client, csrf)
            if refused:
                return refused
            await store.audit(conn, message_id, "session-extend", "ok", client)
        return RedirectResponse(f"/m/{message_id}/document", status_code=303)

    async def postal(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        """"Receive this convocation by post instead": only after the code, so only the patient can ask."""
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn, conn.transaction():
            message, refused = await self._session_guard(conn, request, message_id, "postal-request", client, csrf)
            if refused:
                return refused
            if await store.pdf_released(conn, message_id):  # delivered already: no paper copy is left
                await store.audit(conn, message_id, "postal-request", "already-downloaded", client)
                return RedirectResponse(f"/m/{message_id}/document", status_code=303)
            if await store.request_postal(conn, message_id, now):  # once, however often it is pressed
                await add_event(conn, envelope(
                    PostalChosenV1(message_id=message_id, convocation_id=message["convocation_id"], chosen_at=now),
                    producer=PRODUCER, correlation_id=message["convocation_id"]))
            await store.audit(conn, message_id, "postal-request", "ok", client)
        return self.pages.state(request, "postal_requested", message["language"], status=200, message=message)

    async def download(self, request: Request, raw_id: str, kind: str, csrf: str = Form(""),
                       k: str = Form("")) -> Response:
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        if kind not in ("pdf", "ics"):
            return self.pages.state(request, "unknown", "fr", status=404)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "download", client):
                return refused
            lang = message["language"]
            if not self.csrf.ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "download", client)
            if not await self.sessions.current(conn, request, message_id):
                await store.audit(conn, message_id, "download", "no-session", client, kind)
                return self.pages.state(request, "session_expired", lang, status=401, message=message)
            try:
                details = json.loads(self.open(message, k, "details"))
                body = self.open(message, k, "document") if kind == "pdf" else calendar.ics(
                    details, message_id=message_id, host=self.settings.portal_host, language=lang,
                    hospital=self.settings.hospital_name)
            except crypto.CannotOpen:
                # The message id and a session without the link's secret open nothing.
                await store.audit(conn, message_id, "download", "link-incomplete", client, kind)
                return self.pages.state(request, "link_incomplete", lang, status=400, message=message)
            if await store.record_release(conn, message_id, kind):  # the first download of each kind
                # In the letter's trace (kept with the message), linked to this request's.
                with tracing.continued(message["trace_context"], f"{kind} released"):
                    await add_event(conn, envelope(
                        DocumentReleasedV1(message_id=message_id, convocation_id=message["convocation_id"],
                                           kind=kind, released_at=now),
                        producer=PRODUCER, correlation_id=message["convocation_id"]))
                DOCUMENTS_RELEASED.labels(kind).inc()
            await store.audit(conn, message_id, "download", "ok", client, kind)
        filename = calendar.file_name(kind, details)
        media = "application/pdf" if kind == "pdf" else "text/calendar; charset=utf-8"
        return Response(body, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    def open(self, message, link_secret: str, purpose: str) -> bytes:
        server_key = self.settings.seal_keys.get(message["key_id"])
        if server_key is None or not link_secret or message[f"{purpose}_ciphertext"] is None:
            raise crypto.CannotOpen("cannot open")
        return crypto.open_sealed(
            bytes(message[f"{purpose}_nonce"]), bytes(message[f"{purpose}_ciphertext"]), link_secret=link_secret,
            server_key=server_key, key_id=message["key_id"], message_id=message["message_id"], purpose=purpose,
        )

    async def logout(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if not self.csrf.ok(request, csrf, message_id):
                if message is not None:
                    await store.audit(conn, message_id, "logout", "csrf-refused", client)
                return self.pages.state(request, "bad_request", message["language"] if message else "fr",
                                        status=403, message=message)
            response = RedirectResponse(f"/m/{message_id}" if message else "/", status_code=303)
            await self.sessions.end(conn, request, response)
            if message is not None:
                await store.audit(conn, message_id, "logout", "ok", client)
        return response
