"""The portal's pages say the time limits the settings give, never fixed text (WCAG 2.2.1)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone

import pytest
from starlette.requests import Request

from access_portal.access import PaperTold, paper_told
from access_portal.pages import Pages
from access_portal.records import Message
from access_portal.routes import BACK_TO_LETTER
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared.web import Csrf

MESSAGE = Message(
    **{
        **{f.name: None for f in dataclasses.fields(Message)},
        "message_id": uuid.uuid4(),
        "secretariat_phone": "+41 22 372 40 00",
        "language": "en",
        "expires_at": datetime(2026, 12, 21, 17, 30, tzinfo=timezone.utc),
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


def with_headers(path: str, method: str = "GET", **headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    path, _, query = path.partition("?")
    return Request({"type": "http", "method": method, "path": path, "headers": raw, "query_string": query.encode()})


@pytest.mark.parametrize("accept, lang", [("de-CH,de;q=0.9", "de"), ("it", "it"), ("en-GB", "en"), ("ja", "fr")])
def test_a_link_that_leads_nowhere_answers_in_the_browsers_language_with_a_number_to_call(accept, lang):
    html = pages().state(with_headers("/m/x", accept_language=accept), "unknown", status=404).body.decode()
    assert f'<html lang="{lang}">' in html
    assert 'href="tel:+41223723311"' in html  # the way forward, in main as well as the footer
    # A letter's own page keeps the letter's language whatever the browser says.
    letter = pages().state(with_headers("/m/x", accept_language=accept), "expired", "it", status=410, message=MESSAGE)
    assert '<html lang="it">' in letter.body.decode()


# What the code page is rendered with (routes.Portal.code_page): the number's hint and the code's clock.
CODE = {"hint": "x", "too_early": None, "works_until": "10:40", "seconds_left": 600, "time_left": "10:00"}


@pytest.mark.parametrize(
    "by, posted, words",
    [
        ("patient", False, "you asked for this convocation by post"),
        ("patient", True, "at your request"),
        ("secretariat", False, "the secretariat asked"),
        ("secretariat", True, "at the secretariat's request"),
        ("hospital", True, "was sent to you by post on 3 December 2026."),
    ],
)
def test_every_page_says_the_letter_goes_by_post_and_at_whose_request(by, posted, words):
    asked, sent = datetime(2026, 12, 1, 9, tzinfo=timezone.utc), datetime(2026, 12, 3, 9, tzinfo=timezone.utc)
    paper = PaperTold(by, asked, sent if posted else None)
    for template, context in (("message.html", {"bound_hint": None, "hint": None}), ("code.html", CODE)):
        html = pages().render(get("/m/x"), template, "en", message=MESSAGE, paper=paper, **context).body.decode()
        assert 'data-state="paper_told"' in html and words in html.replace("&#39;", "'")
        assert ("3 December 2026" if posted else "1 December 2026") in html


def test_who_asked_for_paper_comes_from_the_portal_or_the_issuers_report():
    asked = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    row = {"requested_at": asked, "posted_at": None, "reason": "secretariat"}
    assert paper_told(MESSAGE, None) is None
    assert paper_told(MESSAGE, {**row, "requested_at": None}) is None  # cancelled: by e-mail after all
    assert paper_told(MESSAGE, row) == PaperTold("secretariat", asked, None)
    assert paper_told(MESSAGE, {**row, "reason": "not-downloaded"}).by == "hospital"
    mine = dataclasses.replace(MESSAGE, postal_requested_at=asked)
    assert paper_told(mine, None) == PaperTold("patient", asked, None)
    assert paper_told(mine, {**row, "reason": "patient-request", "posted_at": asked}).posted_at == asked


@pytest.mark.parametrize(
    "query, kept",
    [("?told=wrong_code", "told=wrong_code&amp;"), ("", ""), ("?told=%22%3E%3Cscript%3E", ""), ("?lang=it", "")],
)
def test_the_language_switch_keeps_what_the_page_tells(query, kept):
    """A page that tells what a form's POST was answered (?told=, post/redirect/get) says it again in the new
    language; nothing else of the address is carried over."""
    mid = str(MESSAGE.message_id)
    html = pages().render(with_headers(f"/m/{mid}/code{query}"), "code.html", "en", message=MESSAGE, **CODE)
    body = html.body.decode()
    assert f'href="/m/{mid}/code?{kept}lang=de"' in body
    assert "data-place" not in body  # no page is the answer of a POST any more: nothing to put in the address bar


@pytest.mark.parametrize(
    "back, kept",
    [
        (f"/m/{MESSAGE.message_id}/document", True),
        (f"/m/{MESSAGE.message_id}", True),
        ("//evil.example/m/x", False),
        ("https://evil.example/", False),
        (f"/m/{MESSAGE.message_id}/../../elsewhere", False),
    ],
)
def test_the_guide_leads_back_only_to_a_page_of_a_letter(back, kept):
    assert bool(BACK_TO_LETTER.fullmatch(back)) is kept
