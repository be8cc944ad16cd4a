"""How the sms-gateway authenticates delivery reports (Twilio and generic), without I/O."""

from __future__ import annotations

import json

from devinbox import generic_signature as devinbox_generic_signature
from devinbox import twilio_signature as devinbox_twilio_signature
from sms_gateway.signatures import (
    generic_signature,
    twilio_signature,
    valid_generic_signature,
    valid_twilio_signature,
)

# The worked example of https://www.twilio.com/docs/usage/security (auth token "12345").
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675310",
    "Digits": "1234",
    "From": "+14158675310",
    "To": "+18005551212",
}
DOC_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_twilio_signature_matches_twilios_documented_example():
    assert twilio_signature("12345", DOC_URL, DOC_PARAMS.items()) == DOC_SIGNATURE
    assert valid_twilio_signature("12345", DOC_URL, DOC_PARAMS.items(), DOC_SIGNATURE)


def test_twilio_signature_does_not_depend_on_the_order_the_fields_arrive_in():
    assert valid_twilio_signature("12345", DOC_URL, reversed(list(DOC_PARAMS.items())), DOC_SIGNATURE)


def test_a_changed_field_url_or_token_or_a_missing_signature_is_refused():
    assert not valid_twilio_signature("12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}.items(), DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL.replace("https", "http"), DOC_PARAMS.items(), DOC_SIGNATURE)
    assert not valid_twilio_signature("54321", DOC_URL, DOC_PARAMS.items(), DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL, DOC_PARAMS.items(), "")
    unsigned = twilio_signature("", DOC_URL, DOC_PARAMS.items())
    assert not valid_twilio_signature("", DOC_URL, DOC_PARAMS.items(), unsigned)
    assert not valid_twilio_signature("12345", DOC_URL, [*DOC_PARAMS.items(), ("Extra", "1")], DOC_SIGNATURE)


def test_the_default_port_may_or_may_not_be_in_the_url_twilio_signed():
    url = "https://gateway.hug.example/webhooks/twilio/status"
    with_port = "https://gateway.hug.example:443/webhooks/twilio/status"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert valid_twilio_signature("tok", url, params.items(), twilio_signature("tok", with_port, params.items()))
    assert valid_twilio_signature("tok", with_port, params.items(), twilio_signature("tok", url, params.items()))
    other_port = "https://gateway.hug.example:8443/webhooks/twilio/status"
    assert not valid_twilio_signature("tok", url, params.items(), twilio_signature("tok", other_port, params.items()))


def test_the_gateway_and_the_devinbox_sign_twilio_callbacks_alike():
    url, params = (
        "http://127.0.0.1:8003/webhooks/twilio/status",
        {"MessageSid": "SMab", "MessageStatus": "sent", "To": "+41791234567", "ErrorCode": "30003"},
    )
    assert twilio_signature("tok", url, params.items()) == devinbox_twilio_signature("tok", url, params)


def test_generic_signature_is_a_hex_hmac_sha256_of_the_raw_body_like_the_devinbox():
    body = json.dumps({"id": "gm1", "reference": "r", "status": "delivered", "error_code": None}).encode()
    assert generic_signature("tok", body) == devinbox_generic_signature("tok", body)
    assert valid_generic_signature("tok", body, devinbox_generic_signature("tok", body))
    assert not valid_generic_signature("tok", body + b" ", devinbox_generic_signature("tok", body))
    assert not valid_generic_signature("other", body, devinbox_generic_signature("tok", body))
    assert not valid_generic_signature("tok", body, "")
    assert not valid_generic_signature("", body, generic_signature("", body))
