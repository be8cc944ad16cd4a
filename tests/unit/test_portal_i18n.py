"""The portal's page texts: every language says everything English says, with the same placeholders."""

from __future__ import annotations

import string

import pytest

from access_portal.i18n import LANGUAGES, TEXTS, text

ENGLISH = TEXTS["en"]


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def test_every_portal_language_has_a_catalogue():
    assert set(TEXTS) == set(LANGUAGES)


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_catalogue_has_exactly_the_english_keys(language):
    catalogue = TEXTS[language]
    assert set(catalogue) - set(ENGLISH) == set(), "keys English does not have"
    assert set(ENGLISH) - set(catalogue) == set(), "keys missing compared with English"


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_texts_are_not_empty(language):
    assert [key for key, value in TEXTS[language].items() if not value.strip()] == []


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_texts_have_the_english_placeholders(language):
    mismatched = {
        key: (placeholders(ENGLISH[key]), placeholders(template))
        for key, template in TEXTS[language].items()
        if key in ENGLISH and placeholders(template) != placeholders(ENGLISH[key])
    }
    assert mismatched == {}


@pytest.mark.parametrize("language", sorted(TEXTS))
@pytest.mark.parametrize("key", sorted(ENGLISH))
def test_text_formats_with_dummy_values(language, key):
    values = {name: f"<{name}>" for name in placeholders(ENGLISH[key])}
    values["unused"] = "ignored"  # always pass a value, so that format() really runs
    rendered = text(language, key, **values)
    assert "{" not in rendered and "}" not in rendered
    for name in placeholders(ENGLISH[key]):
        assert f"<{name}>" in rendered


@pytest.mark.parametrize("language", ["xx", "es", "", "FR"])
def test_unknown_language_falls_back_to_french(language):
    for key in ENGLISH:
        assert text(language, key) == TEXTS["fr"][key]
    assert text(language, "intro", hospital="HUG") == TEXTS["fr"]["intro"].format(hospital="HUG")


def test_swiss_german_uses_ss_not_eszett():
    assert [key for key, value in TEXTS["de"].items() if "ß" in value] == []
