"""Plain business rules and plumbing helpers, without I/O."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import aiosmtplib
import pytest
from pydantic import ValidationError

from devstack.sample import convocation_event, sample_pdf
from issuer import domain
from issuer.settings import IssuerSettings
from mailer.compose import smtp_message_id
from mailer.handlers import portal_link
from mailer.smtp import classify
from shared.consumer import Rejected, _begin_and_claim, parse_envelope
from shared.contracts import ConvocationCreatedV1, Envelope
from shared.logs import scrub
from shared.retry import RetryPolicy
from shared.settings import dev_key

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def created(**kw) -> ConvocationCreatedV1:
    kw.setdefault("pdf", sample_pdf())
    return Envelope[ConvocationCreatedV1].model_validate(convocation_event(**kw)).data


def test_statuses_only_move_forward():
    assert domain.advances("sealed", "e-mailed")
    assert domain.advances("e-mailed", "downloaded")
    assert not domain.advances("downloaded", "e-mailed")  # a late email.sent never undoes a download
    assert domain.advances("downloaded", "expired")


def test_paper_from_the_start_when_asked_or_without_an_address():
    assert domain.postal_reason_at_creation(created(delivery="postal")) == "preference"
    assert domain.postal_reason_at_creation(created(email=None)) == "no-email"
    assert domain.postal_reason_at_creation(created()) is None


def test_paper_fallback_is_due_after_the_deadline_only_for_messages_sealed_before_it():
    appointment = NOW + timedelta(hours=47)
    assert domain.fallback_due(
        appointment_at=appointment, sealed_at=NOW - timedelta(days=3), now=NOW, fallback_hours=48
    )
    assert not domain.fallback_due(
        appointment_at=NOW + timedelta(hours=49), sealed_at=NOW - timedelta(days=3), now=NOW, fallback_hours=48
    )
    # booked at short notice: paper would arrive too late
    assert not domain.fallback_due(
        appointment_at=appointment, sealed_at=NOW - timedelta(hours=1), now=NOW, fallback_hours=48
    )
    assert not domain.fallback_due(
        appointment_at=NOW - timedelta(hours=1), sealed_at=NOW - timedelta(days=3), now=NOW, fallback_hours=48
    )


def test_an_appointment_in_the_past_is_refused():
    assert domain.appointment_problem(created(starts_at=NOW - timedelta(minutes=1)), NOW)
    assert domain.appointment_problem(created(starts_at=NOW + timedelta(minutes=1)), NOW) is None


@pytest.mark.parametrize("raw", ["079 123 45 67", "+41 79 123 45 67", "0041791234567", "0791234567"])
def test_mobile_numbers_in_any_usual_form_become_e164(raw):
    assert created(mobile=raw).patient.mobile == "+41791234567"


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("mobile", "079 123 45", "valid phone"),
        ("email", "not-an-address", "email"),
        ("language", "es", "language"),
    ],
)
def test_invalid_patient_fields_are_refused_with_the_field_named(field, value, reason):
    event = convocation_event(pdf=sample_pdf())
    event["data"]["patient"][field] = value
    with pytest.raises(Rejected) as exc:
        parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q")
    assert exc.value.reason == "invalid-event" and f"data.patient.{field}" in exc.value.detail


def test_a_naive_appointment_time_and_a_fake_pdf_are_refused():
    event = convocation_event(pdf=b"not a pdf at all")
    event["data"]["appointment"]["starts_at"] = "2026-12-14T08:30:00"
    with pytest.raises(Rejected) as exc:
        parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q")
    assert "starts_at" in exc.value.detail and "not a PDF" in exc.value.detail


def test_a_pdf_over_ten_megabytes_is_refused():
    with pytest.raises(ValidationError, match="10 MB"):
        created(pdf=b"%PDF-" + b"0" * (10 * 1024 * 1024))


def test_an_event_on_the_wrong_queue_is_refused():
    event = convocation_event(pdf=sample_pdf())
    event["type"] = "convocation.cancelled"
    with pytest.raises(Rejected) as exc:
        parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q")
    assert exc.value.reason == "wrong-type"


@pytest.mark.parametrize("producer", ["issuer", "access-portal", "Hospital-HIS", ""])
def test_an_event_whose_producer_is_not_the_owner_of_its_type_is_refused(producer):
    event = convocation_event(pdf=sample_pdf())
    assert parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q").producer == "hospital-his"
    event["producer"] = producer
    with pytest.raises(Rejected) as exc:
        parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q")
    assert exc.value.reason == "wrong-producer" and "hospital-his" in exc.value.detail


def test_unknown_fields_are_ignored_so_producers_can_add_fields():
    event = convocation_event(pdf=sample_pdf())
    event["data"]["new_field"] = 1
    event["future_envelope_field"] = "x"
    assert parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q").data.delivery == "email"


def test_smtp_failures_are_classified_transient_or_permanent():
    assert not classify(aiosmtplib.SMTPResponseException(451, "busy")).permanent
    assert classify(aiosmtplib.SMTPResponseException(550, "no such user")).permanent
    assert not classify(aiosmtplib.SMTPServerDisconnected("bye")).permanent
    assert not classify(TimeoutError()).permanent
    refused = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@b.ch")])
    assert classify(refused).permanent and classify(refused).code == 550


def test_the_link_carries_the_secret_in_the_fragment_and_the_message_id_is_stable():
    mid = uuid.uuid4()
    secret = "q6kZ0m3T0aGfXAzyQhPLnWp6hBr5JmUeZ4eB3VvCc9g"
    assert portal_link("https://portal.example/", mid, secret) == f"https://portal.example/m/{mid}#{secret}_Ow0"
    assert smtp_message_id(mid, "HUG <convocations@hug.example>") == f"<{mid}@hug.example>"


def test_retry_delays_are_capped_and_then_exhausted():
    policy = RetryPolicy.parse("5,30,120")
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [5, 30, 120, None]


def test_logs_scrub_numbers_addresses_and_link_secrets_from_free_text():
    line = scrub("sent to +41 79 123 45 67 / 079 123 45 67 / marie@example.ch via /m/x#AbCdEfGhIjKlMnOpQrSt")
    assert "123 45 67" not in line and "marie@" not in line and "AbCdEf" not in line


def test_production_refuses_development_keys(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="development key"):
        IssuerSettings()
    real = "k1:" + dev_key("not-a-dev-key-name")
    for name in ("SEAL_KEYS",):
        monkeypatch.setenv(name, real)
    with pytest.raises(ValidationError, match="development key"):  # the other keys are still dev keys
        IssuerSettings()


def test_server_keys_from_the_environment_keep_their_order_newest_last(monkeypatch):
    monkeypatch.setenv("SEAL_KEYS", f"2025:{dev_key('a')}, 2026:{dev_key('b')}")
    ring = IssuerSettings().seal_keys
    assert list(ring) == ["2025", "2026"] and all(len(k) == 32 for k in ring.values())
    monkeypatch.setenv("SEAL_KEYS", "2025:c2hvcnQ=")
    with pytest.raises(ValidationError, match="32 bytes"):
        IssuerSettings()


def test_a_relays_refusal_naming_the_recipient_is_stored_without_the_address():
    refused = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(
                550, "5.1.1 <marie.dupont@example.ch>: Recipient address rejected", "marie.dupont@example.ch"
            )
        ]
    )
    assert classify(refused).reason == "recipient-refused 5.1.1"  # the code only: no address, no relay text


@pytest.mark.parametrize("setting", ["PATIENT_REF_KEY", "MAILER_FIELD_KEY", "PORTAL_FIELD_KEY", "SEAL_KEYS"])
def test_every_key_setting_is_a_ring_whose_last_key_is_current_and_a_bare_key_is_its_first(monkeypatch, setting):
    monkeypatch.setenv(setting, dev_key("a"))
    ring = getattr(IssuerSettings(), setting.lower())
    assert list(ring) == ["k1"] and ring.current_id == "k1"
    monkeypatch.setenv(setting, f"k1:{dev_key('a')},k2:{dev_key('b')}")
    ring = getattr(IssuerSettings(), setting.lower())
    assert ring.current_id == "k2" and ring["k1"] != ring.current
    for bad, why in ((f"k1:{dev_key('a')},k1:{dev_key('b')}", "once"), (f"k 1:{dev_key('a')}", "key id")):
        monkeypatch.setenv(setting, bad)
        with pytest.raises(ValidationError, match=why):
            IssuerSettings()


def test_production_refuses_a_development_key_anywhere_in_a_ring(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("MAILER_FIELD_KEY", f"k1:{dev_key('mailer-field')},k2:{dev_key('not-a-dev-key-name')}")
    with pytest.raises(ValidationError, match="development key"):
        IssuerSettings()


def test_the_inbox_claim_written_into_its_query_takes_only_a_uuid_and_a_bus_routing_key():
    event_id = uuid.uuid4()
    assert f"'{event_id}', 'convocation.created.v1'" in _begin_and_claim(event_id, "convocation.created.v1")
    with pytest.raises(ValueError):
        _begin_and_claim(event_id, "x'); drop table inbox; --")
    with pytest.raises(ValueError):
        _begin_and_claim(f"{event_id}'", "convocation.created.v1")  # type: ignore[arg-type]


@pytest.mark.parametrize("newlines", [False, True])
def test_a_control_character_is_found_in_ascii_text_as_the_regular_expression_finds_it(newlines):
    """The ASCII fast path of control_character names the same first control as the pattern does."""
    import random
    import re

    from shared.contracts import control_character

    pattern = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]" if newlines else "[\x00-\x1f\x7f-\x9f\u2028\u2029]")
    rng = random.Random(12)
    for _ in range(2000):
        value = "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x20, 0x7F)])) for _ in range(12))
        match = pattern.search(value)
        assert control_character(value, newlines=newlines) == (f"U+{ord(match.group()):04X}" if match else None)
