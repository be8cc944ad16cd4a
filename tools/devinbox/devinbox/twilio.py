"""Twilio Messages API shapes: request signing, error bodies, segment count and the message resource.

``twilio_signature`` is the algorithm Twilio documents for ``X-Twilio-Signature``; the sms-gateway
can import it to sign or verify status callbacks in its own tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

API_VERSION = "2010-04-01"
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
# A sender is an E.164 number, a short code, or an alphanumeric sender ID (max 11 chars, one letter).
SENDER_RE = re.compile(r"^(\+[1-9]\d{6,14}|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$")
GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = "^{}\\[~]|€\f"  # escape sequences: two septets each
ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """base64(HMAC-SHA1(auth_token, url + key1 + value1 + key2 + value2 ...)), params sorted by key."""
    pairs = params.items() if isinstance(params, Mapping) else params
    data = url + "".join(k + v for k, v in sorted(pairs))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def valid_twilio_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    return hmac.compare_digest(twilio_signature(auth_token, url, params).encode(), signature.encode())


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """The JSON body Twilio returns with every 4xx/5xx."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def num_segments(body: str) -> int:
    """SMS parts: GSM-7 allows 160 septets (153 per part when split), UCS-2 70 characters (67)."""
    if all(c in GSM7 or c in GSM7_EXT for c in body):
        units, single, multi = len(body) + sum(c in GSM7_EXT for c in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else -(-units // multi)


def new_sid(prefix: str = "SM") -> str:
    return prefix + uuid.uuid4().hex


def rfc2822_now() -> str:
    return format_datetime(datetime.now(timezone.utc))  # e.g. "Thu, 26 Nov 2026 14:00:00 +0000"


def message_resource(sms: Mapping[str, Any]) -> dict[str, Any]:
    """A caught SMS rendered as Twilio's Message resource (numbers as strings, like Twilio)."""
    uri = f"/{API_VERSION}/Accounts/{sms['account_sid']}/Messages/{sms['id']}"
    code = sms["error_code"]
    return {
        "account_sid": sms["account_sid"],
        "api_version": API_VERSION,
        "body": sms["body"],
        "date_created": sms["date_created"],
        "date_sent": sms.get("date_sent"),
        "date_updated": sms["date_updated"],
        "direction": "outbound-api",
        "error_code": code,
        "error_message": None if code is None else ERROR_MESSAGES.get(code, "Delivery failed"),
        "from": sms["from_"],
        "messaging_service_sid": sms.get("messaging_service_sid"),
        "num_media": "0",
        "num_segments": str(num_segments(sms["body"])),
        "price": None,
        "price_unit": "USD",
        "sid": sms["id"],
        "status": sms["status"],
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": sms["to"],
        "uri": f"{uri}.json",
    }
