"""Key store settings (environment variables).

Not a bus service: no broker, no database. Its keys live in KEY_STORE_DIR, a volume of its own that is
never backed up with the databases (deploy/README.md, "Key store"), wrapped under KEY_STORE_MASTER_KEY."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import DEV_KEY_NAMES, DEV_KEY_STORE_TOKENS, KeyRing, _decode_key, dev_key, dev_ring

WEEK = 7 * 24 * 3600
# Development callers' tokens (the issuer's, the portal's): refused in production like the development keys.
DEV_ISSUER_TOKEN, DEV_PORTAL_TOKEN = DEV_KEY_STORE_TOKENS


class KeyStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8006
    forwarded_allow_ips: str = "127.0.0.1,::1"
    shutdown_timeout_seconds: float = Field(10.0, gt=0)
    http_tls_cert_file: str | None = None
    http_tls_key_file: str | None = None
    # Where the period keys are: a directory on a volume of the key store's own, never in a database backup.
    key_store_dir: Path = Path(".run/key-store")
    # Wraps each period key on that volume (AES-256-GCM, bound to the period's id): a copy of the volume
    # alone opens nothing. A ring like SEAL_KEYS: the last key wraps new periods.
    key_store_master_key: KeyRing = dev_ring("key-store-master")
    # One bearer token per caller: the issuer may create and read period keys, the portal only read them.
    issuer_token: SecretStr = SecretStr(DEV_ISSUER_TOKEN)
    portal_token: SecretStr = SecretStr(DEV_PORTAL_TOKEN)
    # The length of a period of letters' expiry: a week (ISO weeks, Monday 00:00 UTC, id w2026-51), or
    # shorter where a test lets letters expire within seconds (id p20261207T150000-30s).
    period_seconds: int = Field(WEEK, ge=1)
    # A period key is destroyed this long after its period's end, never earlier: room for the portal's
    # expiry of its last letters and for clocks that differ by seconds.
    destroy_grace_seconds: int = Field(24 * 3600, ge=0)
    sweep_seconds: float = Field(60.0, gt=0)  # how often periods past their end + grace are looked for

    @model_validator(mode="after")
    def _refuse_development_secrets(self) -> KeyStoreSettings:
        if self.environment == "production":
            dev = {_decode_key(dev_key(n)) for n in DEV_KEY_NAMES}
            if any(key in dev for key in self.key_store_master_key.values()):
                raise ValueError("KEY_STORE_MASTER_KEY is a development key; set a real key in production")
            for name, token in (("ISSUER_TOKEN", self.issuer_token), ("PORTAL_TOKEN", self.portal_token)):
                value = token.get_secret_value()
                if value in DEV_KEY_STORE_TOKENS or len(value) < 32 or "REPLACE_ME" in value:
                    raise ValueError(f"{name} is a development or short token; set 32 random characters or more")
            if self.destroy_grace_seconds < 3600 or self.period_seconds < 24 * 3600:
                raise ValueError("production keeps periods of a day or more and a grace of an hour or more")
        if self.issuer_token.get_secret_value() == self.portal_token.get_secret_value():
            raise ValueError("ISSUER_TOKEN and PORTAL_TOKEN must differ: each caller has its own")
        return self
