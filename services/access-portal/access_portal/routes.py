"""The patient's pages (the routes): each reads the request, asks the patient-access service
(access.py) and turns its outcome into a page (a GET) or a redirect (every POST but a download's file:
post/redirect/get, the page saying what happened from ``?told=``). A GET never changes state (mail
scanners fetch and even click every link); only a correct SMS code opens a session, and only a download
counts as delivery."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from access_portal import calendar
from access_portal.access import (
    CLOSED,
    CODE_ERRORS,
    CodePage,
    CodeRefused,
    CodeSent,
    DocumentPage,
    HelpPage,
    NoCodeYet,
    NumberRefused,
    PatientAccess,
    Released,
    StatePage,
    ToDocument,
    TooEarly,
    Verified,
    Wait,
)
from access_portal.i18n import N_, gettext
from access_portal.pages import NOTICES, Pages
from access_portal.phones import Phones
from access_portal.records import Challenge, Message
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared.i18n import content_disposition, format_time
from shared.web import Csrf, chosen_language, parse_uuid

MAX_FORM_BYTES = 16 * 1024
GUIDE_VIDEOS = Path(__file__).resolve().parent / "static" / "guide"
# Where the guide's "back to my message" may lead: a page of a letter, never another site.
BACK_TO_LETTER = re.compile(r"/m/[0-9a-f-]{36}(/[a-z-]+)?")
# What a POST refused is told by (post/redirect/get: ?told=<state> on the GET page of the same place),
# with the status the page answers.
TOLD_STATES = {
    "bad_request": 403,
    "no_proof": 403,
    "code_expired": 410,
    "sms_failed": 410,
    "session_expired": 401,
    "link_incomplete": 400,
    "try_later": 503,
}
NUMBER_ERRORS = {
    "number_invalid": N_("Enter a mobile number, like 079 123 45 67 or +41 79 123 45 67."),
    "number_mismatch": N_(
        "This number does not match the one we have for you, which ends in %(ending)s. Check it and type it "
        "again. If it is not your number, do not ask for a code: choose “This is not my number” below."
    ),
}


class Portal:
    def __init__(self, settings: PortalSettings, pool_getter: Callable[[], asyncpg.Pool], phones: Phones) -> None:
        self.settings = settings
        self.sessions = Sessions(settings)
        self.csrf = Csrf(
            settings.portal_secret_key,
            session_cookie=self.sessions.cookie_name,
            cookie_name="__Host-csrf" if settings.cookie_secure else "csrf",
        )
        self.pages = Pages(settings, self.csrf, self.sessions)
        self.access = PatientAccess(settings, pool_getter, phones, self.sessions)

    def client(self, request: Request) -> str | None:
        return self.access.client_hash(request.client.host if request.client else None)

    def router(self) -> APIRouter:
        r = APIRouter()
        r.add_api_route("/", self.home, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}", self.view, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/code", self.request_code, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/code", self.code_form, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/code/status", self.code_status, methods=["GET"])
        r.add_api_route("/m/{raw_id}/verify", self.verify, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/document", self.document, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/appointment", self.appointment, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/extend", self.extend, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/postal", self.postal, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route(
            "/m/{raw_id}/not-my-number", self.not_my_number, methods=["GET", "HEAD"], response_class=HTMLResponse
        )
        r.add_api_route("/m/{raw_id}/no-phone", self.no_phone, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/signed-out", self.signed_out, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/guide", self.guide, methods=["GET", "HEAD"], response_class=HTMLResponse)
        r.add_api_route("/m/{raw_id}/download/{kind}", self.download, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/m/{raw_id}/logout", self.logout, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        return r

    # --- the routes ------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return self.pages.state(request, "unknown", "fr", status=200)

    async def guide(self, request: Request) -> Response:
        """The step-by-step guide (and its video, when `make guide` made one for the language), with the way
        back to the page of the letter it was opened from."""
        back = request.query_params.get("back", "")
        return self.pages.render(
            request,
            "guide.html",
            "fr",
            videos=GUIDE_VIDEOS.is_dir(),
            back=back if BACK_TO_LETTER.fullmatch(back) else None,
        )

    async def view(self, request: Request, raw_id: str) -> Response:
        """The link's page. Read-only: records a 'view' audit entry and nothing else. ``?told=``: what the form
        posted from it was answered (a number refused, a refusal, a wait), shown again on every reload."""
        outcome = await self.access.open_link(parse_uuid(raw_id), self.client(request))
        if isinstance(outcome, StatePage):
            return await self.state(request, outcome)
        told = request.query_params.get("told", "")
        message = outcome.message
        if told in NUMBER_ERRORS:
            # The first page again, the error by the field (portal.js types the number in again).
            ending = "".join(ch for ch in (message.phone_hint or "") if ch.isdigit())[-2:]
            language = chosen_language(request) or message.language
            error = {"state": told, "field": "phone", "text": gettext(language, NUMBER_ERRORS[told], ending=ending)}
            return self.first_page(
                request, message, outcome.bound_hint, status=400, error=error, paper=await self.access.paper(message)
            )
        if told in ("wait", "too_early") and (paced := await self.paced(request, message.message_id)) is not None:
            return paced
        if told in TOLD_STATES:
            return await self.state(request, StatePage(told, TOLD_STATES[told], message))
        return self.first_page(request, message, outcome.bound_hint, paper=await self.access.paper(message))

    async def not_my_number(self, request: Request, raw_id: str) -> Response:
        """Where "this is not my number" leads: whom to call. Read-only, like every GET."""
        return await self.help(
            request,
            await self.access.help_page(parse_uuid(raw_id), "not_my_number", "not-my-number", self.client(request)),
        )

    async def no_phone(self, request: Request, raw_id: str) -> Response:
        """Where "I have no mobile phone" leads: the secretariat can post the convocation."""
        return await self.help(
            request, await self.access.help_page(parse_uuid(raw_id), "no_phone", "no-phone", self.client(request))
        )

    async def signed_out(self, request: Request, raw_id: str) -> Response:
        """Where "Log out" leads: the letter is no longer shown. Read-only, like every GET."""
        return await self.help(
            request, await self.access.help_page(parse_uuid(raw_id), "signed_out", "signed-out", self.client(request))
        )

    async def request_code(
        self,
        request: Request,
        raw_id: str,
        csrf: str = Form(""),
        k: str = Form(""),
        phone: str = Form(""),
        resend: str = Form(""),
    ) -> Response:
        """ "Send me a code": ``k`` is the link's secret (portal.js), the proof that the whole link is at hand.
        Answered with a redirect whatever happened (post/redirect/get): to the code form, or back to the page
        the form was on (the first page, or the code form for "Send a new code") saying what happened."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.request_code(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            link_secret=k,
            phone=phone,
            resend=bool(resend),
            client=self.client(request),
        )
        if isinstance(outcome, CodeSent):
            return RedirectResponse(f"/m/{outcome.message_id}/code", status_code=303)
        place = "/code" if resend else ""
        if isinstance(outcome, NumberRefused):
            return self.told(message_id, "", outcome.reason)
        if isinstance(outcome, TooEarly):
            return self.told(message_id, "/code", "too_early")
        return self.refused(message_id, place, outcome)

    async def code_form(self, request: Request, raw_id: str) -> Response:
        """The code form; ``?told=``: what the form posted from it was answered (a code refused, "Send a new
        code" too early, a wait, a refusal), with what the database now counts (tries left, until when)."""
        outcome = await self.access.code_page(parse_uuid(raw_id), self.client(request))
        told = request.query_params.get("told", "")
        if isinstance(outcome, NoCodeYet):
            # Before any code (a refusal told on the first page, or the form's address typed in).
            return self.told(outcome.message_id, "", told if told in TOLD_STATES or told == "wait" else None)
        if not isinstance(outcome, CodePage):
            if outcome.state == told and told in TOLD_STATES:  # the SMS failed, as the POST was told
                return await self.state(request, StatePage(told, TOLD_STATES[told], outcome.message))
            return await self.state(request, outcome)
        message, code = outcome.message, outcome.code
        paper = await self.access.paper(message)
        if told in CODE_ERRORS:
            values = {"n": self.access.tries_left(message, code)} if told == "wrong_code" else {}
            language = chosen_language(request) or message.language
            error = {"state": "code_error", "field": "code", "text": gettext(language, CODE_ERRORS[told], **values)}
            return self.code_page(request, message, code, status=400, error=error, paper=paper)
        if told in ("wait", "too_early") and (paced := await self.paced(request, message.message_id)) is not None:
            return paced
        if told in TOLD_STATES:
            return await self.state(request, StatePage(told, TOLD_STATES[told], message))
        return self.code_page(request, message, code, paper=paper)

    async def code_status(self, raw_id: str) -> Response:
        """Polled by the code page (portal.js): {"sms": "waiting" | "sent" | "failed" | "none"}."""
        status = await self.access.code_status(parse_uuid(raw_id))
        return JSONResponse({"sms": status.state})

    async def verify(
        self, request: Request, raw_id: str, csrf: str = Form(""), k: str = Form(""), code: str = Form("")
    ) -> Response:
        """A typed code: the document page, or the code form again saying why not (post/redirect/get)."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.verify(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            link_secret=k,
            code=code,
            client=self.client(request),
        )
        if isinstance(outcome, Verified):
            response = RedirectResponse(f"/m/{outcome.message_id}/document", status_code=303)
            self.sessions.start(response, outcome.token)
            return response
        if isinstance(outcome, CodeRefused):
            return self.told(message_id, "/code", outcome.reason)
        return self.refused(message_id, "/code", outcome)

    async def document(self, request: Request, raw_id: str) -> Response:
        """The page after the code; ``?told=``: what a form posted from it was answered (a notice, a refusal)."""
        outcome = await self.access.document(
            parse_uuid(raw_id), session=self.sessions.token(request), client=self.client(request)
        )
        if isinstance(outcome, StatePage):
            return await self.state(request, outcome)
        told = request.query_params.get("told", "")
        if told in TOLD_STATES:
            return await self.state(request, StatePage(told, TOLD_STATES[told], outcome.message))
        return self.document_page(request, outcome, told if told in NOTICES else None)

    async def appointment(self, request: Request, raw_id: str, csrf: str = Form(""), k: str = Form("")) -> Response:
        """The appointment as text, for the document page's script (fetch): opened with the link's secret, like
        a download. JSON, never a page: the document page itself is a GET, so Back, Help and the language switch
        never post anything again."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.appointment(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            session=self.sessions.token(request),
            link_secret=k,
            client=self.client(request),
        )
        if isinstance(outcome, StatePage):
            return JSONResponse({"state": outcome.state}, status_code=outcome.status)
        details, language = outcome.details or {}, chosen_language(request) or outcome.message.language
        return JSONResponse(
            {
                "when": calendar.when(details, language),
                "place": details["place"],
                "address": details["address"],
                "department": details["department"],
                "instructions": details.get("instructions") or "",
            }
        )

    async def extend(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        """ "Stay on the page": the session's idle time starts again."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.extend(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            session=self.sessions.token(request),
            client=self.client(request),
        )
        return self.to_document(message_id, outcome)

    async def postal(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        """ "Receive this convocation by post instead": only after the code, so only the patient can ask."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.choose_post(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            session=self.sessions.token(request),
            client=self.client(request),
        )
        return self.to_document(message_id, outcome)

    async def download(
        self, request: Request, raw_id: str, kind: str, csrf: str = Form(""), k: str = Form("")
    ) -> Response:
        """The file itself (the page stays where it is), or a redirect to the page that says why not."""
        message_id = parse_uuid(raw_id)
        outcome = await self.access.release(
            message_id,
            kind,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            session=self.sessions.token(request),
            link_secret=k,
            client=self.client(request),
            language=chosen_language(request),
        )
        if isinstance(outcome, Released):
            return Response(
                outcome.body,
                media_type=outcome.media_type,
                headers={"Content-Disposition": content_disposition(outcome.filename)},
            )
        return self.refused(message_id, "/document", outcome)

    async def logout(self, request: Request, raw_id: str, csrf: str = Form("")) -> Response:
        message_id = parse_uuid(raw_id)
        outcome = await self.access.log_out(
            message_id,
            csrf_ok=self.csrf.ok(request, csrf, message_id),
            session=self.sessions.token(request),
            client=self.client(request),
        )
        if isinstance(outcome, StatePage):
            return self.refused(message_id, "/document", outcome)
        # A page that says so, reached by GET (Back after it posts nothing again).
        response = RedirectResponse(
            f"/m/{outcome.message_id}/signed-out" if outcome.message_id else "/", status_code=303
        )
        self.sessions.forget(response)
        return response

    # --- outcomes into pages and redirects ---------------------------------------------------------------

    @staticmethod
    def told(message_id: uuid.UUID | None, place: str, told: str | None) -> RedirectResponse:
        """Post/redirect/get: a POST's answer, the GET page of ``place`` ("", "/code", "/document") saying what
        happened (``told``: a key the page knows, never what was typed). Back, Help and a reload then never
        post the form again; the outcome was counted and audited once, by the POST."""
        if message_id is None:
            return RedirectResponse("/", status_code=303)
        return RedirectResponse(f"/m/{message_id}{place}" + (f"?told={told}" if told else ""), status_code=303)

    def refused(self, message_id: uuid.UUID | None, place: str, outcome: StatePage | Wait) -> RedirectResponse:
        """A POST refused: to the page of ``place`` that says why. A closed message (cancelled, expired...) is
        told by its link's page, which says so to every request."""
        if isinstance(outcome, Wait):
            return self.told(message_id, place, "wait")
        if outcome.state not in TOLD_STATES:
            return self.told(message_id, "", None)
        return self.told(message_id, place, outcome.state)

    def to_document(self, message_id: uuid.UUID | None, outcome: ToDocument | StatePage) -> RedirectResponse:
        if isinstance(outcome, StatePage):
            return self.refused(message_id, "/document", outcome)
        return self.told(outcome.message_id, "/document", outcome.notice)

    async def paced(self, request: Request, message_id: uuid.UUID) -> Response | None:
        """The page that says to wait (429 with Retry-After), as the database counts it now: a lock, or "Send a
        new code" too early (the code page, whose code still works); None once nothing holds back."""
        pace = await self.access.pace(message_id)
        if isinstance(pace, TooEarly):
            return self.code_page(
                request,
                pace.message,
                pace.code,
                status=429,
                early=pace.until,
                paper=await self.access.paper(pace.message),
            )
        if isinstance(pace, Wait):
            return self.pages.wait(request, pace.message, pace.until, paper=await self.access.paper(pace.message))
        return None

    async def state(self, request: Request, page: StatePage) -> HTMLResponse:
        """A state page; those of a letter still open say when it goes on paper, like every other page."""
        language = page.message.language if page.message else "fr"
        paper = await self.access.paper(page.message) if page.message and page.state not in CLOSED else None
        return self.pages.state(request, page.state, language, status=page.status, message=page.message, paper=paper)

    async def help(self, request: Request, outcome: HelpPage | StatePage) -> HTMLResponse:
        if isinstance(outcome, StatePage):
            return await self.state(request, outcome)
        return self.pages.state(
            request,
            outcome.state,
            outcome.message.language,
            status=200,
            message=outcome.message,
            phone=outcome.message.secretariat_phone,
            paper=await self.access.paper(outcome.message),
        )

    def first_page(
        self, request: Request, message: Message, bound_hint: str | None, *, status: int = 200, **context
    ) -> HTMLResponse:
        return self.pages.render(
            request,
            "message.html",
            message.language,
            status=status,
            message=message,
            bound_hint=bound_hint,
            hint=message.phone_hint,
            **context,
        )

    def code_page(
        self,
        request: Request,
        message: Message,
        code: Challenge,
        *,
        status: int = 200,
        early: datetime | None = None,
        **context,
    ) -> HTMLResponse:
        """The code form for ``code`` (the latest code sent): until when it works and the time left, counted
        from its expiry here (portal.js counts down from it); ``early``: "Send a new code" was pressed before
        a new one may be sent, and says when one can."""
        now = datetime.now(timezone.utc)
        language = chosen_language(request) or message.language
        # A code used or dead (five wrong entries) has no time left either.
        left = max(0, int((code.expires_at - now).total_seconds())) if code.status == "active" else 0
        too_early = None
        if early is not None:
            wait = max(1, int((early - now).total_seconds()) + 1)
            ready = (early + timedelta(minutes=1)).replace(second=0, microsecond=0)  # the minute it is over
            too_early = {"seconds": wait, "time": format_time(ready, language)}
        response = self.pages.render(
            request,
            "code.html",
            message.language,
            status=status,
            message=message,
            hint=code.phone_hint,
            works_until=format_time(code.expires_at, language),
            seconds_left=left,
            time_left=f"{left // 60}:{left % 60:02d}",
            too_early=too_early,
            **context,
        )
        if too_early is not None:
            response.headers["Retry-After"] = str(too_early["seconds"])
        return response

    def document_page(self, request: Request, page: DocumentPage, notice: str | None) -> HTMLResponse:
        """``notice``: what the request that led here asked for, when it needs saying (a key of NOTICES)."""
        idle, warn = self.settings.session_idle_seconds, self.settings.session_warning_seconds
        language = chosen_language(request) or page.message.language
        return self.pages.render(
            request,
            "document.html",
            page.message.language,
            message=page.message,
            after_code=True,
            postal_offered=page.postal_offered,
            paper=page.paper,
            notice=notice,
            notice_text=gettext(language, NOTICES[notice]) if notice else None,
            warn_after=max(0, idle - warn),
            idle_after=idle,
            warning_minutes=max(1, round(min(warn, idle) / 60)),
        )
