"""The patient's pages. A GET never changes state (mail scanners fetch and even click every link);
only a correct SMS code opens a session, and only a download counts as delivery."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from access_portal import calendar, policy, store
from access_portal.handlers import PortalHandlers
from access_portal.i18n import text
from access_portal.metrics import DOCUMENTS_RELEASED, OTP_CHECKS, OTP_REQUESTS, UNKNOWN_LINKS
from access_portal.settings import PortalSettings
from shared import crypto
from shared.contracts import AccessChangedV1, DocumentReleasedV1, OtpRequestedV1, envelope
from shared.logs import get_logger
from shared.metrics import reached
from shared.outbox import add_event

PRODUCER = "access-portal"
MAX_FORM_BYTES = 16 * 1024
ZURICH = ZoneInfo("Europe/Zurich")
log = get_logger(__name__)


class Portal:
    def __init__(self, settings: PortalSettings, pool_getter, handlers: PortalHandlers) -> None:
        self.settings, self._pool, self.h = settings, pool_getter, handlers
        self.env = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
        )
        prefix = "__Host-" if settings.cookie_secure else ""
        self.session_cookie, self.csrf_cookie = f"{prefix}session", f"{prefix}csrf"
        self.limits = policy.SendLimits(settings.otp_resend_seconds, settings.otp_max_per_message_hour,
                                        settings.otp_max_per_number_day)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool()

    def client_hash(self, request: Request) -> str | None:
        host = request.client.host if request.client else None
        return crypto.keyed_hash(self.settings.portal_secret_key, "client", host) if host else None

    def _csrf_binding(self, cookie: str, request: Request, message_id) -> str:
        # Bound to the browser's random cookie, to the message and to the session cookie as sent: a
        # token minted on another letter, or before a login, is refused. No server state.
        session = request.cookies.get(self.session_cookie, "")
        return f"{cookie}|{message_id or ''}|{session}"

    def csrf_token(self, request: Request, message_id) -> tuple[str, str]:
        """(cookie value, form token) of a double-submit token for this message's forms."""
        cookie = request.cookies.get(self.csrf_cookie) or secrets.token_urlsafe(24)
        return cookie, crypto.keyed_hash(self.settings.portal_secret_key, "csrf",
                                         self._csrf_binding(cookie, request, message_id))

    def csrf_ok(self, request: Request, token: str, message_id) -> bool:
        cookie = request.cookies.get(self.csrf_cookie)
        if not cookie or not token:
            return False
        # Under the key the token names: a form served just before a key rotation still posts.
        return crypto.hash_matches(self.settings.portal_secret_key, "csrf",
                                   self._csrf_binding(cookie, request, message_id), token)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.settings.cookie_secure,
                            httponly=True, samesite="strict")

    def page(self, request: Request, template: str, language: str, *, status: int = 200, message=None,
             **context) -> HTMLResponse:
        cookie, token = self.csrf_token(request, message["message_id"] if message else None)
        t = lambda key, **kw: text(language, key, **kw)  # noqa: E731
        html = self.env.get_template(template).render(
            t=t, lang=language, csrf=token, hospital=self.settings.hospital_name,
            secretariat_phone=message["secretariat_phone"] if message else None,
            secretariat_email=message["secretariat_email"] if message else None,
            message_id=str(message["message_id"]) if message else None, **context,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(self.csrf_cookie) != cookie:
            self.set_cookie(response, self.csrf_cookie, cookie)
        return response

    def state_page(self, request: Request, state: str, language: str = "fr", *, status: int, message=None,
                   **values) -> HTMLResponse:
        return self.page(request, "state.html", language, status=status, message=message, state=state,
                         values=values)

    def closed_state(self, message, now: datetime) -> tuple[str, int] | None:
        """Why this message cannot be opened, as (state, HTTP status), or None."""
        if message is None:
            return "unknown", 404
        if message["state"] == "revoked":
            return (message["revoked_reason"] if message["revoked_reason"] in ("cancelled", "superseded", "withdrawn")
                    else "cancelled"), 410
        if message["state"] == "expired" or message["expires_at"] <= now:
            return "expired", 410
        return None

    def wait_page(self, request: Request, message, until: datetime) -> HTMLResponse:
        local = until.astimezone(ZURICH).strftime("%H:%M") if until - datetime.now(timezone.utc) < timedelta(
            hours=20) else until.astimezone(ZURICH).strftime("%d.%m.%Y %H:%M")
        response = self.state_page(request, "wait", message["language"], status=429, message=message, until=local)
        response.headers["Retry-After"] = str(max(1, int((until - datetime.now(timezone.utc)).total_seconds())))
        return response

    async def session_ok(self, conn, request: Request, message_id: uuid.UUID) -> str | None:
        token = request.cookies.get(self.session_cookie)
        if not token:
            return None
        # Looked up under every PORTAL_SECRET_KEY key: a session opened before a rotation lives on.
        hashes = crypto.keyed_hashes(self.settings.portal_secret_key, "session", token)
        row = await store.touch_session(conn, hashes, message_id, self.settings.session_idle_seconds,
                                        self.settings.session_absolute_seconds)
        return row["token_hash"] if row else None

    @staticmethod
    def parse_id(raw: str) -> uuid.UUID | None:
        try:
            return uuid.UUID(raw)
        except ValueError:
            return None

    # --- routes -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        r = APIRouter()
        limit = dict(max_body_size=MAX_FORM_BYTES)  # every form here is a few short fields
        r.add_api_route("/", self.home, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}", self.view, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/not-my-number", self.not_my_number, methods=["GET", "HEAD"],
                        response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/code", self.request_code, methods=["POST"], **limit)
        r.add_api_route("/m/{raw_id}/code", self.code_form, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/verify", self.verify, methods=["POST"], **limit)
        r.add_api_route("/m/{raw_id}/document", self.document, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/download/{kind}", self.download, methods=["POST"], **limit)
        r.add_api_route("/m/{raw_id}/logout", self.logout, methods=["POST"], **limit)
        return r

    async def home(self, request: Request) -> HTMLResponse:
        return self.state_page(request, "unknown", "fr", status=200)

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
        return self.state_page(request, closed[0], message["language"] if message else "fr", status=closed[1],
                               message=message)

    async def _refuse_csrf(self, conn, request: Request, message, action: str, client) -> HTMLResponse:
        await store.audit(conn, message["message_id"], action, "csrf-refused", client)
        return self.state_page(request, "bad_request", message["language"], status=403, message=message)

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
        return self.page(request, "message.html", message["language"], message=message,
                         bound_hint=binding["phone_hint"] if binding else None, hint=message["phone_hint"])

    async def not_my_number(self, request: Request, raw_id: str) -> HTMLResponse:
        """Where "this is not my number" leads: whom to call. Read-only, like every GET."""
        message_id = self.parse_id(raw_id)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            client = self.client_hash(request)
            if refused := await self._refuse_closed(conn, request, message, message_id, "not-my-number", client):
                return refused
            await store.audit(conn, message_id, "not-my-number", "ok", client)
        return self.state_page(request, "not_my_number", message["language"], status=200, message=message,
                               phone=message["secretariat_phone"])

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
                           phone: str = Form("")) -> Response:
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await store.get_message(conn, message_id, lock=True) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "code-request", client):
                return refused
            lang = message["language"]
            if not self.csrf_ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "code-request", client)
            if message["locked_until"] and message["locked_until"] > now:
                await store.audit(conn, message_id, "code-request", "locked", client)
                OTP_REQUESTS.labels("locked").inc()
                return self.wait_page(request, message, message["locked_until"])
            target = await self._target_phone(conn, message, phone)
            if isinstance(target, str):
                await store.audit(conn, message_id, "code-request", target, client)
                OTP_REQUESTS.labels(target).inc()
                return self.state_page(request, target, lang, status=400, message=message)
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
                return self.wait_page(request, message, until)
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

    async def _target_phone(self, conn, message, typed: str):
        """(hash, hint, encrypted number, bind source, decoy) to text the code to, or a refusal state."""
        binding = await self._usable_binding(conn, message)
        if binding is not None:
            return binding["phone_hash"], binding["phone_hint"], binding["phone_enc"], None, False
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
            return self.state_page(request, "sms_failed", message["language"], status=200, message=message)
        return self.page(request, "code.html", message["language"], message=message, hint=challenge["phone_hint"],
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
            if not self.csrf_ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "code-check", client)
            if message["locked_until"] and message["locked_until"] > now:
                await store.audit(conn, message_id, "code-check", "locked", client)
                return self.wait_page(request, message, message["locked_until"])
            challenge = await store.latest_challenge(conn, message_id, lock=True)
            if challenge is not None and challenge["sms_failed"]:
                await store.audit(conn, message_id, "code-check", "sms-failed", client)
                return self.state_page(request, "sms_failed", lang, status=410, message=message)
            if challenge is None or challenge["status"] != "active" or challenge["expires_at"] <= now:
                await store.audit(conn, message_id, "code-check", "expired", client)
                OTP_CHECKS.labels("expired").inc()
                return self.state_page(request, "code_expired", lang, status=410, message=message)
            typed = policy.clean_code(code)
            if typed is None:  # cannot be a code: not a guess, nothing counted
                await store.audit(conn, message_id, "code-check", "malformed", client)
                return self.page(request, "code.html", lang, status=400, message=message,
                                 hint=challenge["phone_hint"], error=text(lang, "code_format"))
            # After a decoy (a wrong number typed), the patient's real code, if still live, still works;
            # wrong guesses count on what the page shows, so decoy and code answer alike.
            real = await store.latest_challenge(conn, message_id, lock=True, real=True) if challenge["decoy"] \
                else challenge
            live = real is not None and real["status"] == "active" and real["expires_at"] > now
            if not live or not crypto.hash_matches(self.settings.portal_secret_key, "otp", f"{real['id']}:{typed}",
                                                   real["code_hash"]):
                return await self._wrong_code(conn, request, message, challenge, now, client)
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
            token = secrets.token_urlsafe(32)  # 256 bits, fresh at authentication
            await store.insert_session(conn, self.session_hash(token), message_id)
            await store.audit(conn, message_id, "code-check", "right", client)
        OTP_CHECKS.labels("right").inc()
        if first_verification:
            reached("verified")
        response = RedirectResponse(f"/m/{message_id}/document", status_code=303)
        self.set_cookie(response, self.session_cookie, token, max_age=self.settings.session_absolute_seconds)
        return response

    async def _wrong_code(self, conn, request, message, challenge, now, client) -> HTMLResponse:
        wrong = challenge["wrong"] + 1
        dead = wrong >= self.settings.otp_max_wrong_per_code
        await store.record_wrong_code(conn, challenge["id"], dead=dead)
        await store.audit(conn, message["message_id"], "code-check", "wrong", client, "code dead" if dead else None)
        OTP_CHECKS.labels("wrong").inc()
        failed, lock = await self._count_failure(conn, message, now, client)
        if lock:
            return self.wait_page(request, message, now + lock)
        if dead:
            return self.state_page(request, "code_expired", message["language"], status=410, message=message)
        # Tries before something happens: the code dies, or the message must wait.
        left = min(self.settings.otp_max_wrong_per_code - wrong, policy.tries_before_wait(failed))
        return self.page(request, "code.html", message["language"], status=400, message=message,
                         hint=challenge["phone_hint"], error=text(message["language"], "wrong_code", n=left))

    def session_hash(self, token: str) -> str:
        return crypto.keyed_hash(self.settings.portal_secret_key, "session", token)

    async def document(self, request: Request, raw_id: str) -> HTMLResponse:
        message_id = self.parse_id(raw_id)
        client = self.client_hash(request)
        async with self.pool.acquire() as conn:
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "document-view", client):
                return refused
            if not await self.session_ok(conn, request, message_id):
                await store.audit(conn, message_id, "document-view", "no-session", client)
                return self.state_page(request, "session_expired", message["language"], status=401, message=message)
            await store.audit(conn, message_id, "document-view", "ok", client)
        return self.page(request, "document.html", message["language"], message=message)

    async def download(self, request: Request, raw_id: str, kind: str, csrf: str = Form(""),
                       k: str = Form("")) -> Response:
        message_id, now = self.parse_id(raw_id), datetime.now(timezone.utc)
        client = self.client_hash(request)
        if kind not in ("pdf", "ics"):
            return self.state_page(request, "unknown", "fr", status=404)
        async with self.pool.acquire() as conn, conn.transaction():
            message = await store.get_message(conn, message_id) if message_id else None
            if refused := await self._refuse_closed(conn, request, message, message_id, "download", client):
                return refused
            lang = message["language"]
            if not self.csrf_ok(request, csrf, message_id):
                return await self._refuse_csrf(conn, request, message, "download", client)
            if not await self.session_ok(conn, request, message_id):
                await store.audit(conn, message_id, "download", "no-session", client, kind)
                return self.state_page(request, "session_expired", lang, status=401, message=message)
            try:
                details = json.loads(self.open(message, k, "details"))
                body = self.open(message, k, "document") if kind == "pdf" else calendar.ics(
                    details, message_id=message_id, host=self.settings.portal_host, language=lang,
                    hospital=self.settings.hospital_name)
            except crypto.CannotOpen:
                # The message id and a session without the link's secret open nothing.
                await store.audit(conn, message_id, "download", "link-incomplete", client, kind)
                return self.state_page(request, "link_incomplete", lang, status=400, message=message)
            if await store.record_release(conn, message_id, kind):  # the first download of each kind
                await add_event(conn, envelope(
                    DocumentReleasedV1(message_id=message_id, convocation_id=message["convocation_id"], kind=kind,
                                       released_at=now),
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
            if not self.csrf_ok(request, csrf, message_id):
                if message is not None:
                    await store.audit(conn, message_id, "logout", "csrf-refused", client)
                return self.state_page(request, "bad_request", message["language"] if message else "fr",
                                       status=403, message=message)
            token = request.cookies.get(self.session_cookie)
            if token:
                await store.end_session(conn, self.session_hash(token))
            if message is not None:
                await store.audit(conn, message_id, "logout", "ok", client)
        response = RedirectResponse(f"/m/{message_id}" if message else "/", status_code=303)
        response.delete_cookie(self.session_cookie, path="/", secure=self.settings.cookie_secure, httponly=True,
                               samesite="strict")
        return response
