"""The secretariat's pure rules: which action fits which state, search criteria, audit export, and the
pages in each of the four languages."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from babel.messages.pofile import read_po
from secretariat import domain
from secretariat.auth import staff_identity
from secretariat.console import _csv_safe
from secretariat.settings import SecretariatSettings
from secretariat.web import LOCALE, Pages
from starlette.requests import Request

from shared.i18n import LANGUAGES

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def row(**kw) -> dict:
    base = dict(id=uuid.uuid4(), message_id=uuid.uuid4(), status="e-mailed", postal_at=None, downloaded_at=None,
                locked_until=None, department="cardiology", appointment_at=NOW + timedelta(days=3), delivery="email",
                phone_hint="+41 79 *** ** 67", status_at=NOW)
    return base | kw


@pytest.mark.parametrize("action, convocation, refusal", [
    ("post", row(), None),
    ("post", row(postal_at=NOW), "already-delivered"),
    ("post", row(downloaded_at=NOW), "already-delivered"),
    ("withdraw", row(status="cancelled"), "closed"),
    ("withdraw", row(status="superseded"), "closed"),
    ("unlock", row(), "not-locked"),
    ("unlock", row(locked_until=NOW + timedelta(minutes=5)), None),
    ("unlock", row(locked_until=NOW - timedelta(minutes=5)), "not-locked"),
    ("correct-mobile", row(status="downloaded", downloaded_at=NOW), None),
    ("reset-binding", row(message_id=None, status=None), "not-sealed"),
    ("send-twice", row(), "unknown-action"),
    ("resend", row(), None),
    ("resend", row(status="downloaded", downloaded_at=NOW), None),  # the patient lost it: a new link
    ("correct-email", row(status="postal-fallback", postal_at=NOW), None),  # the e-mail bounced: fix and resend
    ("resend", row(status="withdrawn"), "closed"),
    ("correct-email", row(status="expired"), "closed"),
    ("resend", row(appointment_at=NOW - timedelta(minutes=1)), "appointment-past"),
    ("correct-email", row(delivery="postal", status="postal"), "postal-channel"),
])
def test_each_action_fits_only_the_states_it_can_change(action, convocation, refusal):
    assert domain.action_refusal(action, convocation, NOW) == refusal


def test_a_letter_is_asked_again_of_the_hospital_system_once_until_the_new_one_is_e_mailed():
    pending = [{"kind": "correct-email", "done_at": None}]
    assert domain.action_refusal("resend", row(), NOW, pending) == "reissue-pending"
    assert domain.action_refusal("correct-email", row(), NOW, pending) == "reissue-pending"
    assert domain.action_refusal("post", row(), NOW, pending) is None
    done = [{"kind": "resend", "done_at": NOW}, {"kind": "unlock", "done_at": None}]
    assert domain.action_refusal("correct-email", row(), NOW, done) is None


def test_a_corrected_address_must_be_one_plain_address():
    assert domain.parse_email("  marie.dupont@example.ch ") == "marie.dupont@example.ch"
    assert domain.parse_email("Marie <m@example.ch>") == "m@example.ch"  # the address alone travels
    for bad in ("", "marie", "a@b@c.ch", "marie@example.ch\r\nBcc: x@evil.example", "m@example.ch, x@evil.example"):
        assert domain.parse_email(bad) is None, bad


def test_a_reason_is_mandatory_and_bounded():
    assert domain.reason_problem("   ok  ") == "reason-required"
    assert domain.reason_problem("patient called") is None
    assert domain.reason_problem("x" * 501) == "reason-too-long"


def test_search_criteria_name_the_fields_that_do_not_parse_and_the_audit_never_holds_the_patient_id():
    c, bad = domain.criteria(convocation_id="nope", date_from="2026-13-01", worklist="everything", days="-1")
    assert set(bad) == {"convocation_id", "date_from", "worklist", "days"}
    c, bad = domain.criteria(patient_id="P-0012345")
    assert not bad and "P-0012345" not in c.summary() and "patient-id" in c.summary()
    c, _ = domain.criteria(date_from="2026-12-01", date_to="2026-12-01")
    start, end = domain.day_bounds(c)
    assert (end - start) == timedelta(days=1) and start.utcoffset() == timedelta(hours=1)  # Geneva days


def test_roles_from_the_token_a_secretary_acts_in_her_departments_a_supervisor_reads_all():
    secretary = staff_identity("s1", "Alice", ["secretary"], ["cardiology"])
    assert secretary.can_act and secretary.sees("cardiology") and not secretary.sees("neurology")
    assert not secretary.sees(None) and not secretary.can_audit
    supervisor = staff_identity("s2", "Sophie", ["supervisor"], [])
    assert supervisor.sees("neurology") and supervisor.can_audit and not supervisor.can_act
    assert staff_identity("s3", "Nobody", ["nurse"], ["cardiology"]) is None
    assert staff_identity("s4", "No department", ["secretary"], []) is None


def test_the_audit_export_cannot_run_formulas_in_a_spreadsheet():
    assert _csv_safe("=HYPERLINK(\"x\")").startswith("'")
    assert _csv_safe("+41 22") == "'+41 22" and _csv_safe("patient called") == "patient called"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated(language):
    with open(LOCALE / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    missing = [m.id for m in catalog if m.id and not m.string]
    assert not missing, missing


@pytest.mark.parametrize("language, title", [("fr", "Trouver une convocation"), ("de", "Ein Aufgebot finden"),
                                             ("it", "Trovare una convocazione"), ("en", "Find a convocation")])
def test_the_pages_speak_the_chosen_language(language, title):
    pages = Pages(SecretariatSettings(), console=None, oidc=None)
    request = Request({"type": "http", "method": "GET", "path": "/search", "headers": [],
                       "query_string": f"lang={language}".encode()})
    who = staff_identity("s1", "Alice", ["secretary"], ["cardiology"])
    html = pages.page(request, "search.html", who, criteria=domain.Criteria(), bad=[], rows=None,
                      worklists=domain.WORKLISTS).body.decode()
    assert f'<html lang="{language}">' in html and title in html
    assert "<script src=\"/static/console.js\"></script>" in html and "<script>" not in html
