"""Issue #7 items 1, 11, 13 without I/O: control characters in contracts, header building, failure
reasons without outside text, PDFs with active content."""

from __future__ import annotations

import io
import json
import uuid

import aiosmtplib
import pytest
from pydantic import ValidationError
from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, TextStringObject

from devstack.sample import convocation_event, sample_pdf
from issuer.pdfcheck import UnreadablePdf, active_content
from mailer.compose import UnsafeHeader, build_message, envelope_sender
from mailer.emails import RenderedEmail
from mailer.settings import MailerSettings
from mailer.smtp import classify
from shared.consumer import Rejected, parse_envelope
from shared.contracts import CATALOGUE, ConvocationCreatedV1, Envelope

RENDERED = RenderedEmail("Votre convocation", "text", "<p>html</p>")


def build(**kw):
    args = dict(
        mail_from="HUG <convocations@hug.example>",
        to_name="Marie Dupont",
        to_address="marie@example.ch",
        message_id=uuid.uuid4(),
        language="fr",
    )
    return build_message(RENDERED, **{**args, **kw})


@pytest.mark.parametrize(
    "name",
    [
        "Marie\r\n Bcc: attacker@evil.example",
        "Marie\r\nBcc: attacker@evil.example",
        "Marie\nDupont",
        "Marie\x00",
        "Marie\x85Dupont",
        "Marie\u2028Dupont",
        "Marie\tD",
    ],
)
def test_a_control_character_in_the_patients_name_dead_letters_the_event(name):
    event = convocation_event(pdf=sample_pdf())
    event["data"]["patient"]["name"] = name
    with pytest.raises(Rejected) as exc:
        parse_envelope(ConvocationCreatedV1, json.dumps(event).encode(), "q")
    assert exc.value.reason == "invalid-event"
    assert "data.patient.name" in exc.value.detail and "control character" in exc.value.detail
    assert "attacker" not in exc.value.detail and "Dupont" not in exc.value.detail


def test_instructions_may_span_lines_but_hold_no_other_control_character():
    event = convocation_event(pdf=sample_pdf())
    event["data"]["appointment"]["instructions"] = "Venez à jeun.\r\nApportez vos médicaments.\n\t- la carte"
    assert Envelope[ConvocationCreatedV1].model_validate(event).data.appointment.instructions.count("\n") == 2
    event["data"]["appointment"]["instructions"] = "Venez\x1b[31m à jeun"
    with pytest.raises(ValidationError, match="U\\+001B"):
        Envelope[ConvocationCreatedV1].model_validate(event)


def _string_leaves(schema: dict, defs: dict, path: str = ""):
    """(path, schema) of every string-valued property of a JSON schema, following $refs and unions."""
    if "$ref" in schema:
        yield from _string_leaves(defs[schema["$ref"].rsplit("/", 1)[1]], defs, path)
        return
    for branch in schema.get("anyOf", []) + schema.get("allOf", []):
        yield from _string_leaves(branch, defs, path)
    if schema.get("type") == "string":
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _string_leaves(sub, defs, f"{path}.{name}")


@pytest.mark.parametrize("routing_key", list(CATALOGUE))
def test_every_free_text_field_of_every_contract_refuses_control_characters(routing_key):
    """A field added later without Line/Text (or its own pattern) fails here."""
    schema = Envelope[CATALOGUE[routing_key]].model_json_schema()
    defs = schema.get("$defs", {})
    unguarded = [
        path
        for path, leaf in _string_leaves(schema, defs)
        if "pattern" not in leaf
        and "enum" not in leaf
        and "const" not in leaf
        and leaf.get("format") not in ("uuid", "date-time", "date")
    ]  # parsed: no free text
    assert not unguarded, f"string fields without a control-character rule: {unguarded}"


def test_every_header_value_is_checked_and_names_are_encoded():
    msg = build(to_name='Dupont, Marie "la" <x@y>')
    to = msg["To"]
    assert to.startswith("=?utf-8?") and to.endswith(" <marie@example.ch>") and "\n" not in to
    for kw in (
        {"to_name": "Marie\r\n Bcc: attacker@evil.example"},
        {"to_address": "marie@example.ch\r\nBcc: a@b"},
        {"to_address": "marie@example.ch, attacker@evil.example"},
        {"to_address": "<a@b>"},
        {"mail_from": "HUG <c@hug.example>\nBcc: a@b"},
    ):
        with pytest.raises(UnsafeHeader) as exc:
            build(**kw)
        assert "attacker" not in str(exc.value) and "Marie" not in str(exc.value)


