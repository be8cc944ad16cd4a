"""The SMS text, in the patient's language, ending with the origin-bound line for autofill.

The sentence comes from the gettext catalogs in ``locale/`` (see shared/i18n.py). The last line
``@host #code`` follows the WICG origin-bound one-time codes format, so phones and browsers offer the
code only on the portal's own origin (https://wicg.github.io/sms-one-time-codes/). Each translation
stays in the GSM-7 alphabet (no "È", no typographic quotes) so that the text fits one SMS segment.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from shared.i18n import N_, Catalogs, format_number

CATALOGS = Catalogs(Path(__file__).resolve().parent / "locale")
OTP_SENTENCE = N_(
    "%(code)s is your code to open your secure message from %(hospital)s. It is valid for %(minutes)s minutes."
)


def minutes_left(expires_at: datetime, now: datetime | None = None) -> int:
    """Whole minutes the code stays valid from now, rounded up (a code sent late says so)."""
    seconds = (expires_at - (now or datetime.now(timezone.utc))).total_seconds()
    return max(1, math.ceil(seconds / 60))


def otp_text(
    language: str, code: str, portal_host: str, *, hospital: str, expires_at: datetime, now: datetime | None = None
) -> str:
    """The whole SMS; unknown languages fall back to French, the hospital's language."""
    body = CATALOGS.gettext(
        language,
        OTP_SENTENCE,
        code=code,
        hospital=hospital,
        minutes=format_number(minutes_left(expires_at, now), language),
    )
    return f"{body}\n\n@{portal_host} #{code}"
