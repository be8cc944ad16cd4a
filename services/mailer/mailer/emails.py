"""Render the e-mail that carries a patient's secure link, in the patient's language.

The e-mail holds no medical content (no department, date, doctor or diagnosis): ``render_email``
is not even given any, so no template change can leak it. Wording lives in Jinja2 templates
(``templates/``) with English msgids, translated through gettext catalogs in ``locale/``.

The catalogs are loaded with the shared helper (``shared/i18n.py``), which says how to update them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.i18n import DEFAULT_LANGUAGE, LANGUAGES, Catalogs, normalize_language

PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
LOCALE_DIR: Final = PACKAGE_DIR / "locale"
CATALOGS: Final = Catalogs(LOCALE_DIR)
SUPPORTED_LANGUAGES: Final = LANGUAGES
__all__ = ["DEFAULT_LANGUAGE", "SUPPORTED_LANGUAGES", "RenderedEmail", "normalize_language", "render_email"]


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
    return CATALOGS.install(env, language)


def render_email(
    *,
    language: str,
    patient_name: str,
    link: str,
    hospital_name: str,
    secretariat_phone: str | None = None,
    secretariat_email: str | None = None,
) -> RenderedEmail:
    """Render subject, plain text and HTML of the link e-mail.

    An unsupported ``language`` falls back to French (see :func:`normalize_language`).
    Raises ``ValueError`` when ``link`` is not an absolute http(s) URL without spaces, so a
    ``javascript:`` link can never end up behind the button and the bare URL is copy-pastable.
    """
    url = urlsplit(link)
    if url.scheme not in ("https", "http") or not url.netloc or any(c.isspace() for c in link):
        raise ValueError("link must be an absolute http(s) URL without spaces")
    # Names come from records that may hold stray line breaks; keep each on one line so a
    # greeting cannot turn into extra paragraphs of the text part.
    patient_name, hospital_name = " ".join(patient_name.split()), " ".join(hospital_name.split())
    if not patient_name or not hospital_name:
        raise ValueError("patient_name and hospital_name must not be blank")
    lang = normalize_language(language)
    env = environment(lang)
    context = {
        "language": lang,
        "patient_name": patient_name,
        "link": link,
        # The portal's guide, in the patient's language (the link's origin: no other address to configure).
        "guide": f"{url.scheme}://{url.netloc}/guide?lang={lang}",
        "hospital_name": hospital_name,
        # Empty strings count as absent, so the template never prints an empty contact.
        "secretariat_phone": secretariat_phone or None,
        "secretariat_email": secretariat_email or None,
    }
    # One line, whatever the template or the hospital name hold: a newline in a header is an
    # injection.
    subject = " ".join(env.get_template("link_subject.txt").render(context).split())
    text = _tidy_text(env.get_template("link.txt").render(context))
    html = env.get_template("link.html").render(context, subject=subject)
    return RenderedEmail(subject=subject, text=text, html=html)


def _tidy_text(text: str) -> str:
    # Block tags ({% if %}, comments) leave blank lines behind; at most one blank line between
    # paragraphs. Trailing spaces stay: "-- " is the signature delimiter (RFC 3676 §4.3).
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
