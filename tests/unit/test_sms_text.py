"""The SMS text: the patient's language, one GSM-7 segment, and the origin-bound line at the end."""

from __future__ import annotations

import pytest

from devinbox.twilio import GSM7, GSM7_EXT, num_segments
from sms_gateway.text import TEMPLATES, otp_text

HOST = "convocations.hug.ch"


@pytest.mark.parametrize("language, opening", [
    ("fr", "123456 est votre code"), ("de", "123456 ist Ihr Code"), ("it", "123456 è il suo codice"),
    ("en", "123456 is your code"),
])
def test_the_text_is_in_the_patients_language_and_ends_with_the_origin_bound_line(language, opening):
    text = otp_text(language, "123456", HOST)
    assert text.startswith(opening)
    assert text.endswith(f"\n\n@{HOST} #123456")
    assert text.splitlines()[-1] == f"@{HOST} #123456"  # the WICG origin-bound one-time code format


def test_an_unknown_language_falls_back_to_french():
    assert otp_text("rm", "000111", HOST) == otp_text("fr", "000111", HOST)


@pytest.mark.parametrize("language", sorted(TEMPLATES))
def test_every_language_fits_one_gsm7_segment(language):
    text = otp_text(language, "987654", HOST)
    assert all(c in GSM7 or c in GSM7_EXT for c in text), "a character outside GSM-7 doubles the cost"
    assert num_segments(text) == 1


def test_the_code_appears_in_the_sentence_and_in_the_last_line_only():
    text = otp_text("en", "424242", HOST)
    assert text.count("424242") == 2
