"""The key store's client: the period keys that the issuer seals under and the portal opens with.

A period key is one per period of letters' expiry (a week by default), kept by the key store
(services/key-store) outside every database and backup, and destroyed once every letter of its period has
expired (docs/architecture.md#period-keys). The issuer asks for the period of a letter's expiry (created on
first use), the portal for a period by its id. Keys are kept in this process's memory while their period
lasts and forgotten at its end; a period the store refuses, has destroyed or cannot give is
:class:`PeriodKeyUnavailable`, with a short reason code that labels the metric and the dead letter.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from shared.logs import get_logger
from shared.settings import SecretKey

log = get_logger(__name__)
TRIES = 3  # a store that does not answer is asked again after 0.2 s and 0.6 s, then given up on
TIMEOUT_SECONDS = 2.0


class PeriodKeyUnavailable(Exception):
    """No period key for this letter. ``reason``: unreachable (no answer, or a server error), refused (this
    caller is not allowed), closed (the period has ended: nothing may be sealed under it any more),
    destroyed, unknown (no such period), unsafe (the store's period would end before the letter)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class PeriodKey:
    period_id: str
    key: bytes
    starts_at: datetime
    ends_at: datetime  # every letter sealed under it expires before this
    destroy_after: datetime  # the store destroys it from then on (ends_at + its grace)

    def __repr__(self) -> str:  # never the key
        return f"PeriodKey({self.period_id}, ends_at={self.ends_at.isoformat()})"


def _parse(body: dict) -> PeriodKey:
    return PeriodKey(
        period_id=body["period_id"],
        key=SecretKey(base64.b64decode(body["key"])),
        starts_at=datetime.fromisoformat(body["starts_at"]),
        ends_at=datetime.fromisoformat(body["ends_at"]),
        destroy_after=datetime.fromisoformat(body["destroy_after"]),
    )


class KeyStore:
    """The key store as one caller (issuer or portal) sees it, authenticated by its bearer token."""

    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, self._token, self._transport = url.rstrip("/"), token, transport
        self._keys: dict[str, PeriodKey] = {}

    def _forget_ended(self, now: datetime) -> None:
        for period_id in [p for p, k in self._keys.items() if k.ends_at <= now]:
            del self._keys[period_id]

    async def for_expiry(self, expires_at: datetime) -> PeriodKey:
        """The period key to seal a letter expiring at ``expires_at`` under (the issuer's)."""
        now = datetime.now(timezone.utc)
        self._forget_ended(now)
        key = next((k for k in self._keys.values() if k.starts_at <= expires_at < k.ends_at), None)
        if key is None:
            key = _parse(await self._ask("POST", "/v1/periods", {"expires_at": expires_at.isoformat()}))
            self._keys[key.period_id] = key
        # Never seal under a period that may be destroyed while the letter is live, nor one already over.
        if not (key.starts_at <= expires_at < key.ends_at <= key.destroy_after) or key.ends_at <= now:
            raise PeriodKeyUnavailable("unsafe", f"period {key.period_id} does not outlive a letter it would seal")
        return key

    async def get(self, period_id: str, *, again: bool = False) -> PeriodKey:
        """A period's key by its id (the portal's, to open a letter). ``again``: ask the store even if this
        process holds the key (it may have been made anew, after the store lost its volume)."""
        self._forget_ended(datetime.now(timezone.utc))
        if again or (key := self._keys.get(period_id)) is None:
            key = _parse(await self._ask("GET", f"/v1/periods/{period_id}"))
            self._keys[key.period_id] = key
        return key

    async def _ask(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self._token}"}
        for attempt in range(TRIES):
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, transport=self._transport) as client:
                    answer = await client.request(method, self.url + path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"the key store does not answer ({type(exc).__name__})"
            else:
                if answer.status_code == 200:
                    return answer.json()
                if answer.status_code in (401, 403):
                    raise PeriodKeyUnavailable("refused", f"the key store refused this service ({answer.status_code})")
                if answer.status_code == 404:
                    raise PeriodKeyUnavailable("unknown", f"the key store has no period {path.rsplit('/', 1)[-1]}")
                if answer.status_code == 409:
                    raise PeriodKeyUnavailable("closed", answer.json().get("detail", "the period has ended"))
                if answer.status_code == 410:
                    raise PeriodKeyUnavailable("destroyed", answer.json().get("detail", "the period key is destroyed"))
                problem = f"the key store answered {answer.status_code}"
            if attempt + 1 < TRIES:
                log.warning("key store request failed; trying again", detail=problem)
                await asyncio.sleep(0.2 * 3**attempt)
        raise PeriodKeyUnavailable("unreachable", problem)
