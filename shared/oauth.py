"""Access and ID tokens of the hospital's OpenID provider, verified against its published keys.

Used by every service that accepts the hospital's tokens (the secretariat's console and API, the hospital
gateway's FHIR API): discovery document, JWKS (fetched again once when a token names an unknown key:
rotation), RS256 only, issuer, audience, expiry and subject required, 30 s of clock leeway.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

LEEWAY_SECONDS = 30
METADATA_SECONDS = 3600


class Unauthenticated(Exception):
    """A token or sign-in that does not prove who is asking (detail for logs, never for the user)."""


def strings(value) -> list[str]:
    """A claim that may be one string or a list of them (``scope`` arrays, ``departments``)."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class TokenVerifier:
    """The provider at ``issuer``: its metadata and keys, cached, and the tokens it signed."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._metadata: dict | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> dict:
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_SECONDS:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            async with httpx.AsyncClient(timeout=5) as http:
                meta = (await http.get(url)).raise_for_status().json()
            if meta.get("issuer") != self.issuer:  # OpenID Connect Discovery §4.3
                raise Unauthenticated("discovery document names another issuer")
            self._metadata, self._metadata_at = meta, time.monotonic()
        return self._metadata

    async def keys(self, refresh: bool = False) -> KeySet:
        async with self._lock:
            if self._keys is None or refresh:
                meta = await self.metadata()
                async with httpx.AsyncClient(timeout=5) as http:
                    self._keys = KeySet.import_key_set((await http.get(meta["jwks_uri"])).raise_for_status().json())
            return self._keys

    async def verify(self, token: str, *, audience: str) -> dict:
        """The token's claims if our provider signed it for ``audience`` and it is still valid."""
        try:
            keys = await self.keys()
            try:
                decoded = jwt.decode(token, keys, algorithms=["RS256"])
            except (jose_errors.InvalidKeyIdError, jose_errors.MissingKeyError, ValueError):
                decoded = jwt.decode(token, await self.keys(refresh=True), algorithms=["RS256"])  # key rotation
            JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (jose_errors.JoseError, ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated(f"token refused: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise Unauthenticated(f"provider unreachable: {type(exc).__name__}") from None
        return decoded.claims

    async def client(self, bearer: str, *, audience: str, scope: str) -> dict:
        """An OAuth2 client-credentials access token for ``audience`` that grants ``scope``: its claims."""
        claims = await self.verify(bearer, audience=audience)
        if scope not in str(claims.get("scope", "")).split():
            raise Unauthenticated(f"token lacks the {scope} scope")
        return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
