"""Access rules as plain functions: number matching, code generation, waits and locks.

References: NIST SP 800-63B §5.1.3 (out-of-band codes, rate limiting), OWASP ASVS 4.0.3 V2.7.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.phones import e164
from shared.phones import phone_hint as phone_hint  # the portal's callers import it from here

CODE_DIGITS = 6
# After every 5 failures the message waits longer; never a permanent lock (NIST SP 800-63B §5.2.2).
LOCK_EVERY = 5
LOCK_STEPS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))


def normalise_phone(raw: str) -> str | None:
    """Any usual form ('079 123 45 67', '+41 79…', '0041 79…') -> E.164, or None if not a valid number."""
    return e164(raw)


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def clean_code(raw: str) -> str | None:
    """The 6 digits of what people type or paste (spaces, dashes, a leading '#', full-width or
    Arabic-Indic digits), or None when it cannot be a code at all: such input is refused without
    counting as a guess, so a scanner pressing the button burns no tries."""
    digits = "".join(str(int(ch)) for ch in raw[:64] if ch.isdecimal())
    return digits if len(digits) == CODE_DIGITS else None


def lock_for(failed_checks: int) -> timedelta | None:
    """The wait imposed once ``failed_checks`` failures (wrong codes, wrong numbers) were counted
    for one message: one more step every LOCK_EVERY failures, capped, never permanent."""
    if failed_checks < LOCK_EVERY or failed_checks % LOCK_EVERY:
        return None
    return LOCK_STEPS[min(failed_checks // LOCK_EVERY - 1, len(LOCK_STEPS) - 1)]


def tries_before_wait(failed_checks: int) -> int:
    """How many more failures the message may have before the next wait starts."""
    return LOCK_EVERY - failed_checks % LOCK_EVERY


@dataclass(frozen=True)
class SendLimits:
    resend_seconds: int
    per_message_hour: int
    per_number_day: int


def send_wait(
    limits: SendLimits,
    now: datetime,
    last_sent: datetime | None,
    sent_last_hour: int,
    sent_number_day: int,
    oldest_in_hour: datetime | None,
    oldest_in_day: datetime | None,
) -> datetime | None:
    """When the next code may be sent, or None if it may be sent now."""
    waits = []
    if last_sent and now < last_sent + timedelta(seconds=limits.resend_seconds):
        waits.append(last_sent + timedelta(seconds=limits.resend_seconds))
    if sent_last_hour >= limits.per_message_hour and oldest_in_hour:
        waits.append(oldest_in_hour + timedelta(hours=1))
    if sent_number_day >= limits.per_number_day and oldest_in_day:
        waits.append(oldest_in_day + timedelta(days=1))
    return max(waits) if waits else None
