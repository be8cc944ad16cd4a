"""SMS provider adapters and how their errors are classified.

- Twilio's Messages resource: form POST to /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP
  basic auth (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).
- A generic JSON API, the failover: POST {to, text, reference, callback_url} with a Bearer token,
  answered 202 {id, status}.

A failure is *transient* (retry later, possibly elsewhere) or *permanent* (this request can never
succeed). Provider error texts may echo the number; they are scrubbed before they go anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from shared.contracts import one_line
from shared.redact import scrub

# Twilio codes sent with a 4xx that still mean "later": too many requests, queue overflow.
TWILIO_TRANSIENT_CODES = frozenset({"20429", "21611"})


@dataclass(frozen=True)
class Accepted:
    provider: str
    provider_message_id: str
    status: str  # the provider's own word ("queued", "accepted")


@dataclass(frozen=True)
class ProviderError(Exception):
    """``permanent``: retrying the same request cannot succeed (e.g. an invalid number)."""

    provider: str
    permanent: bool
    code: str | None
    reason: str


class Provider(Protocol):
    name: str

    async def send(self, to: str, text: str, *, reference: str, status_callback: str | None) -> Accepted: ...


def safe_reason(text: str) -> str:
    """A provider's message on one line, without anything that may be a number or a code (6+ digits)."""
    return one_line(scrub(text))[:300]


def transient_status(status: int) -> bool:
    # 401/403 are configuration errors: retrying after the fix (or at the other provider) succeeds,
    # so do not drop the code.
    return status >= 500 or status in (401, 403, 408, 425, 429)


async def _post(provider: str, client: httpx.AsyncClient, url: str, **kwargs) -> httpx.Response:
    try:
        return await client.post(url, **kwargs)
    except httpx.TimeoutException:
        # The provider may still accept it; a retry may then text the same code twice (harmless).
        raise ProviderError(provider, False, "timeout", "the provider did not answer in time") from None
    except httpx.TransportError as exc:
        raise ProviderError(provider, False, "connection", type(exc).__name__) from None


def _accepted(provider: str, response: httpx.Response, id_key: str, default_status: str) -> Accepted:
    try:
        data = response.json()
        return Accepted(provider, one_line(str(data[id_key])), one_line(str(data.get("status") or default_status)))
    except (ValueError, KeyError, TypeError, AttributeError):
        reason = f"HTTP {response.status_code} without a message id"
        raise ProviderError(provider, False, "bad-response", reason) from None


def _error_body(response: httpx.Response, code_key: str, message_key: str) -> tuple[str, str]:
    code, reason = str(response.status_code), f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return code, reason
    if isinstance(body, dict):
        code = one_line(str(body.get(code_key) or code))[:40]
        reason = f"HTTP {response.status_code}: {body.get(message_key) or reason}"
    return code, safe_reason(reason)


class TwilioProvider:
    name = "twilio"

    def __init__(
        self, client: httpx.AsyncClient, *, base_url: str, account_sid: str, auth_token: str, sender: str
    ) -> None:
        self.client, self.base_url = client, base_url.rstrip("/")
        self.account_sid, self.auth_token, self.sender = account_sid, auth_token, sender

    async def send(self, to: str, text: str, *, reference: str, status_callback: str | None = None) -> Accepted:
        form = {"To": to, "From": self.sender, "Body": text}
        if status_callback:
            form["StatusCallback"] = status_callback
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        response = await _post(self.name, self.client, url, data=form, auth=(self.account_sid, self.auth_token))
        if response.status_code in (200, 201):
            return _accepted(self.name, response, "sid", "queued")
        code, reason = _error_body(response, "code", "message")
        permanent = not transient_status(response.status_code) and code not in TWILIO_TRANSIENT_CODES
        raise ProviderError(self.name, permanent, code, reason)


class GenericProvider:
    name = "generic"

    def __init__(self, client: httpx.AsyncClient, *, url: str, token: str) -> None:
        self.client, self.url, self.token = client, url, token

    async def send(self, to: str, text: str, *, reference: str, status_callback: str | None = None) -> Accepted:
        body = {"to": to, "text": text, "reference": reference}
        if status_callback:
            body["callback_url"] = status_callback
        response = await _post(
            self.name, self.client, self.url, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        if response.status_code in (200, 201, 202):
            return _accepted(self.name, response, "id", "accepted")
        code, reason = _error_body(response, "code", "error")
        raise ProviderError(self.name, not transient_status(response.status_code), code, reason)
