"""Provider adapters against httpx.MockTransport: request shapes and how each failure is classified."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

import httpx
import pytest

from sms_gateway.providers import GenericProvider, ProviderError, TwilioProvider, safe_reason

SID, TOKEN = "AC" + "ab" * 16, "auth-token"
TO, TEXT = "+41791234567", "123456 is your code\n\n@portal.test #123456"


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=httpx.Timeout(1.0))


def twilio(handler) -> TwilioProvider:
    return TwilioProvider(
        client(handler), base_url="https://api.twilio.test/", account_sid=SID, auth_token=TOKEN, sender="HUG"
    )


def generic(handler) -> GenericProvider:
    return GenericProvider(client(handler), url="https://sms.test/generic/v1/messages", token="gen-token")


def twilio_error(status: int, code: int, message: str):
    return lambda request: httpx.Response(status, json={"code": code, "message": message, "status": status})


async def test_twilio_gets_a_form_post_with_basic_auth_and_the_status_callback():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"], seen["auth"] = str(request.url), request.headers["authorization"]
        seen["form"] = dict(parse_qsl(request.content.decode()))
        return httpx.Response(201, json={"sid": "SM123", "status": "queued"})

    accepted = await twilio(handler).send(
        TO, TEXT, reference="c-1", status_callback="https://gw.test/webhooks/twilio/status"
    )
    assert (accepted.provider, accepted.provider_message_id, accepted.status) == ("twilio", "SM123", "queued")
    assert seen["url"] == f"https://api.twilio.test/2010-04-01/Accounts/{SID}/Messages.json"
    assert seen["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert seen["form"] == {
        "To": TO,
        "From": "HUG",
        "Body": TEXT,
        "StatusCallback": "https://gw.test/webhooks/twilio/status",
    }


async def test_the_generic_provider_gets_json_with_a_bearer_token_and_the_reference():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"], seen["body"] = request.headers["authorization"], json.loads(request.content)
        return httpx.Response(202, json={"id": "gm1", "status": "accepted"})

    accepted = await generic(handler).send(TO, TEXT, reference="c-1", status_callback="https://gw.test/cb")
    assert (accepted.provider, accepted.provider_message_id, accepted.status) == ("generic", "gm1", "accepted")
    assert seen == {
        "auth": "Bearer gen-token",
        "body": {"to": TO, "text": TEXT, "reference": "c-1", "callback_url": "https://gw.test/cb"},
    }


async def test_without_a_callback_url_none_is_sent():
    forms = []

    def handler(request: httpx.Request) -> httpx.Response:
        forms.append(dict(parse_qsl(request.content.decode())))
        return httpx.Response(201, json={"sid": "SM1", "status": "queued"})

    await twilio(handler).send(TO, TEXT, reference="c-1", status_callback=None)
    assert "StatusCallback" not in forms[0]


@pytest.mark.parametrize(
    "handler, permanent, code",
    [
        (twilio_error(503, 20503, "Service Unavailable"), False, "20503"),
        (twilio_error(500, 20500, "Internal Server Error"), False, "20500"),
        (twilio_error(429, 20429, "Too Many Requests"), False, "20429"),
        (twilio_error(401, 20003, "Authenticate"), False, "20003"),  # fixable configuration: keep the code
        (twilio_error(400, 21611, "Queue overflow"), False, "21611"),
        (twilio_error(400, 21211, "The 'To' number +41791234567 is not a valid phone number."), True, "21211"),
        (twilio_error(400, 21617, "Body too long"), True, "21617"),
        (lambda request: httpx.Response(502, text="<html>Bad gateway</html>"), False, "502"),
        (lambda request: httpx.Response(201, json={"status": "queued"}), False, "bad-response"),
    ],
)
async def test_twilio_failures_are_transient_or_permanent(handler, permanent, code):
    with pytest.raises(ProviderError) as caught:
        await twilio(handler).send(TO, TEXT, reference="c-1", status_callback=None)
    assert (caught.value.provider, caught.value.permanent, caught.value.code) == ("twilio", permanent, code)


@pytest.mark.parametrize(
    "handler, permanent, code",
    [
        (lambda request: httpx.Response(503, json={"error": "Service Unavailable"}), False, "503"),
        (lambda request: httpx.Response(401, json={"error": "unauthorized"}), False, "401"),
        (lambda request: httpx.Response(422, json={"error": "invalid request"}), True, "422"),
    ],
)
async def test_generic_failures_are_transient_or_permanent(handler, permanent, code):
    with pytest.raises(ProviderError) as caught:
        await generic(handler).send(TO, TEXT, reference="c-1", status_callback=None)
    assert (caught.value.provider, caught.value.permanent, caught.value.code) == ("generic", permanent, code)


@pytest.mark.parametrize(
    "exc, code",
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "connection"),
    ],
)
async def test_time_outs_and_connection_failures_are_transient(exc, code):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    for provider in (twilio(handler), generic(handler)):
        with pytest.raises(ProviderError) as caught:
            await provider.send(TO, TEXT, reference="c-1", status_callback=None)
        assert (caught.value.permanent, caught.value.code) == (False, code)


async def test_a_provider_message_that_echoes_the_number_or_the_code_is_scrubbed():
    provider = twilio(twilio_error(400, 21211, f"The 'To' number {TO} is not valid; body 123456"))
    with pytest.raises(ProviderError) as caught:
        await provider.send(TO, TEXT, reference="c-1", status_callback=None)
    assert TO not in caught.value.reason and "791234567" not in caught.value.reason
    assert "123456" not in caught.value.reason
    assert caught.value.reason.startswith("HTTP 400: The 'To' number [number]")


def test_provider_error_codes_stay_readable():
    assert safe_reason("error 21211 (HTTP 400)") == "error 21211 (HTTP 400)"
