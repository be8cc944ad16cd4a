"""Scrubbing personal data out of free text: log lines, and error texts from SMTP relays and SMS
providers before they are stored or published (they may echo an address, a number or a code)."""

from __future__ import annotations

import re

_PATTERNS = (
    # phone numbers as people write them (dots included: '079.123.45.67')
    (re.compile(r"(?:\+|\b00|\b0)[1-9][\d \-./]{6,}\d"), "[number]"),
    # any other run of six or more digits (a number without prefix, a code); dots excluded so that
    # addresses such as 127.0.0.1 stay readable, and short error codes (21211, 550) too
    (re.compile(r"\+?\d[\d \-/()]{4,}\d"), "[number]"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "[email]"),
    # URL fragments: link secrets
    (re.compile(r"#[A-Za-z0-9_\-]{16,}"), "#[secret]"),
)


def scrub(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
