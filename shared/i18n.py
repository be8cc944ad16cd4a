"""Gettext catalogs (Babel) for every service: each service's ``locale/<lang>/LC_MESSAGES/messages.po``.

One mechanism for every text a patient reads (portal pages, letter, SMS, e-mail): msgids are English,
translators edit the ``.po`` files only, and each service compiles them in memory when it starts, so
no compiled ``.mo`` can drift from its source. After changing a text, from the service's directory::

    pybabel extract -F babel.cfg -o <package>/locale/messages.pot .
    pybabel update -i <package>/locale/messages.pot -d <package>/locale

then translate the new entries (``tests/unit/test_catalogs.py`` fails on any missing one).

Dates, times, numbers, phone links and download file names are written here, once, with Babel's CLDR
formats for each language's Swiss locale (British English for English), in the hospital's time zone:
the portal's pages and calendar file, the e-mails, the SMS and the letter all call these helpers, so a
German patient reads "Montag, 21. Dezember 2026" everywhere.
"""

from __future__ import annotations

import io
import re
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

import phonenumbers
from babel import Locale
from babel.dates import format_date
from babel.dates import format_time as babel_format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from jinja2 import Environment
from markupsafe import Markup, escape

LANGUAGES: Final = ("fr", "de", "it", "en")
# The hospital (HUG, Geneva) writes French when it does not know better.
DEFAULT_LANGUAGE: Final = "fr"
# The CLDR locale each language is written in: Swiss conventions; British English writes the day first.
LOCALES: Final = {"fr": "fr_CH", "de": "de_CH", "it": "it_CH", "en": "en_GB"}
# Appointments and letters are dated in the hospital's wall-clock time, whatever offset a system used.
HOSPITAL_ZONE: Final = ZoneInfo("Europe/Zurich")


def N_(msgid: str) -> str:  # noqa: N802 - the gettext convention, which pybabel extracts
    """Mark a text for translation where it is defined; it is translated where it is shown."""
    return msgid


def normalize_language(language: str | None) -> str:
    """'de', 'DE', 'de-CH' or 'de_CH' -> 'de'; anything unsupported -> French.

    Falling back (rather than raising) because a patient must still be served: the language comes
    from the hospital's records or the browser, and French is the hospital's working language.
    """
    primary = re.split(r"[-_]", (language or "").strip(), maxsplit=1)[0].lower()
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


def catalog_path(locale_dir: Path, language: str) -> Path:
    return locale_dir / language / "LC_MESSAGES" / "messages.po"


def load_translations(locale_dir: Path, language: str) -> Translations:
    """Compile one language's ``.po`` in memory.

    Raises ``FileNotFoundError`` when it is missing: gettext would otherwise fall back silently to
    the English msgids, and a French patient would read English. Fuzzy entries are left out, as
    ``pybabel compile`` does.
    """
    path = catalog_path(locale_dir, language)
    if not path.is_file():
        raise FileNotFoundError(f"missing catalog {path}")
    with path.open("rb") as fileobj:
        catalog = read_po(fileobj, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain="messages")


class Catalogs:
    """The four languages of one service, loaded once."""

    def __init__(self, locale_dir: Path) -> None:
        self.locale_dir = locale_dir
        self._translations = {language: load_translations(locale_dir, language) for language in LANGUAGES}

    def translations(self, language: str | None) -> Translations:
        return self._translations[normalize_language(language)]

    def gettext(self, language: str | None, msgid: str, **values: object) -> str:
        """The translated text, with ``%(name)s`` placeholders filled in when values are given."""
        translated = self.translations(language).gettext(msgid)
        return translated % values if values else translated

    def install(self, env: Environment, language: str | None) -> Environment:
        """Give a Jinja2 environment (with the ``jinja2.ext.i18n`` extension) this language's texts."""
        # newstyle: _() takes keyword values and escapes them in autoescaped templates.
        env.install_gettext_translations(self.translations(language), newstyle=True)  # type: ignore[attr-defined]
        return env


def locale_of(language: str | None) -> str:
    """The Babel locale a language's dates and numbers are written in ('de' -> 'de_CH')."""
    return LOCALES[normalize_language(language)]


def _local(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in the hospital's time zone")
    return moment.astimezone(HOSPITAL_ZONE)


def _day(moment: datetime | date) -> date:
    return _local(moment).date() if isinstance(moment, datetime) else moment


def format_appointment_date(moment: datetime | date, language: str | None) -> str:
    """The day in full, with its weekday: 'Montag, 21. Dezember 2026', 'lundi, 21 décembre 2026'."""
    return format_date(_day(moment), "full", locale=locale_of(language))


def format_long_date(moment: datetime | date, language: str | None) -> str:
    """A day without its weekday, as letters are dated: '21. Dezember 2026', '21 December 2026'."""
    return format_date(_day(moment), "long", locale=locale_of(language))


def format_time(moment: datetime, language: str | None) -> str:
    """The hospital's wall-clock time, hours and minutes: '09:30' (never seconds or a zone name)."""
    return babel_format_time(_local(moment), "short", locale=locale_of(language))


def format_appointment(moment: datetime, language: str | None) -> str:
    """Date and time together, joined as the language's CLDR data joins them: 'Montag, 21. Dezember 2026,
    09:30'. (The 'full' joining pattern of some languages runs the two together without a comma.)"""
    joined = Locale.parse(locale_of(language)).datetime_formats["medium"]
    return (
        str(joined)
        .replace("{1}", format_appointment_date(moment, language))
        .replace("{0}", format_time(moment, language))
    )


def format_number(number: float, language: str | None) -> str:
    """A number with the language's separators: '12'345,5' in French, '12'345.5' in German, '12,345.5' in English."""
    return format_decimal(number, locale=locale_of(language))


def tel_href(number: str | None) -> str | None:
    """The ``tel:`` address of a phone number as a hospital writes it ('022 372 33 11' ->
    'tel:+41223723311'), or None when it is not a possible number (then it is shown as plain text)."""
    try:
        parsed = phonenumbers.parse(number or "", "CH")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return "tel:" + phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def tel_link(number: str | None) -> Markup:
    """The number as written, as a link a phone dials when tapped (escaped plain text if it is not a number).
    A Jinja2 filter for pages and HTML e-mails; ``_()`` keeps the link when it is a placeholder's value."""
    href = tel_href(number)
    if href is None:
        return escape(number or "")
    return Markup('<a href="{}">{}</a>').format(href, number)  # noqa: S704 - both values are escaped by format


def download_name(stem: str, day: date, extension: str) -> str:
    """A download's file name: the translated word, the appointment's day (ISO, so the files sort by date)
    and the extension: 'Aufgebot-2026-12-21.pdf'. Anything but letters, digits and hyphens becomes a hyphen."""
    word = re.sub(r"[^\w-]+", "-", unicodedata.normalize("NFC", stem.strip()), flags=re.UNICODE).strip("-")
    return f"{word or 'document'}-{day.isoformat()}.{extension}"


def content_disposition(filename: str) -> str:
    """``attachment`` with the file name; a name outside ASCII also goes as RFC 6266's ``filename*``
    (UTF-8), with an ASCII fallback for old clients."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
