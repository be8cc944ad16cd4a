"""Rendering the patient's pages: one Jinja2 environment per language, gettext texts, CSRF cookie."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from access_portal.access import PaperTold
from access_portal.i18n import CATALOGS, LANGUAGES, N_, gettext
from access_portal.records import Message
from access_portal.sessions import Sessions
from access_portal.settings import PortalSettings
from shared.i18n import format_appointment, format_long_date, format_time, tel_link
from shared.web import Csrf, chosen_language, remember_language

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Every state page: (title, explanation). The explanation may use the page's values.
STATES: dict[str, tuple[str, str]] = {
    "unknown": (
        N_("Link not recognised"),
        N_(
            "This link does not lead to any message. Check that you copied the whole link from the e-mail, or "
            "contact the secretariat that sent you the appointment."
        ),
    ),
    "expired": (
        N_("This message has expired"),
        N_(
            "Messages are kept until shortly after the appointment and then destroyed. Contact the secretariat if "
            "you need a copy of your convocation."
        ),
    ),
    "cancelled": (
        N_("This appointment was cancelled"),
        N_("The hospital cancelled this convocation. The secretariat can tell you more."),
    ),
    "withdrawn": (
        N_("This convocation was withdrawn"),
        N_("The department's secretariat withdrew this convocation. Call the secretariat to know more."),
    ),
    "superseded": (
        N_("This message was replaced"),
        N_("A newer message was sent to you for this appointment. Open the link in the most recent e-mail."),
    ),
    "code_expired": (
        N_("Your code has expired"),
        N_("Codes are valid for %(minutes)s minutes and can be used once. Ask for a new code."),
    ),
    "wait": (
        N_("Please wait before trying again"),
        N_("For your security, no new code can be sent or checked before %(until)s (Swiss time)."),
    ),
    "sms_failed": (
        N_("The SMS could not be delivered"),
        N_(
            "We could not deliver the code to your phone. Check that it is switched on and can receive SMS, then "
            "ask for a new code, or call the secretariat."
        ),
    ),
    "link_incomplete": (
        N_("Open the link from your e-mail again"),
        N_(
            "The link is incomplete or damaged, so your document cannot be opened. Click the link in the e-mail again "
            "(or copy all of it into the address bar)."
        ),
    ),
    "session_expired": (
        N_("Your session has ended"),
        N_(
            "For your security, sessions end after %(minutes)s minutes without activity. Open the link from your "
            "e-mail again and ask for a new code."
        ),
    ),
    # The key store did not answer (a letter sealed under a period key cannot be opened without it).
    "try_later": (
        N_("Your convocation cannot be opened right now"),
        N_(
            "The problem is on our side and temporary. Try again in a few minutes; if it still does not open, call "
            "the secretariat."
        ),
    ),
    "bad_request": (N_("This form has expired"), N_("Go back to the link in your e-mail and try again.")),
    # A code asked for or typed without the proof that the whole link is at hand (the end of the link,
    # which only the page's JavaScript reads): refused, and nothing counted.
    "no_proof": (
        N_("Open the whole link from your e-mail"),
        N_(
            "To send or check a code, this page must read the end of the link from your e-mail (after the # "
            "sign), which needs JavaScript. Open the link from the e-mail again, in a browser with JavaScript "
            "turned on. Nothing was sent and nothing was counted against you."
        ),
    ),
    # The patient's own help pages: what to do and whom to call, from the letter's secretariat.
    "not_my_number": (
        N_("This is not your number?"),
        N_(
            "Do not ask for a code: it would go to this number. Call the secretariat at %(phone)s; they will check "
            "the number the hospital has for you and can send your convocation another way."
        ),
    ),
    "no_phone": (
        N_("I have no mobile phone"),
        N_(
            "You can still receive your convocation. Call the secretariat that sent it to you: they can send it "
            "to you by post, or to the mobile phone of someone you trust."
        ),
    ),
    "signed_out": (
        N_("You are signed out"),
        N_(
            "This page no longer shows your convocation. To open it again, click the link in the e-mail and ask "
            "for a new code."
        ),
    ),
}
# What an unknown or cut link offers besides its explanation: the way forward, whoever sent the link.
UNKNOWN_WAY_FORWARD = N_(
    "If you no longer have the e-mail, call the hospital at %(phone)s: they will put you through to the "
    "secretariat that sent you the appointment."
)
# What the document page says about the request that led to it (access.ToDocument.notice).
NOTICES = {
    "post_after_download": N_(
        "You have already downloaded this convocation, so it is no longer sent by post. If you need it on paper "
        "all the same, call the secretariat."
    ),
}
# The letter goes on paper (access.PaperTold): (who asked, posted yet) -> the sentence every page shows.
PAPER = {
    ("patient", False): N_("On %(date)s you asked for this convocation by post: the hospital will send it to you."),
    ("patient", True): N_("This convocation was sent to you by post on %(date)s, at your request."),
    ("secretariat", False): N_(
        "On %(date)s the secretariat asked for this convocation to be sent to you by post: the hospital will send it "
        "to you."
    ),
    ("secretariat", True): N_("This convocation was sent to you by post on %(date)s, at the secretariat's request."),
    ("hospital", False): N_("On %(date)s the hospital decided to send you this convocation by post."),
    ("hospital", True): N_("This convocation was sent to you by post on %(date)s."),
}
# Language names as their speakers write them, for the language switch.
LANGUAGE_NAMES = {"fr": "Français", "de": "Deutsch", "it": "Italiano", "en": "English"}


def paper_sentence(paper: PaperTold | None, language: str) -> str | None:
    """What every page says once the letter goes on paper (in ``language``), or None."""
    if paper is None:
        return None
    day = format_long_date(paper.posted_at or paper.requested_at, language)
    return gettext(language, PAPER[paper.by, paper.posted_at is not None], date=day)


def switch_query(request: Request) -> str:
    """What the language switch keeps of the address besides the page: what the page tells (``?told=``), so
    that the same outcome is said in the new language."""
    told = request.query_params.get("told", "")
    return f"told={told}&" if told.isascii() and told.replace("_", "").isalpha() else ""


def _environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    env.filters["tel"] = tel_link  # phone numbers are links a phone dials
    return CATALOGS.install(env, language)


class Pages:
    def __init__(self, settings: PortalSettings, csrf: Csrf, sessions: Sessions) -> None:
        self.settings, self.csrf, self.sessions = settings, csrf, sessions
        self.envs = {language: _environment(language) for language in LANGUAGES}

    def render(
        self,
        request: Request,
        template: str,
        language: str,
        *,
        status: int = 200,
        message: Message | None = None,
        error: dict | None = None,
        after_code: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """One page in the patient's chosen language (else the letter's). ``error``: {"text", "field",
        "state"} for the GOV.UK error pattern (summary, message by the field, "Error:" title)."""
        cookie = self.csrf.cookie(request)
        token = self.csrf.token(request, message.message_id if message else None, cookie=cookie)
        context.setdefault("typed", None)  # what the patient typed, shown again with an error
        context.setdefault("back", None)  # the guide's way back to the letter's page
        paper = context.pop("paper", None)
        # A link that leads to no message answers in the browser's language (it has no letter's language).
        language = chosen_language(request, accept_language=message is None) or (
            language if language in self.envs else "fr"
        )
        message_id = str(message.message_id) if message else None
        # Before the code, whoever holds the link sees only the hospital's public contact.
        phone, email = message.contact(after_code=after_code) if message else (None, None)
        # The switch reloads the page the patient is on (every page is a GET: a POST answers with a redirect).
        here = request.url.path
        html = (
            self.envs[language]
            .get_template(template)
            .render(
                lang=language,
                languages=LANGUAGE_NAMES,
                here=here,
                csrf=token,
                hospital=self.settings.hospital_name,
                hospital_phone=self.settings.hospital_phone,
                code_minutes=self.settings.otp_ttl_seconds // 60,
                session_minutes=self.settings.session_idle_seconds // 60,
                secretariat_phone=phone,
                secretariat_email=email,
                message_id=message_id,
                error=error,
                # Until when the link opens the letter (the link page and the document page say so).
                open_until=format_appointment(message.expires_at, language) if message else None,
                paper_told=paper_sentence(paper, language),
                switch_query=switch_query(request),
                **context,
            )
        )
        response = HTMLResponse(html, status_code=status)
        if self.csrf.cookie_name and request.cookies.get(self.csrf.cookie_name) != cookie:
            self.sessions.set_cookie(response, self.csrf.cookie_name, cookie)
        # Remembered for this message's pages only: another letter opens in its own language.
        remember_language(
            request, response, secure=self.settings.cookie_secure, path=f"/m/{message_id}" if message_id else "/"
        )
        return response

    def state(
        self,
        request: Request,
        state: str,
        language: str = "fr",
        *,
        status: int,
        message: Message | None = None,
        paper: PaperTold | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """A state page; ``paper``: the letter goes on paper (said as on every page), ``values``: the
        explanation's."""
        title, explanation = STATES[state]
        if "phone" in values:
            values["phone"] = tel_link(values["phone"])
        if state == "unknown":
            values["way_forward"] = UNKNOWN_WAY_FORWARD
        values.setdefault(
            "minutes",
            (self.settings.session_idle_seconds if state == "session_expired" else self.settings.otp_ttl_seconds) // 60,
        )
        return self.render(
            request,
            "state.html",
            language,
            status=status,
            message=message,
            state=state,
            title=title,
            explanation=explanation,
            values=values,
            paper=paper,
        )

    def wait(self, request: Request, message: Message, until: datetime, *, paper: PaperTold | None) -> HTMLResponse:
        now = datetime.now(timezone.utc)
        language = chosen_language(request) or message.language
        shown = (
            format_time(until, language) if until - now < timedelta(hours=20) else format_appointment(until, language)
        )
        response = self.state(request, "wait", message.language, status=429, message=message, until=shown, paper=paper)
        response.headers["Retry-After"] = str(max(1, int((until - now).total_seconds())))
        return response
