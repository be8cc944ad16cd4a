"""Authenticating delivery reports: Twilio's X-Twilio-Signature and the generic provider's X-Signature.

Twilio signs base64(HMAC-SHA1(auth token, full URL + each POST parameter's name and value, sorted by
name)) (https://www.twilio.com/docs/usage/security#validating-requests). The URL is the one Twilio
called, i.e. our public URL, not what a proxy forwards to us; like Twilio's own validator, we accept it
with and without the scheme's default port.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.hostname is None:
        return [url]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    if parts.port not in (None, default):
        return [url]
    return list(dict.fromkeys([url, bare, with_port]))


def valid_twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str) -> bool:
    if not signature or not auth_token:
        return False
    params = list(params)
    return any(
        hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), signature.encode())
        for candidate in _port_variants(url)
    )


def generic_signature(token: str, body: bytes) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def valid_generic_signature(token: str, body: bytes, signature: str) -> bool:
    if not signature or not token:
        return False
    return hmac.compare_digest(generic_signature(token, body).encode(), signature.strip().encode())