def test_a_long_name_folds_inside_the_to_header_and_adds_no_header():
    msg = build(to_name="Marie-Hélène " * 15)
    headers = msg.as_string().split("\n\n", 1)[0]
    assert [line.split(":")[0] for line in headers.splitlines() if not line.startswith((" ", "\t"))] == [
        "Content-Type",
        "MIME-Version",
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Content-Language",
        "Auto-Submitted",
    ]


def test_the_envelope_sender_is_the_plain_address_of_mail_from(monkeypatch):
    assert envelope_sender("Hôpitaux Universitaires de Genève <convocations@hug.example>") == "convocations@hug.example"
    monkeypatch.setenv("MAIL_FROM", "HUG <c@hug.example>\r\nBcc: a@evil.example")
    with pytest.raises(ValidationError, match="MAIL_FROM contains a control character"):
        MailerSettings()


def test_failure_reasons_keep_codes_never_the_relays_or_an_exceptions_text():
    name, address = "Marie Dupont", "marie.dupont@example.ch"
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, f"5.1.1 <{address}> ({name}): Recipient address rejected", address)]
    )
    assert classify(refused).reason == "recipient-refused 5.1.1"
    data = aiosmtplib.SMTPDataError(554, f"Message for {name} <{address}> refused")
    assert (classify(data).code, classify(data).reason) == (554, "relay-refused")
    local = classify(UnicodeEncodeError("ascii", name, 0, 1, f"cannot encode {name}"))
    assert local.reason == "local-error UnicodeEncodeError" and not local.permanent
    assert classify(aiosmtplib.SMTPServerDisconnected(f"bye {name}")).reason == "local-error SMTPServerDisconnected"


def _pdf_with(edit) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(sample_pdf("Convocation")))
    edit(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _open_action(action):
    return lambda w: w._root_object.__setitem__(NameObject("/OpenAction"), action(w))


def test_plain_letters_pass_the_active_content_check():
    from issuer.render import render_convocation_pdf

    letter = Envelope[ConvocationCreatedV1].model_validate(convocation_event(pdf=sample_pdf())).data
    assert active_content(sample_pdf("Convocation")) is None
    assert active_content(render_convocation_pdf(letter, hospital_name="HUG")) is None
    # Opening on a page (a destination, as office suites write) is not an action.
    assert (
        active_content(
            _pdf_with(_open_action(lambda w: ArrayObject([w.pages[0].indirect_reference, NameObject("/Fit")])))
        )
        is None
    )


@pytest.mark.parametrize(
    "edit,found",
    [
        (
            _open_action(
                lambda w: DictionaryObject(
                    {NameObject("/S"): NameObject("/JavaScript"), NameObject("/JS"): TextStringObject("app.alert(1)")}
                )
            ),
            "/OpenAction JavaScript",
        ),
        (
            _open_action(
                lambda w: DictionaryObject(
                    {NameObject("/S"): NameObject("/Launch"), NameObject("/F"): TextStringObject("calc.exe")}
                )
            ),
            "/OpenAction Launch",
        ),
        (lambda w: w.add_attachment("invoice.exe", b"MZ"), "embedded file"),
    ],
)
def test_active_content_is_found(edit, found):
    assert active_content(_pdf_with(edit)) == found


def test_active_content_is_found_in_page_actions_and_escaped_names():
    pdf = sample_pdf("Convocation")
    page_aa = pdf.replace(b"/Contents 4 0 R", b"/Contents 4 0 R /AA << /O << /S /Launch /F (x.exe) >> >>")
    assert active_content(page_aa) == "additional actions (/AA)"
    escaped = pdf.replace(b"/Pages 2 0 R >>", b"/Pages 2 0 R /OpenAction << /S /J#61vaScript /JS (x) >> >>")
    assert active_content(escaped) == "/OpenAction JavaScript"
    with pytest.raises(UnreadablePdf):
        active_content(b"%PDF-1.4 nothing else")


def test_a_providers_error_text_becomes_one_line_fit_for_sms_failed():
    from sms_gateway.providers import safe_reason

    assert safe_reason("rejected\r\nX-Injected: 1\x00") == "rejected X-Injected: 1"
