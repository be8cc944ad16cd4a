"""One way for each concern of the server-rendered pages (the patients' portal, the secretariat's console):
security headers, error pages, the language a person chose, CSRF tokens, ids read from paths."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from shared import crypto
from shared.i18n import LANGUAGES

OPERATOR_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LANGUAGE_COOKIE = "lang"


def security_headers(
    *, form_action: str = "'self'", connect_src: str | None = None, media_src: str | None = None
) -> dict[str, str]:
    """OWASP ASVS V14.4 / 5.0 V3: no inline script, no framing, no referrer, HSTS.

    ``form_action``: where forms may post (the console's sign-in goes on to the identity provider);
    ``connect_src``: where page scripts may fetch (the console's session keep-alive);
    ``media_src``: where video and captions may load from (the portal's video guide)."""
    connect = f" connect-src {connect_src};" if connect_src else ""
    connect += f" media-src {media_src};" if media_src else ""
    return {
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        f"{connect} form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


def serve_pages(
    app: FastAPI,
    *,
    headers: dict[str, str],
    error_page: Callable[[Request, int], Response],
    plain_paths: Iterable[str] = (),
) -> None:
    """Every response gets ``headers`` and, but for static files, ``Cache-Control: no-store`` (every page
    carries data or state: never cached, never stored). A request refused by the framework (unknown route,
    wrong method, invalid form) gets ``error_page(request, status)`` in the person's terms, never a bare
    JSON error; the operators' endpoints and the paths under ``plain_paths`` (an API) keep FastAPI's."""
    prefixes = tuple(plain_paths)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path in OPERATOR_PATHS or request.url.path.startswith(prefixes or ("\0",)):
            return await http_exception_handler(request, exc)
        response = error_page(request, exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return error_page(request, 400)

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(headers)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def chosen_language(request: Request, *, accept_language: bool = False) -> str | None:
    """The language the person picked (``?lang=``, or the cookie that choice left) or, with
    ``accept_language``, the first of their browser's languages that the pages speak; else None."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if candidate in LANGUAGES:
            return candidate
    if accept_language:
        for part in request.headers.get("accept-language", "").split(","):
            code = part.split(";")[0].strip()[:2].lower()
            if code in LANGUAGES:
                return code
    return None


def remember_language(
    request: Request, response: Response, *, secure: bool, path: str = "/", max_age: int | None = None
) -> None:
    """A language picked with ``?lang=`` is kept in a cookie for the next pages (under ``path``)."""
    if (picked := request.query_params.get("lang")) in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, str(picked), path=path, max_age=max_age, secure=secure, httponly=True, samesite="lax"
        )


class Csrf:
    """CSRF tokens as keyed hashes of what the browser holds, with no server state: a form's token is valid
    only with the cookies it was made for (the session's, and a random CSRF cookie where the pages have
    one before any session), and for the thing it was made for (``bound_to``: a message, or nothing).
    A token made under an older key of the ring still checks, so a form served before a key rotation posts."""

    def __init__(self, key: crypto.Keys, *, session_cookie: str, cookie_name: str | None = None) -> None:
        self._key, self._session_cookie, self.cookie_name = key, session_cookie, cookie_name

    def _material(self, request: Request, cookie: str, bound_to: object) -> str:
        return f"{cookie}|{bound_to or ''}|{request.cookies.get(self._session_cookie, '')}"

    def cookie(self, request: Request) -> str:
        """The random CSRF cookie's value: the browser's, or a new one to set (``cookie_name`` only)."""
        return request.cookies.get(self.cookie_name or "") or secrets.token_urlsafe(24)

    def token(self, request: Request, bound_to: object = None, *, cookie: str = "") -> str:
        """The form token; '' when the browser holds nothing to bind it to (no session, no CSRF cookie)."""
        if not cookie and not request.cookies.get(self._session_cookie):
            return ""
        return crypto.keyed_hash(self._key, "csrf", self._material(request, cookie, bound_to))

    def ok(self, request: Request, token: str, bound_to: object = None) -> bool:
        cookie = request.cookies.get(self.cookie_name) if self.cookie_name else ""
        if cookie is None or not token or not (cookie or request.cookies.get(self._session_cookie)):
            return False
        return crypto.hash_matches(self._key, "csrf", self._material(request, cookie, bound_to), token)


def parse_uuid(raw: str) -> uuid.UUID | None:
    """An id taken from a URL path, or None when it is not one (the caller answers 404, never 422)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
