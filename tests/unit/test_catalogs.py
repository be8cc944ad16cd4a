"""Every text a patient reads comes from one gettext mechanism: each service's catalogs translate
every msgid its code and templates use, with the same placeholders, in French, German and Italian."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from shared.i18n import LANGUAGES, Catalogs, catalog_path, normalize_language

ROOT = Path(__file__).resolve().parents[2]
# service directory -> its package's locale directory
SERVICES = {
    "access-portal": "access_portal/locale",
    "issuer": "issuer/locale",
    "mailer": "mailer/locale",
    "sms-gateway": "sms_gateway/locale",
    "secretariat": "secretariat/locale",
}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def used_msgids(service: str) -> set[str]:
    """What `pybabel extract -F babel.cfg` finds in the service's code and templates."""
    directory = ROOT / "services" / service
    with (directory / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    ids = set()
    for _, _, message, _, _ in extract_from_dir(
        str(directory), method_map, options_map, keywords={"_": None, "gettext": None, "N_": None}
    ):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


def catalog(service: str, language: str):
    with catalog_path(ROOT / "services" / service / SERVICES[service], language).open("rb") as fileobj:
        return read_po(fileobj, locale=language)


@pytest.mark.parametrize("service", sorted(SERVICES))
@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_every_text_is_translated_with_the_same_placeholders(service, language):
    used = used_msgids(service)
    assert used, f"{service}: nothing extracted; check its babel.cfg"
    translated = {m.id: m.string for m in catalog(service, language) if m.id and m.string and not m.fuzzy}
    assert sorted(used - set(translated)) == [], f"untranslated in {service}/{language}"
    wrong = {
        msgid: translated[msgid]
        for msgid in used
        if set(PLACEHOLDER.findall(msgid)) != set(PLACEHOLDER.findall(translated[msgid]))
    }
    assert wrong == {}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_catalogs_hold_no_text_the_service_no_longer_uses(service):
    used = used_msgids(service)
    for language in LANGUAGES:
        stale = {m.id for m in catalog(service, language) if m.id} - used
        assert stale == set(), f"{service}/{language}: run pybabel update (see shared/i18n.py)"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_no_compiled_catalog_can_drift_from_its_source(service):
    # The .po files are compiled in memory at start (shared/i18n.py): a committed .mo would be ignored.
    assert list((ROOT / "services" / service).rglob("*.mo")) == []


@pytest.mark.parametrize("service", sorted(set(SERVICES) - {"secretariat"}))  # what patients read; staff say "letter"
@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_english_wording_is_consistent(service, language):
    """The patient's document is a "convocation" in every English text; Italian addresses the patient
    formally ("Suo", "Le"), never with a lower-case "suo"."""
    english = used_msgids(service)
    assert [m for m in english if re.search(r"\b(letter|appointment letter)\b", m, re.I)] == []
    italian = [m.string for m in catalog(service, "it") if m.id]
    assert [s for s in italian if re.search(r"\b(suo|sua|suoi|tuo|tua)\b", s)] == []


def test_a_missing_catalog_is_an_error_not_silent_english(tmp_path):
    with pytest.raises(FileNotFoundError):
        Catalogs(tmp_path)


@pytest.mark.parametrize(
    "raw, expected",
    [("de", "de"), ("DE", "de"), ("de-CH", "de"), ("it_CH", "it"), ("es", "fr"), ("", "fr"), (None, "fr")],
)
def test_languages_normalise_to_the_four_or_french(raw, expected):
    assert normalize_language(raw) == expected
