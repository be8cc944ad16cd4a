"""Typed settings from environment variables: one base for every service, one subclass each."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import crypto


def dev_key(name: str) -> Any:
    """A fixed development key: convenient locally, refused in production (see ``_refuse_dev_keys``).
    Typed ``Any``: it is the raw default that the key field's validator parses into bytes or a ring."""
    return base64.b64encode(hashlib.sha256(f"convocations-development-{name}".encode()).digest()).decode()


def dev_ring(name: str) -> Any:
    """A key-ring setting's development default, the ring of one key ``k1`` (typed ``Any`` like ``dev_key``)."""
    return f"k1:{dev_key(name)}"


class SecretKey(bytes):
    """A key: bytes to the code, masked in every repr, log line and error message."""

    def __repr__(self) -> str:
        return "SecretKey('**********')"

    __str__ = __repr__


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
    return SecretKey(raw)


Key32 = Annotated[bytes, BeforeValidator(_decode_key)]


class ServiceSettings(BaseSettings):
    """Settings every service reads. Keys are base64 of 32 random bytes."""

    # hide_input_in_errors: a refused start must never print a value (a key, a password in a URL).
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/convocations"
    events_exchange: str = Field("convocations", description="Topic exchange; also the prefix of queue names.")
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    amqp_prefetch: int = 20
    # The batched subscriptions off the patient's path (shared/consumer.py ``Batches``: the issuer's
    # email.sent, the secretariat's status reports) wait this long for more once one arrives: a batch
    # then holds many events for one commit, at the cost of this much delay to a status line.
    batch_linger_seconds: float = Field(0.02, ge=0, le=1)
    outbox_poll_seconds: float = 1.0
    # The proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated): the client is
    # the right-most address not among them. Never "*": every client could then choose its address.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Connections per process: this pool plus one for the outbox relay's LISTEN. The deployment's
    # connection budget (replicas x (pool + 1)) must fit the database's limits (deploy/README.md).
    database_pool_size: int = Field(10, ge=1)
    # true: apply migrations at start (development, compose). false (production): a release's
    # migration Job applies them under the schema owner (`python -m <service> migrate`); the service
    # only waits, up to migration_wait_seconds, until its schema is at its own version.
    migrate_on_start: bool = True
    migration_wait_seconds: float = 120.0
    # While the database does not answer, consumers hold their messages and probe it this often at most
    # (a `select 1`): a held letter resumes within this long of the database's return.
    outage_backoff_max_seconds: float = 5.0
    # From SIGTERM to exit, at most (shared/runtime.py ``serve``): no new message or connection from the
    # first second; requests in flight get a third of it, handlers in flight half, the outbox relay's last
    # pass what is left. What has not finished by then is let go: its messages return to their queues, its
    # outbox rows wait for the next relay. Kubernetes: plus the preStop pause, below the pod's
    # terminationGracePeriodSeconds (tests/contract/test_deploy_manifests.py checks the manifests).
    shutdown_timeout_seconds: float = Field(30.0, gt=0)
    # HTTPS served by the process itself (a certificate and its key, PEM files), where no proxy ends TLS in
    # front of it. In Kubernetes the Gateway ends TLS: leave both unset.
    http_tls_cert_file: str | None = None
    http_tls_key_file: str | None = None
    # Retention (docs/retention.md): how often the sweep deletes what is past its period, in batches of this
    # many rows per statement. The inbox keeps consumed event ids this long: an event redelivered later (a
    # dead letter replayed more than this after it came) is applied again, so replay within it.
    retention_sweep_seconds: float = Field(3600.0, gt=0)
    retention_batch: int = Field(1000, ge=1)
    inbox_retention_days: int = Field(400, ge=30)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _only_known_proxies(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS: {item!r} is not an address or a CIDR; list the proxies'"
                    " addresses (never '*', which lets any client choose its address)"
                ) from None
        return value

    @model_validator(mode="after")
    def _refuse_dev_keys(self) -> ServiceSettings:
        if self.environment == "production":
            dev = {_decode_key(dev_key(n)) for n in DEV_KEY_NAMES}
            dev |= {crypto.recipient_public_key(k) for k in dev}  # the development print room's public key
            for name, value in self:
                values = value.values() if isinstance(value, dict) else [value]
                if any(isinstance(v, bytes) and v in dev for v in values):
                    raise ValueError(f"{name.upper()} is a development key; set a real key in production")
        return self

    @model_validator(mode="after")
    def _refuse_default_credentials(self) -> ServiceSettings:
        if self.environment == "production":
            # A database password may also come from PGPASSWORD, a passfile or a client certificate.
            if problem := default_credentials(self.database_url, "postgres", password_required=False):
                raise ValueError(f"DATABASE_URL {problem}; use the service's own role and its real password")
            if problem := default_credentials(self.amqp_url, "guest", password_required=True):
                raise ValueError(f"AMQP_URL {problem}; use the service's own broker user and its real password")
            if problem := unverified_broker(self.amqp_url):
                raise ValueError(f"AMQP_URL {problem}")
            if problem := unverified_database(self.database_url):
                raise ValueError(f"DATABASE_URL {problem}")
        return self


