"""The SMS text: the patient's language, the hospital and the code's lifetime from the settings and the
event, one GSM-7 segment, and the origin-bound line at the end."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devinbox.twilio import GSM7, GSM7_EXT, num_segments
from shared.i18n import LANGUAGES
from sms_gateway.text import otp_text

HOST = "convocations.hug.ch"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def sms(language: str, code: str = "123456", *, hospital: str = "HUG", minutes: float = 10) -> str:
    return otp_text(language, code, HOST, hospital=hospital, expires_at=NOW + timedelta(minutes=minutes), now=NOW)


@pytest.mark.parametrize(
    "language, opening",
    [
        ("fr", "123456 est votre code"),
        ("de", "123456 ist Ihr Code"),
        ("it", "123456 è il Suo codice"),
        ("en", "123456 is your code"),
    ],
)
def test_the_text_is_in_the_patients_language_and_ends_with_the_origin_bound_line(language, opening):
    text = sms(language)
    assert text.startswith(opening)
    assert text.endswith(f"\n\n@{HOST} #123456")
    assert text.splitlines()[-1] == f"@{HOST} #123456"  # the WICG origin-bound one-time code format


@pytest.mark.parametrize(
    "language, words",
    [("fr", "valable 7 minutes"), ("de", "7 Minuten"), ("it", "valido 7 minuti"), ("en", "valid for 7 minutes")],
)
def test_the_lifetime_is_what_is_left_of_the_code_not_fixed_text(language, words):
    assert words in sms(language, minutes=6.5)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_hospital_name_comes_from_the_setting(language):
    text = sms(language, hospital="CHUV")
    assert "CHUV" in text and "HUG" not in text


def test_an_unknown_language_falls_back_to_french():
    assert sms("rm", "000111") == sms("fr", "000111")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_fits_one_gsm7_segment(language):
    text = sms(language, "987654", hospital="A" * 20, minutes=30)  # the longest name the setting allows
    assert all(c in GSM7 or c in GSM7_EXT for c in text), "a character outside GSM-7 doubles the cost"
    assert num_segments(text) == 1


def test_the_code_appears_in_the_sentence_and_in_the_last_line_only():
    assert sms("en", "424242").count("424242") == 2
