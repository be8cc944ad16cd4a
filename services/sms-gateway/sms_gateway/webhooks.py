"""Delivery-report webhooks on the gateway's own HTTP app.

POST /webhooks/twilio/status   form fields MessageSid, MessageStatus, ErrorCode; X-Twilio-Signature
POST /webhooks/generic/status  JSON {id, reference, status, error_code}; X-Signature: sha256=<hex>

A report whose signature does not verify is refused with 403 and changes nothing. A valid one is
answered 204 whatever it changed (a provider's retry could not do better). A body over the cap of
every endpoint (shared/http.py) is refused with 413 before it is read whole or its signature checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
from fastapi import APIRouter, Request, Response

from shared.logs import get_logger
from shared.settings import secret
from sms_gateway.metrics import SMS_REPORTS
from sms_gateway.reports import record_report
from sms_gateway.rules import Report
from sms_gateway.settings import SmsSettings
from sms_gateway.signatures import valid_generic_signature, valid_twilio_signature

log = get_logger(__name__)


def public_url(settings: SmsSettings, request: Request) -> str:
    """The URL the provider called: our public base URL plus the path (and query) it requested."""
    if not settings.sms_callback_base_url:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{settings.sms_callback_base_url.rstrip('/')}{request.url.path}{query}"


def twilio_report(params: dict[str, str]) -> Report | None:
    sid, status = (
        params.get("MessageSid") or params.get("SmsSid"),
        params.get("MessageStatus") or params.get("SmsStatus"),
    )
    if not sid or not status:
        return None
    return Report("twilio", sid, status, params.get("ErrorCode") or None)


def generic_report(body: bytes) -> Report | None:
    try:
        data = json.loads(body)
        code = data.get("error_code")
        return Report("generic", str(data["id"]), str(data["status"]), None if code in (None, "") else str(code))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def refused(provider: str, outcome: str, status: int) -> Response:
    SMS_REPORTS.labels(provider, outcome).inc()
    log.warning("delivery report refused", provider=provider, outcome=outcome)
    return Response(status_code=status)


def webhook_router(settings: SmsSettings, pool: Callable[[], asyncpg.Pool]) -> APIRouter:
    router = APIRouter(prefix="/webhooks", include_in_schema=False)

    @router.post("/twilio/status")
    async def twilio_status(request: Request) -> Response:
        params = [(k, v) for k, v in (await request.form()).multi_items() if isinstance(v, str)]
        if not valid_twilio_signature(
            settings.sms_auth_token.get_secret_value(),
            public_url(settings, request),
            params,
            request.headers.get("x-twilio-signature", ""),
        ):
            return refused("twilio", "bad-signature", 403)
        if (report := twilio_report(dict(params))) is None:
            return refused("twilio", "malformed", 400)
        await record_report(pool(), report)
        return Response(status_code=204)

    @router.post("/generic/status")
    async def generic_status(request: Request) -> Response:
        body = await request.body()
        if not valid_generic_signature(
            secret(settings.sms_generic_token), body, request.headers.get("x-signature", "")
        ):
            return refused("generic", "bad-signature", 403)
        if (report := generic_report(body)) is None:
            return refused("generic", "malformed", 400)
        await record_report(pool(), report)
        return Response(status_code=204)

    return router
