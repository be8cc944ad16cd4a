"""The portal's words: gettext catalogs in ``locale/`` (French, German, Italian, English)."""

from __future__ import annotations

from pathlib import Path

from shared.i18n import LANGUAGES, N_, Catalogs

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
CATALOGS = Catalogs(LOCALE_DIR)
__all__ = ["CATALOGS", "LANGUAGES", "LOCALE_DIR", "N_", "gettext"]


def gettext(language: str | None, msgid: str, **values: object) -> str:
    return CATALOGS.gettext(language, msgid, **values)
