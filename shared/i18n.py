"""Gettext catalogs (Babel) for every service: each service's ``locale/<lang>/LC_MESSAGES/messages.po``.

One mechanism for every text a patient reads (portal pages, letter, SMS, e-mail): msgids are English,
translators edit the ``.po`` files only, and each service compiles them in memory when it starts, so
no compiled ``.mo`` can drift from its source. After changing a text, from the service's directory::

    pybabel extract -F babel.cfg -o <package>/locale/messages.pot .
    pybabel update -i <package>/locale/messages.pot -d <package>/locale

then translate the new entries (``tests/unit/test_catalogs.py`` fails on any missing one).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment

LANGUAGES: Final = ("fr", "de", "it", "en")
# The hospital (HUG, Geneva) writes French when it does not know better.
DEFAULT_LANGUAGE: Final = "fr"


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
