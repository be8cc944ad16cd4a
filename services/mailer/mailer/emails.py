"""Render the e-mails to a patient (the secure link, and notices about it) in the patient's language.

The e-mail holds no medical content (no department, date, doctor or diagnosis): ``render_email``
is not even given any, so no template change can leak it. Wording lives in Jinja2 templates
(``templates/``) with English msgids, translated through gettext catalogs in ``locale/``.

The catalogs are loaded with the shared helper (``shared/i18n.py``), which says how to update them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.i18n import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    Catalogs,
    format_appointment,
    format_long_date,
    normalize_language,
    tel_link,
)

PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
LOCALE_DIR: Final = PACKAGE_DIR / "locale"
CATALOGS: Final = Catalogs(LOCALE_DIR)
SUPPORTED_LANGUAGES: Final = LANGUAGES
__all__ = [
    "DEFAULT_LANGUAGE",
    "SUPPORTED_LANGUAGES",
    "RenderedEmail",
    "normalize_language",
    "render_email",
    "render_notice",
]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """The three parts the mailer puts into a multipart/alternative message."""

    subject: str
    text: str
    html: str


@functools.lru_cache(maxsize=len(SUPPORTED_LANGUAGES))
def environment(language: str) -> Environment:
    """The Jinja2 environment for one supported language, built once and reused."""
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; normalize it first")
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        # Escape in .html only: the .txt part must show "Müller & Fils" as written.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["tel"] = tel_link  # in the HTML part, a phone number is a link a phone dials
    return CATALOGS.install(env, language)


def render_email(
    *,
    language: str,
    patient_name: str,
    link: str,
    hospital_name: str,
    contact_phone: str | None = None,
    contact_email: str | None = None,
    replaces_date: datetime | None = None,
    open_until: datetime | None = None,
    replaced_because: Literal["changed", "sent-again"] = "changed",
) -> RenderedEmail:
    """Render subject, plain text and HTML of the link e-mail.

    ``contact_*`` is the hospital's public contact (never the department's own, which would tell
    who opens the e-mail what the appointment is about); ``replaces_date`` is when the e-mail this
    one replaces was sent and ``replaced_because`` why (the hospital changed the letter, or the secretariat
    had it sent again); ``open_until``, until when the link opens the message (its expiry). An unsupported ``language`` falls back to French (see
    :func:`normalize_language`). Raises ``ValueError`` when ``link`` is not an absolute http(s) URL
    without spaces, so a ``javascript:`` link can never end up behind the button and the bare URL
    is copy-pastable.
    """
    url = urlsplit(link)
    if url.scheme not in ("https", "http") or not url.netloc or any(c.isspace() for c in link):
        raise ValueError("link must be an absolute http(s) URL without spaces")
    lang = normalize_language(language)
    context = _common_context(
        lang, patient_name, hospital_name, url.hostname or url.netloc, contact_phone, contact_email
    )
    context.update(
        link=link,
        replaces_date=_date(replaces_date, lang) if replaces_date else None,
        replaced_because=replaced_because,
        # Day and time, as the portal's pages write them: "Montag, 21. Dezember 2026, 09:30".
        open_until=format_appointment(open_until, lang) if open_until else None,
        # The portal's guide, in the patient's language (the link's origin: no other address to configure).
        guide=f"{url.scheme}://{url.netloc}/guide?lang={lang}",
    )
    return _render(lang, "link", context)


def render_notice(
    *,
    kind: Literal["cancelled", "withdrawn", "reminder"],
    language: str,
    patient_name: str,
    hospital_name: str,
    portal_host: str,
    sent_at: datetime,
    contact_phone: str | None = None,
    contact_email: str | None = None,
) -> RenderedEmail:
    """A notice about the e-mail sent at ``sent_at``: the hospital cancelled the convocation, the secretariat
    withdrew it, or it is still unopened. Notices carry no link: they point to that e-mail, so a forwarded
    notice opens nothing."""
    lang = normalize_language(language)
    context = _common_context(lang, patient_name, hospital_name, portal_host, contact_phone, contact_email)
    context.update(kind=kind, sent_date=_date(sent_at, lang))
    return _render(lang, "notice", context)


def _common_context(
    lang: str,
    patient_name: str,
    hospital_name: str,
    portal_host: str,
    contact_phone: str | None,
    contact_email: str | None,
) -> dict:
    # Names come from records that may hold stray line breaks; keep each on one line so a
    # greeting cannot turn into extra paragraphs of the text part.
    patient_name, hospital_name = " ".join(patient_name.split()), " ".join(hospital_name.split())
    if not patient_name or not hospital_name:
        raise ValueError("patient_name and hospital_name must not be blank")
    return {
        "language": lang,
        "patient_name": patient_name,
        "hospital_name": hospital_name,
        "portal_host": portal_host,
        # Empty strings count as absent, so the template never prints an empty contact.
        "contact_phone": contact_phone or None,
        "contact_email": contact_email or None,
    }


def _render(lang: str, template: str, context: dict) -> RenderedEmail:
    env = environment(lang)
    # One line, whatever the template or the hospital name hold: a newline in a header is an
    # injection.
    subject = " ".join(env.get_template(f"{template}_subject.txt").render(context).split())
    text = _tidy_text(env.get_template(f"{template}.txt").render(context))
    html = env.get_template(f"{template}.html").render(context, subject=subject)
    return RenderedEmail(subject=subject, text=text, html=html)


def _date(at: datetime, lang: str) -> str:
    """A day as the patient's language writes it in full ('3 décembre 2026'), in Geneva's time."""
    return format_long_date(at, lang)


def _tidy_text(text: str) -> str:
    # Block tags ({% if %}, comments) leave blank lines behind; at most one blank line between
    # paragraphs. Trailing spaces stay: "-- " is the signature delimiter (RFC 3676 §4.3).
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
