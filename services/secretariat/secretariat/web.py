"""The console's pages for staff: sign-in through the hospital's OpenID provider, search, worklists,
one convocation's timeline and its actions, the staff audit. Server-rendered; every POST checks CSRF."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from secretariat import domain, store
from secretariat.auth import Identity, Oidc, Unauthenticated, staff_identity
from secretariat.console import Console
from secretariat.metrics import STAFF_REFUSALS
from secretariat.settings import SecretariatSettings
from shared import crypto
from shared.i18n import Catalogs
from shared.logs import get_logger
from shared.web import Csrf, chosen_language, parse_uuid, remember_language

LOCALE = Path(__file__).parent / "locale"
MAX_FORM_BYTES = 16 * 1024
LOGIN_SECONDS = 600
log = get_logger(__name__)


class Pages:
    def __init__(self, settings: SecretariatSettings, console: Console, oidc: Oidc) -> None:
        self.s, self.console, self.oidc = settings, console, oidc
        self.env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                               autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                               extensions=["jinja2.ext.i18n"])
        self.env.filters["localtime"] = lambda at: at.astimezone(domain.ZURICH).strftime("%d.%m.%Y %H:%M")
        self.catalogs = Catalogs(LOCALE)
        prefix = "__Host-" if settings.cookie_secure else ""
        self.session_cookie, self.login_cookie = f"{prefix}staff", f"{prefix}staff-login"
        self.csrf = Csrf(settings.secretariat_secret_key, session_cookie=self.session_cookie)

    # --- helpers ------------------------------------------------------------------------------

    def language(self, request: Request) -> str:
        return chosen_language(request, accept_language=True) or "fr"

    def token_hash(self, purpose: str, token: str) -> str:
        return crypto.keyed_hash(self.s.secretariat_secret_key, purpose, token)

    def csrf_for(self, request: Request) -> str:
        return self.csrf.token(request)  # '' without a session

    def csrf_ok(self, request: Request, sent: str) -> bool:
        return self.csrf.ok(request, sent)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        # Lax, not Strict: the provider's redirect back to /auth/callback is a cross-site navigation.
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.s.cookie_secure, httponly=True,
                            samesite="lax")

    def page(self, request: Request, template: str, who: Identity | None = None, *, status: int = 200,
             **context) -> HTMLResponse:
        lang = self.language(request)
        env = self.env.overlay()
        self.catalogs.install(env, lang)
        html = env.get_template(template).render(
            lang=lang, who=who, csrf=self.csrf_for(request) if who else "", path=request.url.path,
            idle_seconds=self.s.session_idle_seconds, warning_seconds=self.s.session_warning_seconds,
            now=datetime.now(timezone.utc), **context)
        response = HTMLResponse(html, status_code=status)
        remember_language(request, response, secure=self.s.cookie_secure, max_age=365 * 86400)
        return response

    def problem(self, request: Request, who: Identity | None, state: str, status: int) -> HTMLResponse:
        return self.page(request, "problem.html", who, status=status, state=state)

    async def identity(self, request: Request) -> Identity | None:
        token = request.cookies.get(self.session_cookie)
        if not token:
            return None
        async with self.console.pool.acquire() as conn:
            row = await store.touch_session(conn, self.token_hash("session", token), self.s.session_idle_seconds,
                                            self.s.session_absolute_seconds)
        if row is None:
            return None
        return staff_identity(row["subject"], row["name"], list(row["roles"]), list(row["departments"]))

    def to_login(self, request: Request) -> Response:
        return RedirectResponse("/?expired=1" if request.cookies.get(self.session_cookie) else "/", status_code=303)

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
        r.add_api_route("/search", self.search_post, methods=["POST"], response_class=HTMLResponse, max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/c/{raw_id}", self.view, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/c/{raw_id}/actions", self.act, methods=["POST"], max_body_size=MAX_FORM_BYTES)
        r.add_api_route("/audit", self.audit_page, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/audit.csv", self.audit_csv, methods=["GET"])
        return r

    async def home(self, request: Request) -> Response:
        if await self.identity(request):
            return RedirectResponse("/search", status_code=303)
        return self.page(request, "login.html", expired=bool(request.query_params.get("expired")),
                         refused=request.query_params.get("refused"))

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
            pending = crypto.open_field(self.s.secretariat_secret_key, request.cookies.get(self.login_cookie, ""),
                                        context="staff-login")
        except crypto.CannotOpen:
            pending = None
        try:
            if pending is None or not secrets.compare_digest(pending["state"], q.get("state", "")):
                raise Unauthenticated("state mismatch or sign-in cookie missing")
            if q.get("error") or not q.get("code"):
                raise Unauthenticated(f"provider answered {q.get('error', 'no code')[:40]}")
            claims = await self.oidc.sign_in(q["code"], pending)
        except Unauthenticated as exc:
            STAFF_REFUSALS.labels("sign-in").inc()
            log.warning("sign-in refused", reason=str(exc))
            return self.problem(request, None, "sign-in-refused", 401)
        who = self.oidc.staff(claims)
        if who is None:
            STAFF_REFUSALS.labels("no-role").inc()
            return self.problem(request, None, "no-role", 403)
        token = secrets.token_urlsafe(32)
        roles = ["supervisor"] if who.departments is None else ["secretary"]
        async with self.console.pool.acquire() as conn, conn.transaction():
            await store.insert_session(conn, self.token_hash("session", token), subject=who.subject, name=who.name,
                                       roles=roles, departments=who.scope() or [])
            await self.console.audit(conn, who, "sign-in", "ok")
        response = RedirectResponse("/search", status_code=303)
        response.delete_cookie(self.login_cookie, path="/", secure=self.s.cookie_secure, httponly=True)
        self.set_cookie(response, self.session_cookie, token, max_age=self.s.session_absolute_seconds)
        return response

    async def logout(self, request: Request, csrf: str = Form("")) -> Response:
        who = await self.identity(request)
        if who is not None and not self.csrf_ok(request, csrf):
            return self.problem(request, who, "bad-request", 403)
        token = request.cookies.get(self.session_cookie)
        if token:
            async with self.console.pool.acquire() as conn:
                await store.end_session(conn, self.token_hash("session", token))
                if who:
                    await self.console.audit(conn, who, "sign-out", "ok")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(self.session_cookie, path="/", secure=self.s.cookie_secure, httponly=True)
        return response

    async def keepalive(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None or not self.csrf_ok(request, request.headers.get("x-csrf-token", "")):
            return Response(status_code=401)
        return Response(status_code=204)

    async def search_get(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        q = request.query_params
        c, bad = domain.criteria(convocation_id=q.get("convocation_id", ""), department=q.get("department", ""),
                                 date_from=q.get("date_from", ""), date_to=q.get("date_to", ""),
                                 worklist=q.get("worklist", ""), days=q.get("days", ""))
        return await self._results(request, who, c, bad)

    async def search_post(self, request: Request, csrf: str = Form(""), patient_id: str = Form("")) -> Response:
        """Search by patient id: a POST, so that the id never appears in a URL, a log or the history."""
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not self.csrf_ok(request, csrf):
            return self.problem(request, who, "bad-request", 403)
        c, bad = domain.criteria(patient_id=patient_id)
        return await self._results(request, who, c, bad)

    async def _results(self, request: Request, who: Identity, c: domain.Criteria, bad: list[str]) -> Response:
        rows = None
        if not bad and not c.empty():
            rows = await self.console.search(who, c)
        return self.page(request, "search.html", who, status=400 if bad else 200, criteria=c, bad=bad, rows=rows,
                         worklists=domain.WORKLISTS)

    async def view(self, request: Request, raw_id: str) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        found = await self.console.view(who, self.parse_id(raw_id))
        if found is None:
            return self.problem(request, who, "not-found", 404)
        row, timeline, actions = found
        return self.page(request, "convocation.html", who, c=row, timeline=timeline, actions=actions,
                         available=self.available(who, row, actions), done=request.query_params.get("done"),
                         error=None)

    @staticmethod
    def available(who: Identity, row, actions) -> list[str]:
        now = datetime.now(timezone.utc)
        return [a for a in domain.ACTIONS if who.can_act and domain.action_refusal(a, row, now, actions) is None]

    async def act(self, request: Request, raw_id: str, csrf: str = Form(""), action: str = Form(""),
                  reason: str = Form(""), mobile: str = Form(""), email: str = Form("")) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not self.csrf_ok(request, csrf):
            STAFF_REFUSALS.labels("csrf").inc()
            return self.problem(request, who, "bad-request", 403)
        convocation_id = self.parse_id(raw_id)
        outcome = await self.console.act(who, convocation_id, action, reason, mobile, email)
        if outcome.ok:
            return RedirectResponse(f"/c/{convocation_id}?done={action}", status_code=303)
        if outcome.code == "not-found":
            return self.problem(request, who, "not-found", 404)
        found = await self.console.view(who, convocation_id)
        row, timeline, actions = found
        return self.page(request, "convocation.html", who, status=400, c=row, timeline=timeline, actions=actions,
                         available=self.available(who, row, actions), done=None, error=outcome.code,
                         failed_action=action, typed_reason=reason)

    async def audit_page(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        if not who.can_audit:
            return self.problem(request, who, "not-found", 404)
        async with self.console.pool.acquire() as conn:
            rows = await store.latest_audit_rows(conn, 200)
            await self.console.audit(conn, who, "audit-view", "ok")
        return self.page(request, "audit.html", who, rows=rows)

    async def audit_csv(self, request: Request) -> Response:
        who = await self.identity(request)
        if who is None:
            return self.to_login(request)
        text = await self.console.audit_csv(who)
        if text is None:
            return self.problem(request, who, "not-found", 404)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="staff-audit-{stamp}.csv"'})