class MigrationSettings(BaseSettings):
    """What ``python -m <service> migrate`` (the release's migration job) reads: the schema owner's
    database URL and nothing else, no key and no broker."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Literal["development", "production"] = "development"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/convocations"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_default_credentials(self) -> MigrationSettings:
        if self.environment == "production" and (
            problem := default_credentials(self.database_url, "postgres", password_required=False)
        ):
            raise ValueError(f"DATABASE_URL {problem}; use the schema owner's role and its real password")
        if self.environment == "production" and (problem := unverified_database(self.database_url)):
            raise ValueError(f"DATABASE_URL {problem}")
        return self


def default_credentials(url: str, default_user: str, *, password_required: bool) -> str | None:
    """What makes the credentials of a database or broker URL a development default, or None.

    Refused: no user or the default one (PostgreSQL's superuser ``postgres``, RabbitMQ's ``guest``),
    a password equal to the user name (the development roles ``issuer:issuer``...) or to the default
    user, the deploy examples' ``REPLACE_ME`` placeholders, and, where ``password_required`` (AMQP: the
    client would fall back to ``guest``), no password. The messages never include the value."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if not user or user == default_user:
        return f"uses the default user ({default_user})"
    if not password:
        return "has no password" if password_required else None
    if password == user or password == default_user or "REPLACE_ME" in password:
        return "uses a development password"
    return None


def unverified_broker(url: str) -> str | None:
    """Why a broker URL would not be TLS checked against the broker's certificate, or None. Production
    refuses plain AMQP (the credentials and every event in clear) and ``no_verify_ssl`` (anyone in the path
    could pose as the broker). ``cafile=`` names the CA to verify with (the cluster's internal CA)."""
    parts = urlsplit(url)
    if parts.scheme != "amqps":
        return "must be amqps:// (TLS) in production: plain AMQP carries the password and every event in clear"
    if dict(parse_qsl(parts.query)).get("no_verify_ssl", "0") != "0":
        return "must verify the broker's certificate in production (no no_verify_ssl)"
    return None


def unverified_database(url: str) -> str | None:
    """Why a PostgreSQL URL would not verify the server's certificate and host name, or None. Production
    requires ``sslmode=verify-full`` (in the URL, or PGSSLMODE): ``require`` encrypts but accepts any
    certificate, so anyone in the path could pose as the database."""
    mode = dict(parse_qsl(urlsplit(url).query)).get("sslmode") or os.environ.get("PGSSLMODE", "")
    if mode != "verify-full":
        return (
            "must set sslmode=verify-full in production (with sslrootcert=<the database's CA>): "
            f"sslmode {mode or 'unset'} does not check the server's certificate and host name"
        )
    return None


def loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address: a sidecar on this host, traffic that never crosses the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def require_https(name: str, url: str | None) -> None:
    """In production, a public URL must be https (links, cookies, callbacks)."""
    if url is not None and urlsplit(url).scheme != "https":
        raise ValueError(f"{name} must be an https:// URL in production")


# Every development key a service has as its default (tests/unit/test_production_settings.py checks the
# settings modules name no other): production refuses each of them.
DEV_KEY_NAMES = (
    "seal-k1",
    "patient-ref",
    "mailer-field",
    "portal-field",
    "sms-field",
    "portal-secret",
    "print-room",
    "staff-field",
    "secretariat-secret",
    "issuer-field",
    "secretariat-field",
    "key-store-master",
)


def parse_keyring(value: object) -> dict[str, bytes]:
    """'kid1:base64,kid2:base64' -> ordered {kid: key}; the last one is current. A single key
    without an id (base64 has no ':') is the ring {'k1': key}."""
    if isinstance(value, dict):
        return {str(k): _decode_key(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return {"k1": _decode_key(value)}
    ring: dict[str, bytes] = {}
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, key = item.partition(":")
        if not sep:
            kid, key = "k1", item
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kid):
            raise ValueError("a key id is 1 to 32 letters, digits, '-' or '_'")
        if kid in ring:
            raise ValueError("each key id may appear once")
        ring[kid] = _decode_key(key)
    if not ring:
        raise ValueError("at least one key is required")
    return ring


def _as_ring(value: dict[str, bytes]) -> crypto.KeyRing:
    return crypto.KeyRing(value)


# Every key setting is a ring, "kid:base64,kid:base64", oldest first (the last one seals and hashes
# new data); NoDecode: the environment holds that text, not JSON.
KeyRing = Annotated[dict[str, bytes], NoDecode, BeforeValidator(parse_keyring), AfterValidator(_as_ring)]


# The key store callers' development tokens (services/key-store: ISSUER_TOKEN, PORTAL_TOKEN).
DEV_KEY_STORE_TOKENS = ("dev-key-store-issuer-token", "dev-key-store-portal-token")


def refuse_dev_key_store_token(environment: str, token: SecretStr) -> None:
    """Production refuses a development or placeholder token for the key store."""
    value = token.get_secret_value()
    if environment == "production" and (value in DEV_KEY_STORE_TOKENS or "REPLACE_ME" in value or len(value) < 32):
        raise ValueError("KEY_STORE_TOKEN is a development or short token; set the key store's real token")


def secret(value: SecretStr | None) -> str:
    """The clear value of an optional secret setting, '' when unset (where it is used, never logged)."""
    return value.get_secret_value() if value is not None else ""
