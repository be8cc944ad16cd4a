"""The secretariat's pure rules: which action fits which state, search criteria, audit export, and the
pages in each of the four languages."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

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
    base = dict(
        id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        status="e-mailed",
        postal_at=None,
        downloaded_at=None,
        locked_until=None,
        department="cardiology",
        appointment_at=NOW + timedelta(days=3),
        delivery="email",
        phone_hint="+41 79 *** ** 67",
        status_at=NOW,
        postal_reason=None,
        paper_cancelled_at=None,
        printed_at=None,
        posted_at=None,
        returned_at=None,
    )
    return base | kw


def asked(kind: str, minutes_ago: float = 1, done: bool = False) -> dict:
    at = NOW - timedelta(minutes=minutes_ago)
    return {"kind": kind, "requested_at": at, "done_at": at + timedelta(seconds=30) if done else None}


ON_PAPER = dict(status="postal", postal_at=NOW, postal_reason="secretariat")
PRINTED = dict(ON_PAPER, status="printed", printed_at=NOW)
RETURNED = dict(PRINTED, status="returned", posted_at=NOW, returned_at=NOW)


@pytest.mark.parametrize(
    "action, convocation, refusal",
    [
        ("post", row(), None),
        ("post", row(postal_at=NOW), "already-delivered"),
        ("post", row(downloaded_at=NOW), "already-delivered"),
        ("post", row(**ON_PAPER, paper_cancelled_at=NOW), None),  # switched back to e-mail: paper may be asked again
        ("withdraw", row(status="cancelled"), "closed"),
        ("withdraw", row(status="superseded"), "closed"),
        ("withdraw", row(**ON_PAPER), "after-paper"),  # withdrawing the link would not take the paper back
        ("withdraw", row(), None),
        ("unlock", row(), "not-locked"),
        ("unlock", row(locked_until=NOW + timedelta(minutes=5)), None),
        ("unlock", row(locked_until=NOW - timedelta(minutes=5)), "not-locked"),
        ("correct-mobile", row(status="downloaded", downloaded_at=NOW), None),
        ("reset-binding", row(message_id=None, status=None), "not-sealed"),
        ("send-twice", row(), "unknown-action"),
        ("resend", row(), None),
        ("resend", row(status="downloaded", downloaded_at=NOW), None),  # the patient lost it: a new link
        ("resend", row(**ON_PAPER), "after-paper"),
        ("resend", row(**RETURNED), None),  # the post brought it back: the hospital system sends it again
        (
            "resend",
            row(**RETURNED | {"delivery": "postal"}),
            None,
        ),  # also to a patient on paper, once the address is fixed
        ("correct-email", row(status="postal-fallback", postal_at=NOW, postal_reason="email-failed"), None),
        ("correct-email", row(**PRINTED), "after-paper"),
        ("resend", row(status="withdrawn"), "closed"),
        ("correct-email", row(status="expired"), "closed"),
        ("resend", row(appointment_at=NOW - timedelta(minutes=1)), "appointment-past"),
        ("correct-email", row(delivery="postal", status="postal"), "postal-channel"),
        ("email-instead", row(**ON_PAPER), None),
        ("email-instead", row(**ON_PAPER | {"postal_reason": "not-downloaded"}), None),
        ("email-instead", row(**ON_PAPER | {"postal_reason": "patient-request"}), None),
        ("email-instead", row(**PRINTED), "already-printed"),
        ("email-instead", row(**RETURNED), "not-on-paper"),
        ("email-instead", row(), "not-on-paper"),
        ("email-instead", row(**ON_PAPER, paper_cancelled_at=NOW), "not-on-paper"),
        ("email-instead", row(**ON_PAPER | {"postal_reason": "no-email"}), "no-email-channel"),
        ("email-instead", row(**ON_PAPER | {"postal_reason": "email-failed"}), "no-email-channel"),
        ("email-instead", row(**ON_PAPER | {"delivery": "postal"}), "postal-channel"),
    ],
)
def test_each_action_fits_only_the_states_it_can_change(action, convocation, refusal):
    assert domain.action_refusal(action, convocation, NOW) == refusal


def test_sending_by_post_is_not_offered_twice_while_the_first_is_pending():
    assert domain.action_refusal("post", row(), NOW, [asked("post")]) == "post-pending"
    assert domain.action_refusal("post", row(), NOW, [asked("post", done=True)]) is None


def test_a_letter_is_asked_again_of_the_hospital_system_once_until_the_new_one_is_e_mailed_or_the_wait_is_over():
    wait = timedelta(minutes=30)
    pending = [asked("correct-email", minutes_ago=5)]
    assert domain.action_refusal("resend", row(), NOW, pending, reissue_wait=wait) == "reissue-pending"
    assert domain.action_refusal("correct-email", row(), NOW, pending, reissue_wait=wait) == "reissue-pending"
    assert domain.action_refusal("post", row(), NOW, pending, reissue_wait=wait) is None
    assert domain.reissue_unanswered(pending, NOW, wait) is None
    done = [asked("resend", done=True), asked("unlock")]
    assert domain.action_refusal("correct-email", row(), NOW, done, reissue_wait=wait) is None
    # Never answered: after the wait the letter is no longer blocked, and the console says so.
    late = [asked("resend", minutes_ago=31)]
    assert domain.action_refusal("resend", row(), NOW, late, reissue_wait=wait) is None
    assert domain.reissue_unanswered(late, NOW, wait) == late[0]
    switched = [asked("post", minutes_ago=60, done=True), asked("email-instead", minutes_ago=40)]
    assert domain.reissue_unanswered(switched, NOW, wait) == switched[1]
    assert (
        domain.action_refusal("post", row(**ON_PAPER, paper_cancelled_at=NOW), NOW, switched, reissue_wait=wait) is None
    )


def test_a_corrected_mobile_is_a_mobile_of_an_allowed_country():
    allowed = frozenset({"CH", "LI", "FR", "DE", "IT", "AT"})
    assert domain.parse_mobile("079 123 45 67", allowed) == ("+41791234567", None)
    assert domain.parse_mobile("+33 6 12 34 56 78", allowed) == ("+33612345678", None)
    assert domain.parse_mobile("0900 123 456", allowed) == (None, "mobile-not-mobile")  # premium rate
    assert domain.parse_mobile("+41 22 372 33 11", allowed) == (None, "mobile-not-mobile")  # a landline
    assert domain.parse_mobile("+1 415 555 2671", allowed) == (None, "mobile-country")
    assert domain.parse_mobile("+44 7911 123456", allowed) == (None, "mobile-country")
    assert domain.parse_mobile("not a number", allowed) == (None, "mobile-invalid")


def test_names_are_searched_by_their_words_without_accents_or_case():
    assert domain.name_words("Müller-Lüdi, Zoë") == ["ludi", "muller", "zoe"]
    assert domain.name_words("  DUPONT  marie ") == domain.name_words("Marie Dupont")
    assert domain.name_words("Ælfrida Ørsted") == ["ælfrida", "ørsted"]  # letters kept, only marks dropped
    c, bad = domain.criteria(name="Dupont", birth_date="21.03.1957")
    assert not bad and c.birth_date == date(1957, 3, 21) and c.about_patient
    assert "Dupont" not in c.summary() and "1957" not in c.summary() and "patient-name" in c.summary()
    c, bad = domain.criteria(name="--", birth_date="1957-13-01")
    assert set(bad) == {"name", "birth_date"}


def test_the_figures_period_is_the_last_30_days_unless_typed():
    today = date(2026, 12, 1)
    p, bad = domain.period(today=today)
    assert not bad and (p.start, p.end, p.days) == (date(2026, 11, 2), today, 3)
    p, bad = domain.period(date_from="2026-11-01", date_to="2026-11-30", days="7", today=today)
    assert not bad and p.days == 7 and p.bounds[1] - p.bounds[0] == timedelta(days=30)
    _, bad = domain.period(date_from="2026-12-02", date_to="2026-12-01", days="-1", today=today)
    assert set(bad) == {"date_from", "days"}


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
    assert secretary.knows_patient_of("cardiology") and not secretary.knows_patient_of("neurology")
    supervisor = staff_identity("s2", "Sophie", ["supervisor"], [])
    assert supervisor.sees("neurology") and supervisor.can_audit and not supervisor.can_act
    assert not supervisor.knows_patient_of("neurology")  # who the patient is: the letter's department only
    manager = staff_identity("s5", "Marc", ["manager"], ["cardiology", "neurology"])
    assert manager.can_count and not manager.can_read and not manager.can_act and not manager.can_audit
    assert manager.scope() == ["cardiology", "neurology"] and not manager.knows_patient_of("cardiology")
    assert staff_identity("s3", "Nobody", ["nurse"], ["cardiology"]) is None
    assert staff_identity("s4", "No department", ["secretary"], []) is None


def test_the_audit_export_cannot_run_formulas_in_a_spreadsheet():
    assert _csv_safe('=HYPERLINK("x")').startswith("'")
    assert _csv_safe("+41 22") == "'+41 22" and _csv_safe("patient called") == "patient called"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated(language):
    with open(LOCALE / language / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    missing = [m.id for m in catalog if m.id and not m.string]
    assert not missing, missing


@pytest.mark.parametrize(
    "language, title",
    [
        ("fr", "Trouver une convocation"),
        ("de", "Ein Aufgebot finden"),
        ("it", "Trovare una convocazione"),
        ("en", "Find a convocation"),
    ],
)
def test_the_pages_speak_the_chosen_language(language, title):
    pages = Pages(SecretariatSettings(), console=None, oidc=None)
    request = Request(
        {"type": "http", "method": "GET", "path": "/search", "headers": [], "query_string": f"lang={language}".encode()}
    )
    who = staff_identity("s1", "Alice", ["secretary"], ["cardiology"])
    html = pages.page(
        request,
        "search.html",
        who,
        criteria=domain.Criteria(),
        bad=[],
        rows=None,
        refused=False,
        worklists=domain.WORKLISTS,
        reissue_wait=1800,
    ).body.decode()
    assert f'<html lang="{language}">' in html and title in html
    assert '<script src="/static/console.js"></script>' in html and "<script>" not in html
