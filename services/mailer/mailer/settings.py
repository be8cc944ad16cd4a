"""Mailer settings (environment variables)."""

from email.utils import parseaddr
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.settings import KeyRing, ServiceSettings, dev_ring, loopback, require_https


class MailerSettings(ServiceSettings):
    http_port: int = 8002
    database_url: str = "postgresql://mailer:mailer@127.0.0.1:5432/convocations"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    # Production refuses SMTP_TLS=none unless this is set and the relay is on this host (a sidecar):
    # the link's secret would otherwise cross the network in clear.
    smtp_plain_local_relay: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: str | None = None  # a private CA to trust for the relay's certificate (else the system's)
    smtp_timeout: float = 15.0
    smtp_connections: int = 4  # connections kept open and reused (sends run in parallel on them)
    mail_from: str = "Hôpitaux Universitaires de Genève <convocations@hug.example>"
    hospital_name: str = "Hôpitaux Universitaires de Genève"
    portal_base_url: str = "http://127.0.0.1:8000"
    mailer_field_key: KeyRing = dev_ring("mailer-field")
    mailer_retry_delays: str = "5,30,120,600,1800"  # seconds between SMTP attempts on transient failures
    # DKIM: 'selector:/path/key.pem,…', the newest (signing) last; the domain defaults to MAIL_FROM's.
    dkim_keys: str = ""
    dkim_domain: str | None = None
    # Late bounces: envelope sender bounces+<token>@BOUNCE_DOMAIN; the relay forwards what comes back
    # to this SMTP listener (port 0: no listener).
    bounce_domain: str | None = None
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int = 2525
    bounce_max_bytes: int = 256 * 1024
    sweep_seconds: float = 60.0  # how often expired recipients are destroyed
    # An e-mail's row, its notices and bounce tokens are deleted this long after the letter expired (or, for a
    # row without an expiry, after it was made): late bounces come within days (docs/retention.md).
    email_retention_days: int = Field(90, ge=1)
    # Sandbox tests (email.requested sandbox) go only here, plain SMTP to a development inbox; unset, they fail
    # (email.failed 'sandbox-not-configured'), never reaching the real relay.
    sandbox_smtp_host: str | None = None
    sandbox_smtp_port: int = 1025

    def sandbox_smtp(self) -> "MailerSettings | None":
        """These settings aimed at the sandbox endpoint, or None without one."""
        if not self.sandbox_smtp_host:
            return None
        return self.model_copy(
            update={
                "smtp_host": self.sandbox_smtp_host,
                "smtp_port": self.sandbox_smtp_port,
                "smtp_tls": "none",
                "smtp_username": None,
                "smtp_password": None,
            }
        )

    @property
    def sender_domain(self) -> str:
        return parseaddr(self.mail_from)[1].rpartition("@")[2] or "convocations.local"

    @field_validator("mail_from")
    @classmethod
    def _plain_sender(cls, value: str) -> str:
        from mailer.compose import UnsafeHeader, envelope_sender

        try:
            envelope_sender(value)
        except UnsafeHeader as exc:
            raise ValueError(f"{exc}; expected 'Name <address@domain>' on one line") from None
        return value

    @model_validator(mode="after")
    def _refuse_plain_production(self) -> "MailerSettings":
        if self.environment == "production":
            require_https("PORTAL_BASE_URL", self.portal_base_url)
            if self.smtp_tls == "none":
                if not self.smtp_plain_local_relay:
                    raise ValueError(
                        "SMTP_TLS=none is refused in production: use starttls or tls"
                        " (or SMTP_PLAIN_LOCAL_RELAY=true for a relay on this host)"
                    )
                if not loopback(self.smtp_host):
                    raise ValueError(
                        "SMTP_PLAIN_LOCAL_RELAY allows SMTP_TLS=none only to a relay on this host"
                        " (SMTP_HOST localhost or a loopback address)"
                    )
            if not self.dkim_keys.strip():
                raise ValueError("DKIM_KEYS is required in production: unsigned mail lands in spam")
        return self
