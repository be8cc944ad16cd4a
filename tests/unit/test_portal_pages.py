"""The portal's pages say the time limits the settings give, never fixed text (WCAG 2.2.1)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from starlette.requests import Request

from access_portal.pages import Pages
from access_portal.records import Message
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared.web import Csrf

MESSAGE = Message(
    **{
        **{f.name: None for f in dataclasses.fields(Message)},
        "message_id": uuid.uuid4(),
        "secretariat_phone": "+41 22 372 40 00",
        "language": "en",
    }
)


def pages(**settings) -> Pages:
    s = PortalSettings(environment="development", **settings)
    sessions = Sessions(s)
    return Pages(s, Csrf(s.portal_secret_key, session_cookie=sessions.cookie_name, cookie_name="csrf"), sessions)


def get(path: str, query: bytes = b"") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "headers": [], "query_string": query})


@pytest.mark.parametrize("ttl, idle", [(420, 1200), (600, 900)])
def test_code_and_session_lifetimes_come_from_the_settings(ttl, idle):
    p = pages(otp_ttl_seconds=ttl, session_idle_seconds=idle)
    # The code page counts from the code's own expiry: tests/e2e/test_portal_code_page.py.
    expired = p.state(get("/m/x/document"), "session_expired", "en", status=401, message=MESSAGE).body.decode()
    assert f"after {idle // 60} minutes without activity" in expired
    guide = p.render(get("/guide"), "guide.html", "en", videos=False).body.decode()
    assert f"valid for {ttl // 60} minutes" in guide


@pytest.mark.parametrize("lang, title", [("fr", "Erreur :"), ("de", "Fehler:"), ("it", "Errore:"), ("en", "Error:")])
def test_a_page_with_an_error_says_so_first_in_its_title_in_its_language(lang, title):
    error = {"state": "number_invalid", "field": "phone", "text": "x"}
    html = (
        pages()
        .render(
            get("/m/x", f"lang={lang}".encode()),
            "message.html",
            "fr",
            status=400,
            message=MESSAGE,
            bound_hint=None,
            hint=None,
            error=error,
        )
        .body.decode()
    )
    assert f"<title>{title} " in html and f'<html lang="{lang}">' in html
