"""Unit tests of devinbox's pure parts: signatures, SMS segments, e-mail parsing, the Inbox store."""

from __future__ import annotations

import threading
from email.message import EmailMessage

import pytest

from devinbox import Inbox, SmsFault, generic_signature, parse_email, twilio_signature, valid_twilio_signature
from devinbox.twilio import message_resource, num_segments

TWILIO_DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_twilio_signature_matches_twilios_documented_example() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, TWILIO_DOC_PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    # Parameter order in the request must not matter: they are sorted by key.
    assert twilio_signature("12345", url, list(reversed(TWILIO_DOC_PARAMS.items()))) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_twilio_signature_rejects_tampering() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert valid_twilio_signature("12345", url, TWILIO_DOC_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not valid_twilio_signature(
        "12345", url, {**TWILIO_DOC_PARAMS, "Digits": "9999"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    assert not valid_twilio_signature("wrong", url, TWILIO_DOC_PARAMS, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_generic_signature_is_hmac_sha256_hex_of_raw_body() -> None:
    # Reference value from: printf '%s' '<body>' | openssl dgst -sha256 -hmac secret
    body = b'{"id":"gm1","status":"delivered"}'
    assert generic_signature("secret", body) == (
        "sha256=1790e5c46c9bd35eb77e5020308175e0aa86b2538c84e54f9d5105760ffe3c90"
    )


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("Grüezi Müller, Termin am 3.12." + "x" * 130, 1),  # ü and é are GSM-7
        ("€" * 80, 1),
        ("€" * 81, 2),  # € takes two septets
        ("Привет" * 11 + "abcd", 1),
        ("Привет" * 11 + "abcde", 2),  # 70 / 71 UCS-2 characters
    ],
)
def test_num_segments(body: str, segments: int) -> None:
    assert num_segments(body) == segments


def test_message_resource_has_twilio_shape() -> None:
    res = message_resource(
        {
            "id": "SM" + "a" * 32,
            "account_sid": "AC" + "b" * 32,
            "body": "hi",
            "to": "+41791234567",
            "from_": "HOPITAL",
            "status": "undelivered",
            "error_code": 30003,
            "date_created": "Thu, 26 Nov 2026 14:00:00 +0000",
            "date_updated": "x",
        }
    )
    assert res["uri"] == f"/2010-04-01/Accounts/AC{'b' * 32}/Messages/SM{'a' * 32}.json"
    assert (res["from"], res["num_segments"], res["error_code"]) == ("HOPITAL", "1", 30003)
    assert res["error_message"] == "Unreachable destination handset"


def _multipart(text: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"], msg["Message-ID"] = "Ihr Aufgebot", "a@h.ch", "p@x.ch", "<m1@h.ch>"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def test_parse_email_decodes_bodies_and_extracts_links() -> None:
    long_link = "https://portal.example.ch/c/" + "Ab9-_" * 20 + "?lang=de&x=1"
    parsed = parse_email(
        _multipart(
            f"Öffnen Sie {long_link}.\nOder http://localhost:8000/x)\n",
            "<p><a href='https://html-only.example'>link</a></p>",
        )
    )
    assert parsed["subject"] == "Ihr Aufgebot" and parsed["message_id"] == "<m1@h.ch>"
    assert parsed["text"].startswith("Öffnen Sie https://")  # quoted-printable decoded
    assert parsed["links"] == [long_link, "http://localhost:8000/x"]  # trailing '.' and ')' dropped
    assert "html-only.example" in parsed["html"]


def test_parse_email_survives_garbage() -> None:
    parsed = parse_email(b"\xff\xfe not really an e-mail https://a.example/x")
    assert parsed["links"] == ["https://a.example/x"]


def test_smtp_script_validates_replies_and_command() -> None:
    inbox = Inbox()
    with pytest.raises(ValueError, match="not SMTP replies"):
        inbox.smtp_script(["Try again later"])
    with pytest.raises(ValueError, match="RCPT"):
        inbox.smtp_script(["451 x"], at="MAIL")  # type: ignore[arg-type]
    inbox.smtp_script(["451 4.3.0 Try again later", "550 5.1.1 No such user"])
    assert [inbox.next_smtp_reply("RCPT") for _ in range(3)] == [
        "451 4.3.0 Try again later",
        "550 5.1.1 No such user",
        None,
    ]
    assert inbox.next_smtp_reply("DATA") is None


def test_sms_script_is_per_provider_and_cleared() -> None:
    inbox = Inbox()
    inbox.sms_script("twilio", [503, SmsFault(delay=2.0)])
    assert inbox.next_sms_fault("generic") is None
    assert inbox.next_sms_fault("twilio") == SmsFault(status=503)
    inbox.sms_fail_delivery(30005, status="failed")
    inbox.clear()
    assert inbox.next_sms_fault("twilio") is None and inbox.next_delivery_failure() is None


def test_wait_for_sms_wakes_on_status_change_from_another_thread() -> None:
    inbox = Inbox()
    inbox.add_sms(
        id="SM1",
        provider="twilio",
        to="+41791234567",
        from_="X",
        body="Code 123456",
        status="queued",
        status_callback=None,
    )
    threading.Timer(0.05, inbox.update_sms, args=("SM1",), kwargs={"status": "delivered"}).start()
    sms = inbox.wait_for_sms(lambda s: s["status"] == "delivered", timeout=2, to="+41791234567")
    assert sms["body"] == "Code 123456"


def test_wait_timeout_says_what_was_caught() -> None:
    inbox = Inbox()
    inbox.add_email("a@h.ch", ["someone@x.ch"], _multipart("hi", "<p>hi</p>"))
    with pytest.raises(TimeoutError) as err:
        inbox.wait_for_email(timeout=0.05, to="patient@x.ch")
    assert "no matching e-mail arrived within 0.05s" in str(err.value)
    assert "someone@x.ch" in str(err.value) and "Ihr Aufgebot" in str(err.value)


@pytest.mark.asyncio
async def test_await_email_returns_first_match() -> None:
    inbox = Inbox()
    inbox.add_email("a@h.ch", ["one@x.ch"], _multipart("first", "<p/>"))
    inbox.add_email("a@h.ch", ["two@x.ch"], _multipart("second", "<p/>"))
    assert (await inbox.await_email(to="two@x.ch", timeout=1))["text"].strip() == "second"
    with pytest.raises(TimeoutError):
        await inbox.await_email(lambda m: False, timeout=0.05)
