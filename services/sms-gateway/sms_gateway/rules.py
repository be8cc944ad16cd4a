"""The gateway's rules as plain functions: who may be texted, by which provider, and how a delivery
report may move an SMS through its states. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import phonenumbers

# Where an SMS stands. A delivery report may only move it forward: a late "sent" after "delivered"
# or a second "undelivered" changes nothing (providers repeat and reorder callbacks).
RANK = {"retrying": 0, "queued": 1, "sent": 2, "delivered": 3, "failed": 3}
FINAL = frozenset({"delivered", "failed"})

# Twilio message statuses (https://www.twilio.com/docs/messaging/api/message-resource#message-status-values)
TWILIO_STATUSES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
GENERIC_STATUSES = {
    "accepted": "queued",
    "queued": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "failed": "failed",
    "undelivered": "failed",
}
PROVIDER_STATUSES = {"twilio": TWILIO_STATUSES, "generic": GENERIC_STATUSES}


@dataclass(frozen=True)
class Refusal:
    """Why the gateway will not text this code; ``code`` is the reason code of the sms.failed event."""

    code: str
    detail: str


@dataclass(frozen=True)
class Report:
    """A provider's delivery report, already authenticated. ``status`` is ours (None: not tracked)."""

    provider: str
    provider_message_id: str
    provider_status: str
    error_code: str | None = None

    @property
    def status(self) -> str | None:
        return our_status(self.provider, self.provider_status)


def our_status(provider: str, provider_status: str) -> str | None:
    return PROVIDER_STATUSES.get(provider, {}).get(provider_status.strip().lower())


def accepted_status(provider: str, provider_status: str) -> str:
    """Our state for a send the provider just accepted: queued, or sent if it says so already."""
    status = our_status(provider, provider_status)
    return status if status in ("queued", "sent") else "queued"


def next_status(current: str, reported: str | None) -> str | None:
    """The state a report moves an SMS to, or None when it must change nothing."""
    if reported is None or reported not in RANK or current in FINAL or reported == "retrying":
        return None
    return reported if RANK[reported] > RANK.get(current, 0) else None


def country_of(e164: str) -> str | None:
    """ISO country of a number ('+41…' -> 'CH'), or None when it is not a valid number."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.region_code_for_number(number)


def refusal(
    *,
    now: datetime,
    expires_at: datetime,
    country: str | None,
    allowed_countries: frozenset[str],
    sent_to_number_last_hour: int,
    max_per_number_hour: int,
    sent_last_hour: int,
    max_global_hour: int,
) -> Refusal | None:
    """Whether to refuse sending. The hourly caps stop SMS pumping (toll fraud through our sender):
    https://www.twilio.com/docs/glossary/what-is-sms-pumping-fraud"""
    if expires_at <= now:
        return Refusal("expired", "the code expired before it could be sent")
    if country is None:
        return Refusal("invalid-number", "the destination is not a valid phone number")
    if country not in allowed_countries:
        return Refusal("country-not-allowed", f"destination country {country} is not in SMS_ALLOWED_COUNTRIES")
    if sent_to_number_last_hour >= max_per_number_hour:
        return Refusal(
            "number-hourly-cap",
            f"this number already got {sent_to_number_last_hour} SMS in the last hour"
            f" (SMS_MAX_PER_NUMBER_HOUR={max_per_number_hour})",
        )
    if sent_last_hour >= max_global_hour:
        return Refusal(
            "global-hourly-cap", f"{sent_last_hour} SMS sent in the last hour (SMS_MAX_GLOBAL_HOUR={max_global_hour})"
        )
    return None


def provider_for_attempt(attempt: int, failover_after: int, providers: int) -> int:
    """Index of the provider for attempt ``attempt`` (1-based): the primary for the first
    ``failover_after`` attempts, then the second provider when there is one."""
    return 1 if providers > 1 and attempt > failover_after else 0


def retry_delay(delays: tuple[int, ...], attempt: int, failover_after: int, providers: int) -> int | None:
    """Seconds before the attempt after failed attempt ``attempt``, or None when retries are exhausted.
    Moving to the other provider waits only the first step: its outage is not the primary's, and a
    patient is waiting for the code."""
    if not 1 <= attempt <= len(delays):
        return None
    switching = provider_for_attempt(attempt + 1, failover_after, providers) != provider_for_attempt(
        attempt, failover_after, providers
    )
    return delays[0] if switching else delays[attempt - 1]
