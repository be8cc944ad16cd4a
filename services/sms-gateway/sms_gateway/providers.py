"""SMS provider adapters. Twilio's Messages resource is the reference shape:
form POST to /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP basic auth
(https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Accepted:
    provider: str
    provider_message_id: str
    status: str


@dataclass(frozen=True)
class ProviderError(Exception):
    """``permanent``: retrying the same request cannot succeed (e.g. an invalid number)."""

    provider: str
    permanent: bool
    code: str | None
    reason: str


def _transient_status(status: int) -> bool:
    # 401/403 are configuration errors: retrying after the fix succeeds, so do not drop the code.
    return status >= 500 or status in (401, 403, 408, 429)


class TwilioProvider:
    name = "twilio"

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, account_sid: str, auth_token: str,
                 sender: str) -> None:
        self.client, self.base_url = client, base_url.rstrip("/")
        self.account_sid, self.auth_token, self.sender = account_sid, auth_token, sender

    async def send(self, to: str, body: str, *, status_callback: str | None = None) -> Accepted:
        form = {"To": to, "From": self.sender, "Body": body}
        if status_callback:
            form["StatusCallback"] = status_callback
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        try:
            response = await self.client.post(url, data=form, auth=(self.account_sid, self.auth_token))
        except httpx.TimeoutException:
            raise ProviderError(self.name, False, "timeout", "the provider did not answer in time") from None
        except httpx.TransportError as exc:
            raise ProviderError(self.name, False, "connection", type(exc).__name__) from None
        if response.status_code in (200, 201):
            data = response.json()
            return Accepted(self.name, data["sid"], data.get("status", "queued"))
        code, reason = str(response.status_code), f"HTTP {response.status_code}"
        try:
            err = response.json()
            code, reason = str(err.get("code", code)), str(err.get("message", reason))[:300]
        except ValueError:
            pass
        raise ProviderError(self.name, not _transient_status(response.status_code), code, reason)
