"""The access portal's rules as plain functions: numbers, codes, waits, caps, calendar (no I/O)."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime, timedelta, timezone

import icalendar
import pytest

from access_portal import calendar, policy
from access_portal.settings import PortalSettings

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
LIMITS = policy.SendLimits(resend_seconds=30, per_message_hour=5, per_number_day=10)


@pytest.mark.parametrize(
    "typed",
    [
        "079 123 45 67",
        "+41 79 123 45 67",
        "0041 79 123 45 67",
        "0791234567",
        "+41791234567",
        " 079-123-45-67 ",
        "(079) 123 45 67",
    ],
)
def test_usual_forms_of_a_swiss_mobile_number_normalise_to_one_e164(typed):
    assert policy.normalise_phone(typed) == "+41791234567"


@pytest.mark.parametrize("typed", ["079 123 45", "not a number", "", "+", "9" * 300, "079 123 45 67 89 01"])
def test_what_is_not_a_valid_number_normalises_to_nothing(typed):
    assert policy.normalise_phone(typed) is None


def test_the_hint_masks_all_but_the_prefix_and_the_last_two_digits():
    assert policy.phone_hint("+41791234534") == "+41 79 *** ** 34"
    assert policy.phone_hint("+4915112345678").endswith("78") and "1234567" not in policy.phone_hint("+4915112345678")


def test_numbers_are_compared_in_constant_time(monkeypatch):
    calls, real = [], hmac.compare_digest
    monkeypatch.setattr(policy.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert policy.same_secret("abc", "abc") and not policy.same_secret("abc", "abd")
    assert len(calls) == 2


def test_codes_are_six_digits_drawn_from_the_secrets_module(monkeypatch):
    codes = {policy.new_code() for _ in range(2000)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 1990
    draws = []
    monkeypatch.setattr(policy.secrets, "randbelow", lambda n: draws.append(n) or 42)
    assert policy.new_code() == "000042" and draws == [10**6]


@pytest.mark.parametrize(
    "typed, code",
    [
        ("123456", "123456"),
        (" 123 456 ", "123456"),
        ("#123456", "123456"),
        ("123-456", "123456"),
        ("１２３４５６", "123456"),
        ("١٢٣٤٥٦", "123456"),
    ],
)
def test_what_people_paste_is_read_as_the_code(typed, code):
    assert policy.clean_code(typed) == code


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "²²²²²²", "1" * 100_000])
def test_what_cannot_be_a_code_is_not_a_guess(typed):
    assert policy.clean_code(typed) is None


def test_waits_escalate_every_five_failures_are_capped_and_never_permanent():
    waits = {n: policy.lock_for(n) for n in range(0, 61)}
    assert {n for n, w in waits.items() if w} == set(range(5, 61, 5))
    assert [waits[n] for n in (5, 10, 15, 20, 25, 60)] == [
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=1),
        timedelta(hours=1),
    ]
    assert policy.lock_for(10**6) == timedelta(hours=1)


def test_the_tries_left_count_down_to_the_next_wait():
    assert [policy.tries_before_wait(n) for n in range(0, 11)] == [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5]


def test_a_code_may_be_sent_now_when_no_limit_is_reached():
    assert policy.send_wait(LIMITS, NOW, None, 0, 0, None, None) is None
    assert policy.send_wait(LIMITS, NOW, NOW - timedelta(seconds=31), 4, 9, NOW, NOW) is None


def test_the_next_code_waits_30_seconds_after_the_last():
    last = NOW - timedelta(seconds=10)
    assert policy.send_wait(LIMITS, NOW, last, 1, 1, last, last) == last + timedelta(seconds=30)


def test_the_sixth_code_in_an_hour_waits_until_the_first_is_an_hour_old():
    first = NOW - timedelta(minutes=20)
    assert policy.send_wait(LIMITS, NOW, NOW - timedelta(minutes=1), 5, 5, first, first) == first + timedelta(hours=1)


def test_the_eleventh_code_to_a_number_in_a_day_waits_until_the_first_is_a_day_old():
    first = NOW - timedelta(hours=5)
    assert policy.send_wait(
        LIMITS, NOW, NOW - timedelta(hours=1), 1, 10, NOW - timedelta(hours=1), first
    ) == first + timedelta(days=1)


def test_the_policy_settings_default_to_the_issue():
    s = PortalSettings()
    assert (
        s.otp_ttl_seconds,
        s.otp_max_wrong_per_code,
        s.otp_resend_seconds,
        s.otp_max_per_message_hour,
        s.otp_max_per_number_day,
    ) == (600, 5, 30, 5, 10)
    assert (s.session_idle_seconds, s.session_absolute_seconds) == (15 * 60, 60 * 60)
    assert s.audit_retention_days == 365 and s.retention_sweep_seconds == 3600
    assert s.cookie_secure is True


DETAILS = {
    "starts_at": "2026-12-10T23:30:00+00:00",
    "department": "Cardiologie",
    "place": "Bâtiment Julliard",
    "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
    "secretariat_phone": "+41 22 372 33 11",
    "instructions": "Venez à jeun.",
}


def test_the_ics_has_the_place_and_the_zurich_time_zone_with_its_definition():
    raw = calendar.ics(DETAILS, message_id=uuid.uuid4(), host="portal.example", language="de", hospital="HUG")
    cal = icalendar.Calendar.from_ical(raw)
    [event] = cal.walk("VEVENT")
    assert event.decoded("DTSTART") == datetime(2026, 12, 11, 0, 30, tzinfo=calendar.ZURICH)
    assert event["DTSTART"].params["TZID"] == "Europe/Zurich"
    assert [tz["TZID"] for tz in cal.walk("VTIMEZONE")] == ["Europe/Zurich"]
    assert "Bâtiment Julliard" in event["LOCATION"] and "1205 Genève" in event["LOCATION"]
    assert "Cardiologie" in event["SUMMARY"] and "Venez à jeun." in event["DESCRIPTION"]
