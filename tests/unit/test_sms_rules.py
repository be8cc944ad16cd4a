"""The sms-gateway's rules: who may be texted, by which provider, and how delivery reports move an SMS."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sms_gateway.rules import (
    Report,
    accepted_status,
    country_of,
    next_status,
    provider_for_attempt,
    refusal,
    retry_delay,
)
from sms_gateway.settings import SmsSettings

NOW = datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)
ALLOWED = frozenset({"CH", "LI", "FR", "DE", "IT", "AT"})


def refuse(**kw):
    args = dict(
        now=NOW,
        expires_at=NOW + timedelta(minutes=10),
        country="CH",
        allowed_countries=ALLOWED,
        sent_to_number_last_hour=0,
        max_per_number_hour=10,
        sent_last_hour=0,
        max_global_hour=2000,
    )
    return refusal(**{**args, **kw})


def test_a_swiss_number_within_every_limit_is_texted():
    assert refuse() is None


@pytest.mark.parametrize(
    "kw, code",
    [
        (dict(expires_at=NOW), "expired"),
        (dict(country=None), "invalid-number"),
        (dict(country="US"), "country-not-allowed"),
        (dict(sent_to_number_last_hour=10), "number-hourly-cap"),
        (dict(sent_last_hour=2000), "global-hourly-cap"),
    ],
)
def test_each_refusal_has_its_own_reason_code(kw, code):
    assert refuse(**kw).code == code


def test_the_caps_allow_up_to_their_value():
    assert refuse(sent_to_number_last_hour=9, sent_last_hour=1999) is None


def test_a_refusal_detail_names_the_country_but_never_holds_a_number():
    assert "US" in refuse(country="US").detail
    assert "+" not in refuse(sent_to_number_last_hour=10).detail


@pytest.mark.parametrize(
    "e164, country",
    [
        ("+41791234567", "CH"),
        ("+4237812345", "LI"),
        ("+33612345678", "FR"),
        ("+16502530000", "US"),
        ("+4179", None),
        ("not a number", None),
    ],
)
def test_country_of_a_number(e164, country):
    assert country_of(e164) == country


def test_the_default_allow_list_is_switzerland_and_its_neighbours():
    assert SmsSettings().allowed_countries == ALLOWED


def test_the_primary_provider_is_used_for_the_first_n_attempts_then_the_second():
    assert [provider_for_attempt(a, 2, 2) for a in (1, 2, 3, 4, 5)] == [0, 0, 1, 1, 1]
    assert [provider_for_attempt(a, 2, 1) for a in (1, 2, 3, 4)] == [0, 0, 0, 0]  # no second provider


@pytest.mark.parametrize(
    "current, reported, new",
    [
        ("queued", "sent", "sent"),
        ("queued", "delivered", "delivered"),  # "sent" may never come, or come late
        ("sent", "failed", "failed"),
        ("delivered", "sent", None),  # out of order: no step back
        ("delivered", "delivered", None),  # repeated
        ("delivered", "failed", None),  # a final state is final
        ("failed", "delivered", None),
        ("sent", "queued", None),
        ("sent", None, None),  # a status we do not track
    ],
)
def test_a_delivery_report_only_moves_an_sms_forward(current, reported, new):
    assert next_status(current, reported) == new


@pytest.mark.parametrize(
    "provider, status, ours",
    [
        ("twilio", "queued", "queued"),
        ("twilio", "accepted", "queued"),
        ("twilio", "sending", "sent"),
        ("twilio", "sent", "sent"),
        ("twilio", "delivered", "delivered"),
        ("twilio", "undelivered", "failed"),
        ("twilio", "failed", "failed"),
        ("twilio", "canceled", "failed"),
        ("twilio", "receiving", None),
        ("generic", "delivered", "delivered"),
        ("generic", "failed", "failed"),
        ("generic", "accepted", "queued"),
    ],
)
def test_provider_statuses_map_to_ours(provider, status, ours):
    assert Report(provider, "id", status).status == ours


def test_a_send_just_accepted_is_queued_whatever_the_provider_claims():
    assert accepted_status("twilio", "queued") == "queued"
    assert accepted_status("generic", "accepted") == "queued"
    assert accepted_status("twilio", "sent") == "sent"
    assert accepted_status("generic", "delivered") == "queued"  # only a delivery report may say that


def test_retries_follow_the_backoff_but_the_move_to_the_other_provider_waits_only_the_first_step():
    delays = (5, 30, 120, 600)
    assert [retry_delay(delays, a, 2, 2) for a in (1, 2, 3, 4, 5)] == [5, 5, 120, 600, None]
    assert [retry_delay(delays, a, 2, 1) for a in (1, 2, 3, 4, 5)] == [5, 30, 120, 600, None]
