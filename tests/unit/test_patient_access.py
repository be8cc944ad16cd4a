"""The patient-access service's rules that need no I/O (access_portal/access.py): which page a closed
letter shows, which number a code goes to, and how many tries are left."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from access_portal.access import CLOSED, NumberRefusal, Target, choose_target, closed_state, tries_left, usable_binding
from access_portal.phones import Phones
from access_portal.records import Binding, Challenge, Message
from access_portal.settings import PortalSettings

NOW = datetime(2027, 1, 10, 9, 0, tzinfo=timezone.utc)
SETTINGS = PortalSettings(environment="development")
PHONES = Phones(SETTINGS.portal_secret_key, SETTINGS.portal_field_key)
ON_FILE, OTHER = "+41791234567", "+41797654321"
REF = "k1:" + "ab" * 32


def message(*, on_file: str | None = ON_FILE, **changes) -> Message:
    stored = PHONES.stored(on_file, REF) if on_file else None
    fields = {f.name: None for f in dataclasses.fields(Message)} | {
        "message_id": uuid.uuid4(),
        "convocation_id": uuid.uuid4(),
        "patient_ref": REF,
        "language": "fr",
        "key_id": "k1",
        "expires_at": NOW + timedelta(days=30),
        "secretariat_phone": "+41223723311",
        "state": "active",
        "failed_checks": 0,
        "phone_hash": stored.phone_hash if stored else None,
        "phone_hint": stored.phone_hint if stored else None,
        "phone_enc": stored.phone_enc if stored else None,
    }
    return Message(**(fields | changes))


def binding(e164: str, source: str = "hospital") -> Binding:
    stored = PHONES.stored(e164, REF)
    return Binding(REF, stored.phone_hash, stored.phone_hint, stored.phone_enc, source)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"state": "revoked", "revoked_reason": "withdrawn"}, ("withdrawn", 410)),
        ({"state": "revoked", "revoked_reason": "superseded"}, ("superseded", 410)),
        ({"state": "revoked", "revoked_reason": "cancelled"}, ("cancelled", 410)),
        ({"state": "revoked", "revoked_reason": "something else"}, ("cancelled", 410)),
        ({"state": "expired"}, ("expired", 410)),
        ({"expires_at": NOW}, ("expired", 410)),
        ({}, None),
    ],
)
def test_a_closed_letter_says_why_and_an_open_one_opens(changes, expected):
    assert closed_state(message(**changes), NOW) == expected
    assert closed_state(None, NOW) == ("unknown", 404)
    # A form of a closed letter is sent to the link's page, which says why (routes.refused): CLOSED knows them all.
    assert expected is None or expected[0] in CLOSED


def test_the_proven_number_on_file_carries_over_unless_the_hospital_now_has_another():
    on_file, other = binding(ON_FILE), binding(OTHER)
    assert usable_binding(message(), on_file, PHONES) is on_file
    assert usable_binding(message(), other, PHONES) is None  # the hospital's number changed since
    assert usable_binding(message(on_file=None), other, PHONES) is other  # nothing on file to differ from


def test_a_number_proven_through_this_link_serves_this_letter_only():
    stored = PHONES.stored(OTHER, REF)
    proven = message(
        on_file=None, proven_hash=stored.phone_hash, proven_hint=stored.phone_hint, proven_enc=stored.phone_enc
    )
    found = usable_binding(proven, None, PHONES)
    assert found is not None and (found.phone_hash, found.source) == (stored.phone_hash, "first-use")
    assert usable_binding(message(on_file=None), None, PHONES) is None


def test_a_bound_number_gets_the_code_without_binding_again():
    bound = binding(ON_FILE)
    target = choose_target(message(), bound, None, "", resend=False, phones=PHONES)
    assert target == Target(bound.phone_hash, bound.phone_hint, bound.phone_enc, None)


def test_the_number_on_file_typed_in_any_form_binds_it_once_the_code_is_right():
    m = message()
    target = choose_target(m, None, None, "079 123 45 67", resend=False, phones=PHONES)
    assert target == Target(m.phone_hash, m.phone_hint, m.phone_enc, "hospital")


def test_another_number_is_told_with_the_hint_on_file_and_nothing_to_text():
    """Issue 20, item 1: a wrong number is refused plainly, with the hint of the number on file."""
    m = message()
    refusal = choose_target(m, None, None, "079 765 43 21", resend=False, phones=PHONES)
    assert refusal == NumberRefusal("number_mismatch", m.phone_hint)


def test_without_a_number_on_file_the_typed_number_is_trusted_on_first_use_for_this_letter():
    target = choose_target(message(on_file=None), None, None, "+41 79 765 43 21", resend=False, phones=PHONES)
    assert isinstance(target, Target) and target.bind_source == "first-use"
    assert PHONES.open(target.phone_enc, REF) == OTHER


def test_send_a_new_code_goes_where_the_last_one_went():
    stored = PHONES.stored(OTHER, REF)
    last = Challenge(
        uuid.uuid4(),
        uuid.uuid4(),
        "h",
        stored.phone_hash,
        stored.phone_hint,
        stored.phone_enc,
        "first-use",
        NOW,
        NOW + timedelta(minutes=10),
        0,
        "active",
        False,
        None,
    )
    target = choose_target(message(on_file=None), None, last, "  ", resend=True, phones=PHONES)
    assert target == Target(last.phone_hash, last.phone_hint, last.phone_enc, "first-use")


@pytest.mark.parametrize("typed", ["", "12", "not a number", "+41 22 372 33 11 99"])
def test_what_cannot_be_a_number_is_refused_by_the_field(typed):
    assert choose_target(message(), None, None, typed, resend=False, phones=PHONES) == NumberRefusal("number_invalid")


@pytest.mark.parametrize("wrong, failed, left", [(1, 1, 4), (4, 4, 1), (2, 7, 3), (1, 9, 1)])
def test_tries_left_are_the_fewer_of_the_codes_and_the_messages(wrong, failed, left):
    assert tries_left(5, wrong, failed) == left
