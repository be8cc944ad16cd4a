"""Typed settings from environment variables: one base for every service, one subclass each."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def dev_key(name: str) -> str:
    """A fixed development key: convenient locally, refused in production (see ``_refuse_dev_keys``)."""
    return base64.b64encode(hashlib.sha256(f"convocations-development-{name}".encode()).digest()).decode()


def _decode_key(value: object) -> bytes:
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = base64.b64decode(str(value), validate=True)
        except ValueError:
            raise ValueError("must be base64 of 32 random bytes") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes once base64-decoded, got {len(raw)}")
    return raw


Key32 = Annotated[bytes, BeforeValidator(_decode_key)]


class ServiceSettings(BaseSettings):
    """Settings every service reads. Keys are base64 of 32 random bytes."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/convocations"
    events_exchange: str = Field("convocations", description="Topic exchange; also the prefix of queue names.")
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    amqp_prefetch: int = 20
    outbox_poll_seconds: float = 1.0
    # The proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated): the client is
    # the right-most address not among them. Never "*": every client could then choose its address.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _only_known_proxies(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS: {item!r} is not an address or a CIDR; list the proxies'"
                                 " addresses (never '*', which lets any client choose its address)") from None
        return value

    @model_validator(mode="after")
    def _refuse_dev_keys(self) -> "ServiceSettings":
        if self.environment == "production":
            from shared.crypto import recipient_public_key

            dev = {_decode_key(dev_key(n)) for n in DEV_KEY_NAMES}
            dev |= {recipient_public_key(k) for k in dev}  # the development print room's public key
            for name, value in self:
                values = value.values() if isinstance(value, dict) else [value]
                if any(isinstance(v, bytes) and v in dev for v in values):
                    raise ValueError(f"{name.upper()} is a development key; set a real key in production")
        return self


DEV_KEY_NAMES = ("seal-k1", "patient-ref", "mailer-field", "portal-field", "sms-field", "portal-secret", "print-room")


def parse_keyring(value: object) -> dict[str, bytes]:
    """'kid1:base64,kid2:base64' -> ordered {kid: key}; the last one is the newest."""
    if isinstance(value, dict):
        return {str(k): _decode_key(v) for k, v in value.items()}
    ring: dict[str, bytes] = {}
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, key = item.partition(":")
        if not sep or not kid:
            raise ValueError("expected 'key-id:base64-key' items separated by commas")
        ring[kid] = _decode_key(key)
    if not ring:
        raise ValueError("at least one key is required")
    return ring


# NoDecode: the environment holds "kid:key,kid:key", not JSON.
KeyRing = Annotated[dict[str, bytes], NoDecode, BeforeValidator(parse_keyring)]
