"""The console's pages for staff: sign-in through the hospital's OpenID provider, search, worklists, one
convocation's timeline (refreshed without a reload) and its actions, the department figures, the staff
audit. Server-rendered; every POST checks CSRF and answers with a redirect or a page that says why."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from secretariat import domain, store
from secretariat.auth import Identity, Oidc, Unauthenticated, staff_identity
from secretariat.console import AuditFilter, Console
from secretariat.settings import SecretariatSettings
from shared import crypto
from shared.i18n import LANGUAGES, Catalogs
from shared.logs import get_logger
from shared.web import Csrf, chosen_language, parse_uuid, remember_language

LOCALE = Path(__file__).parent / "locale"
MAX_FORM_BYTES = 16 * 1024
LOGIN_SECONDS = 600
NAMES_SECONDS = 60  # department names are read again this often
log = get_logger(__name__)


def _localtime(at: datetime) -> str:
    return at.astimezone(domain.ZURICH).strftime("%d.%m.%Y %H:%M")


def _clock(at: datetime) -> str:
    return at.astimezone(domain.ZURICH).strftime("%H:%M")


def _day(d: date) -> str:
    return d.strftime("%d.%m.%Y")


def _duration(seconds: float | None) -> str:
    """'3 h 20 min', '2 d 4 h', '–'."""
    if seconds is None:
        return "–"
    minutes = int(round(seconds / 60))
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


class Pages:
    def __init__(self, settings: SecretariatSettings, console: Console, oidc: Oidc) -> None:
        self.s, self.console, self.oidc = settings, console, oidc
        self.env = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        self.env.filters.update(localtime=_localtime, clock=_clock, day=_day, duration=_duration)
        self.catalogs = Catalogs(LOCALE)
        prefix = "__Host-" if settings.cookie_secure else ""
        self.session_cookie, self.login_cookie = f"{prefix}staff", f"{prefix}staff-login"
        self.csrf = Csrf(settings.secretariat_secret_key, session_cookie=self.session_cookie)
        self._names: dict[str, str] = {}
        self._names_at = float("-inf")

    # --- helpers ------------------------------------------------------------------------------

    def language(self, request: Request) -> str:
        return chosen_language(request, accept_language=True) or "fr"

    def token_hash(self, purpose: str, token: str) -> str:
        return crypto.keyed_hash(self.s.secretariat_secret_key, purpose, token)

    def csrf_for(self, request: Request) -> str:
        return self.csrf.token(request)  # '' without a session

    def csrf_ok(self, request: Request, sent: str) -> bool:
        return self.csrf.ok(request, sent)

    async def csrf_refused(self, request: Request, who: Identity | None, action: str) -> HTMLResponse:
        """A form without its CSRF token (too old, or posted from elsewhere): audited, nothing done."""
        await self.console.refused("console", action, "csrf", who=who)
        return self.problem(request, who, "bad-request", 403)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        # Lax, not Strict: the provider's redirect back to /auth/callback is a cross-site navigation.
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.s.cookie_secure, httponly=True, samesite="lax"
        )

    async def department_names(self) -> dict[str, str]:
        if time.monotonic() - self._names_at > NAMES_SECONDS:
            self._names, self._names_at = await self.console.department_names(), time.monotonic()
        return self._names

    def page(
        self,
        request: Request,
        template: str,
        who: Identity | None = None,
        *,
        status: int = 200,
        names: dict[str, str] | None = None,
        **context,
    ) -> HTMLResponse:
        lang = self.language(request)
        env = self.env.overlay()
        self.catalogs.install(env, lang)
        # The language switch keeps the page and what it shows (a worklist, a period, filters).
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
        switch = {code: f"{request.url.path}?{urlencode([*kept, ('lang', code)])}" for code in LANGUAGES}
        html = env.get_template(template).render(
            lang=lang,
            who=who,
            csrf=self.csrf_for(request) if who else "",
            path=request.url.path,
            switch=switch,
            idle_seconds=self.s.session_idle_seconds,
            warning_seconds=self.s.session_warning_seconds,
            now=datetime.now(timezone.utc),
            names=names or {},
            query=request.url.query,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        remember_language(request, response, secure=self.s.cookie_secure, max_age=365 * 86400)
        return response

    async def staff_page(self, request: Request, template: str, who: Identity, **context) -> HTMLResponse:
        """A page for a signed-in member of staff, with the departments' names."""
        return self.page(request, template, who, names=await self.department_names(), **context)

    def problem(self, request: Request, who: Identity | None, state: str, status: int) -> HTMLResponse:
        return self.page(request, "problem.html", who, status=status, state=state)

    async def identity(self, request: Request, *, used: bool = True) -> Identity | None:
        """Who the session cookie names, if the session is open. ``used``: False for requests the page makes
        by itself (the timeline's refreshes), which must not keep an unattended console signed in."""
        token = request.cookies.get(self.session_cookie)
        if not token:
            return None
        session_hash = self.token_hash("session", token)
        async with self.console.pool.acquire() as conn:
            row = await store.touch_session(
                conn, session_hash, self.s.session_idle_seconds, self.s.session_absolute_seconds, used=used
            )
        if row is None:
            return None
        return staff_identity(
            row["subject"], row["name"], list(row["roles"]), list(row["departments"]), session_hash=session_hash
        )

    def to_login(self, request: Request) -> Response:
        return RedirectResponse("/?expired=1" if request.cookies.get(self.session_cookie) else "/", status_code=303)

    @staticmethod
    def home_of(who: Identity) -> str:
        return "/search" if who.can_read else "/figures"

    parse_id = staticmethod(parse_uuid)

    # --- routes -------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        r = APIRouter()
        r.add_api_route("/", self.home, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/auth/login", self.login, methods=["GET"])
        r.add_api_route("/auth/callback", self.callback, methods=["GET"])
        r.add_api_route("/auth/logout", self.logout, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/session/keepalive", self.keepalive, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/search", self.search_get, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route(
            "/search", self.search_post, methods=["POST"], response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES
        )
        r.add_api_route("/c/{raw_id}", self.view, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/c/{raw_id}/live", self.live, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/c/{raw_id}/confirm/{action}", self.confirm, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/c/{raw_id}/actions", self.act, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/c/{raw_id}/erase", self.confirm_erase, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/c/{raw_id}/erase", self.erase, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/erasures/{raw_id}", self.erasure, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/figures", self.figures_page, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/figures.csv", self.figures_csv, methods=["GET"])
        r.add_api_route("/audit", self.audit_page, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/audit.csv", self.audit_csv, methods=["GET"])
        return r

    async def home(self, request: Request) -> Response:
        if who := await self.identity(request):
            return RedirectResponse(self.home_of(who), status_code=303)
        return self.page(
            request,
            "login.html",
            expired=bool(request.query_params.get("expired")),
            refused=request.query_params.get("refused"),
        )

    async def login(self, request: Request) -> Response:
        try:
            url, pending = await self.oidc.authorization_url()
        except Exception as exc:  # provider down or misconfigured: say so, log why
            log.warning("sign-in unavailable", error=type(exc).__name__)
            return self.problem(request, None, "provider-unavailable", 503)
        response = RedirectResponse(url, status_code=303)
        sealed = crypto.seal_field(self.s.secretariat_secret_key, pending, context="staff-login")
        self.set_cookie(response, self.login_cookie, sealed, max_age=LOGIN_SECONDS)
        return response

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        try:
            pending = crypto.open_field(
                self.s.secretariat_secret_key, request.cookies.get(self.login_cookie, ""), context="staff-login"
            )
        except crypto.CannotOpen:
            pending = None
        try:
            if pending is None or not secrets.compare_digest(pending["state"], q.get("state", "")):
                raise Unauthenticated("state mismatch or sign-in cookie missing")
            if q.get("error") or not q.get("code"):
                raise Unauthenticated(f"provider answered {q.get('error', 'no code')[:40]}")
            claims = await self.oidc.sign_in(q["code"], pending)
        except Unauthenticated as exc:
            log.warning("sign-in refused", reason=str(exc))
            await self.console.refused("console", "sign-in", "sign-in", detail=str(exc))
            return self.problem(request, None, "sign-in-refused", 401)
        who = self.oidc.staff(claims)
        if who is None:
            await self.console.refused("console", "sign-in", "no-role", detail=f"subject {claims['sub']}"[:100])
            return self.problem(request, None, "no-role", 403)
        token = secrets.token_urlsafe(32)
        async with self.console.pool.acquire() as conn:  # the database audits the sign-in
            await store.open_session(
                conn,
                self.token_hash("session", token),
                subject=who.subject,
                name=who.name,
                via="console",
                roles=self.oidc.roles(claims),
                departments=who.scope() or [],
            )
        response = RedirectResponse(self.home_of(who), status_code=303)
        response.delete_cookie(self.login_cookie, path="/", secure=self.s.cookie_secure, httponly=True)
        self.set_cookie(response, self.session_cookie, token, max_age=self.s.session_absolute_seconds)
        return response

    async def logout(self, request: Request, csrf: str = Form("")) -> Response:
        who = await self.identity(request)
        if who is not None and not self.csrf_ok(request, csrf):
            return await self.csrf_refused(request, who, "sign-out")
        if who is not None and who.session_hash:
            async with self.console.pool.acquire() as conn:  # the database audits the sign-out
                await store.end_session(conn, who.session_hash)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(self.session_cookie, path="/", secure=self.s.cookie_secure, httponly=True)
        return response

    async def keepalive(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None or not self.csrf_ok(request, request.headers.get("x-csrf-token", "")):
            return Response(status_code=401)
        return Response(status_code=204)

    # --- search -------------------------------------------------------------------------------

    async def search_get(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not who.can_read:
            return RedirectResponse(self.home_of(who), status_code=303)
        q = request.query_params
        c, bad = domain.criteria(
            convocation_id=q.get("convocation_id", ""),
            department=q.get("department", ""),
            date_from=q.get("date_from", ""),
            date_to=q.get("date_to", ""),
            worklist=q.get("worklist", ""),
            days=q.get("days", ""),
        )
        return await self._results(request, who, c, bad)

    async def search_post(
        self,
        request: Request,
        csrf: str = Form(""),
        patient_id: str = Form(""),
        name: str = Form(""),
        birth_date: str = Form(""),
    ) -> Response:
        """Search by who the patient is: a POST, so that the id, the name or the birth date never appears in
        a URL, a log or the history."""
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not self.csrf_ok(request, csrf):
            return await self.csrf_refused(request, who, "search")
        c, bad = domain.criteria(patient_id=patient_id, name=name, birth_date=birth_date)
        return await self._results(request, who, c, bad)

    async def _results(self, request: Request, who: Identity, c: domain.Criteria, bad: list[str]) -> Response:
        rows = None
        refused = False
        if not bad and not c.empty():
            rows = await self.console.search(who, c)
            refused = rows is None
        return await self.staff_page(
            request,
            "search.html",
            who,
            status=400 if bad else 403 if refused else 200,
            criteria=c,
            bad=bad,
            rows=rows,
            refused=refused,
            worklists=domain.WORKLISTS,
            reissue_wait=self.s.reissue_wait_seconds,
        )

    # --- one convocation ----------------------------------------------------------------------

    async def view(self, request: Request, raw_id: str) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        found = await self.console.view(who, self.parse_id(raw_id))
        if found is None:
            return self.problem(request, who, "not-found", 404)
        return await self._convocation(request, who, found, done=request.query_params.get("done"))

    async def _convocation(
        self,
        request: Request,
        who: Identity,
        found,
        *,
        status: int = 200,
        done=None,
        error=None,
        failed_action=None,
        typed_reason="",
    ) -> HTMLResponse:
        return await self.staff_page(
            request,
            "convocation.html",
            who,
            status=status,
            v=found,
            c=found.row,
            done=done,
            error=error,
            failed_action=failed_action,
            typed_reason=typed_reason,
            refresh_seconds=self.s.timeline_refresh_seconds,
            wait_minutes=max(1, self.s.reissue_wait_seconds // 60),
        )

    async def live(self, request: Request, raw_id: str) -> Response:
        """The open timeline's news (status, timeline, actions asked), fetched by the page every few seconds:
        part of the view already audited, so not audited again."""
        who = await self.identity(request, used=False)
        if who is None:
            return Response(status_code=401)
        found = await self.console.view(who, self.parse_id(raw_id), audited=False)
        if found is None:
            return Response(status_code=404)
        return await self.staff_page(request, "_live.html", who, v=found, c=found.row)

    async def confirm(self, request: Request, raw_id: str, action: str) -> Response:
        """The confirmation page of an action that cannot be undone (withdraw): what will happen, the
        reason, and the button that does it."""
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        found = await self.console.view(who, self.parse_id(raw_id))
        if found is None or action not in domain.CONFIRMED_ACTIONS:
            return self.problem(request, who, "not-found", 404)
        if action not in found.available:
            return await self._convocation(
                request, who, found, status=409, error="no-longer-fits", failed_action=action
            )
        return await self.staff_page(
            request, "confirm.html", who, v=found, c=found.row, action=action, error=None, typed_reason=""
        )

    async def act(
        self,
        request: Request,
        raw_id: str,
        csrf: str = Form(""),
        action: str = Form(""),
        reason: str = Form(""),
        mobile: str = Form(""),
        email: str = Form(""),
        confirmed: str = Form(""),
    ) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not self.csrf_ok(request, csrf):
            return await self.csrf_refused(request, who, "action")
        convocation_id = self.parse_id(raw_id)
        if action in domain.CONFIRMED_ACTIONS and confirmed != "yes":
            return RedirectResponse(f"/c/{convocation_id}/confirm/{action}", status_code=303)
        outcome = await self.console.act(who, convocation_id, action, reason, mobile, email)
        if outcome.ok:
            return RedirectResponse(f"/c/{convocation_id}?done={action}", status_code=303)
        if outcome.code == "not-found":
            return self.problem(request, who, "not-found", 404)
        found = await self.console.view(who, convocation_id, audited=False)
        if found is None:
            return self.problem(request, who, "not-found", 404)
        if action in domain.CONFIRMED_ACTIONS and action in found.available:
            return await self.staff_page(
                request,
                "confirm.html",
                who,
                status=400,
                v=found,
                c=found.row,
                action=action,
                error=outcome.code,
                typed_reason=reason,
            )
        return await self._convocation(
            request, who, found, status=400, error=outcome.code, failed_action=action, typed_reason=reason
        )

    # --- erasure on request --------------------------------------------------------------------

    async def confirm_erase(self, request: Request, raw_id: str) -> Response:
        """What an erasure does, the reason, and the button: a page of its own, as it cannot be undone."""
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        found = await self.console.view(who, self.parse_id(raw_id))
        if found is None or not who.can_act:
            return self.problem(request, who, "not-found", 404)
        return await self.staff_page(request, "erase.html", who, v=found, c=found.row, error=None, typed_reason="")

    async def erase(
        self, request: Request, raw_id: str, csrf: str = Form(""), reason: str = Form(""), confirmed: str = Form("")
    ) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not self.csrf_ok(request, csrf):
            return await self.csrf_refused(request, who, "erase")
        convocation_id = self.parse_id(raw_id)
        if confirmed != "yes":
            return RedirectResponse(f"/c/{convocation_id}/erase", status_code=303)
        outcome = await self.console.erase(who, convocation_id, reason)
        if outcome.ok:
            return RedirectResponse(f"/erasures/{outcome.action_id}", status_code=303)
        found = await self.console.view(who, convocation_id, audited=False) if outcome.code != "not-found" else None
        if found is None:
            return self.problem(request, who, "not-found", 404)
        return await self.staff_page(
            request, "erase.html", who, status=400, v=found, c=found.row, error=outcome.code, typed_reason=reason
        )

    async def erasure(self, request: Request, raw_id: str) -> Response:
        """Where an erasure stands: which services confirmed it (the page refreshes itself until all have)."""
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        found = await self.console.erasure(who, self.parse_id(raw_id))
        if found is None:
            return self.problem(request, who, "not-found", 404)
        row, confirmations = found
        return await self.staff_page(
            request,
            "erasure.html",
            who,
            erasure=row,
            confirmations=confirmations,
            waiting=domain.erasure_waiting_for(confirmations),
        )

    # --- the department figures ---------------------------------------------------------------

    def _period(self, request: Request) -> tuple[domain.Period, list[str]]:
        q = request.query_params
        today = datetime.now(domain.ZURICH).date()
        return domain.period(
            date_from=q.get("date_from", ""), date_to=q.get("date_to", ""), days=q.get("days", ""), today=today
        )

    async def figures_page(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not who.can_count:
            return self.problem(request, who, "not-found", 404)
        period, bad = self._period(request)
        figures = await self.console.figures(who, period)
        return await self.staff_page(
            request,
            "figures.html",
            who,
            status=400 if bad else 200,
            period=period,
            bad=bad,
            figures=figures or [],
            csv_query=urlencode({"date_from": period.start, "date_to": period.end, "days": period.days}),
        )

    async def figures_csv(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        period, bad = self._period(request)
        figures = await self.console.figures(who, period) if not bad else None
        if figures is None:
            return self.problem(
                request, who, "not-found" if not who.can_count else "bad-request", 404 if not who.can_count else 400
            )
        return Response(
            self.console.figures_csv(figures, period),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="figures-{period.start}-{period.end}.csv"'},
        )

    # --- the staff audit ----------------------------------------------------------------------

    @staticmethod
    def _audit_filter(request: Request) -> tuple[AuditFilter, list[str]]:
        q = request.query_params
        bad: list[str] = []
        parse = domain.field_parser(bad)
        f = AuditFilter(
            person=(q.get("person") or "").strip()[:200] or None,
            action=(q.get("action") or "").strip()[:40] or None,
            convocation_id=parse("convocation_id", q.get("convocation_id"), uuid.UUID),
            date_from=parse("date_from", q.get("date_from"), domain.parse_day),
            date_to=parse("date_to", q.get("date_to"), domain.parse_day),
        )
        return f, bad

    async def audit_page(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not who.can_audit:
            return self.problem(request, who, "not-found", 404)
        f, bad = self._audit_filter(request)
        before = request.query_params.get("before", "")
        rows, more = await self.console.audit_page(
            who, f, int(before) if before.isdigit() else None, self.s.audit_page_rows
        )
        filters = {k: v for k, v in request.query_params.items() if k not in ("before", "lang") and v}
        return await self.staff_page(
            request,
            "audit.html",
            who,
            status=400 if bad else 200,
            rows=rows,
            more=more,
            f=f,
            bad=bad,
            filters=urlencode(filters),
            actions=AUDIT_ACTIONS,
        )

    async def audit_csv(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        f, bad = self._audit_filter(request)
        text = await self.console.audit_csv(who, f) if not bad else None
        if text is None:
            return self.problem(
                request, who, "not-found" if not who.can_audit else "bad-request", 404 if not who.can_audit else 400
            )
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="staff-audit-{stamp}.csv"'},
        )


# The audit's actions, as the filter offers them.
AUDIT_ACTIONS = (
    "sign-in",
    "sign-out",
    "api-token",
    "search",
    "view",
    "action",
    "figures",
    "audit-view",
    "audit-export",
)
