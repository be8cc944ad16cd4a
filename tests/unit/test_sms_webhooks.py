"""Delivery-report webhooks without a database: signatures are checked before anything is read or stored."""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient

from devinbox import generic_signature, twilio_signature
from shared.http import BodyLimit
from sms_gateway.settings import SmsSettings
from sms_gateway.webhooks import generic_report, twilio_report, webhook_router

PUBLIC = "https://sms-gateway.hug.example"
SETTINGS = SmsSettings(
    sms_auth_token="twilio-token",
    sms_generic_url="https://sms.test/generic/v1/messages",
    sms_generic_token="generic-token",
    sms_callback_base_url=PUBLIC,
)


def no_database():
    raise AssertionError("the database must not be touched")


def app_client() -> TestClient:
    app = FastAPI()
    app.add_middleware(BodyLimit)  # as Runtime.http_app() does for every service
    app.include_router(webhook_router(SETTINGS, no_database))
    return TestClient(app, base_url="http://10.0.0.7:8003")  # behind a proxy: not the URL Twilio signed


PARAMS = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003", "AccountSid": "AC1"}


def test_a_twilio_report_with_a_forged_or_missing_signature_is_refused_with_403():
    client = app_client()
    forged = twilio_signature("not-the-token", f"{PUBLIC}/webhooks/twilio/status", PARAMS)
    response = client.post("/webhooks/twilio/status", data=PARAMS, headers={"X-Twilio-Signature": forged})
    assert response.status_code == 403
    assert client.post("/webhooks/twilio/status", data=PARAMS).status_code == 403


def test_twilio_is_checked_against_the_public_url_not_the_one_the_proxy_forwards_to():
    client = app_client()
    internal = twilio_signature("twilio-token", "http://10.0.0.7:8003/webhooks/twilio/status", PARAMS)
    assert (
        client.post("/webhooks/twilio/status", data=PARAMS, headers={"X-Twilio-Signature": internal}).status_code == 403
    )


def test_a_signed_but_incomplete_twilio_report_is_a_bad_request():
    client, params = app_client(), {"AccountSid": "AC1"}
    signature = twilio_signature("twilio-token", f"{PUBLIC}/webhooks/twilio/status", params)
    assert (
        client.post("/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature}).status_code
        == 400
    )


def test_a_generic_report_with_a_forged_signature_is_refused_with_403():
    client = app_client()
    body = json.dumps({"id": "gm1", "reference": "r", "status": "failed", "error_code": 30003}).encode()
    for signature in (generic_signature("guess", body), "", "sha256=" + "0" * 64):
        response = client.post("/webhooks/generic/status", content=body, headers={"X-Signature": signature})
        assert response.status_code == 403


def test_an_oversized_report_is_refused_unread():
    client = app_client()
    response = client.post("/webhooks/generic/status", content=b"x" * (64 * 1024 + 1))
    assert response.status_code == 413


def test_reports_are_read_from_each_providers_fields():
    assert twilio_report(PARAMS) == twilio_report({"SmsSid": "SM1", "SmsStatus": "undelivered", "ErrorCode": "30003"})
    report = twilio_report(PARAMS)
    assert (report.provider, report.provider_message_id, report.status, report.error_code) == (
        "twilio",
        "SM1",
        "failed",
        "30003",
    )
    assert twilio_report({"MessageSid": "SM1", "MessageStatus": "delivered", "ErrorCode": ""}).error_code is None
    generic = generic_report(b'{"id": "gm1", "reference": "r", "status": "failed", "error_code": 30005}')
    assert (generic.provider, generic.provider_message_id, generic.status, generic.error_code) == (
        "generic",
        "gm1",
        "failed",
        "30005",
    )
    assert generic_report(b'{"id": "gm1", "status": "delivered", "error_code": null}').error_code is None
    assert generic_report(b"not json") is None and generic_report(b'{"status": "failed"}') is None
    assert generic_report(b"[1, 2]") is None
