"""Access portal settings (environment variables)."""

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from shared.settings import KeyRing, ServiceSettings, dev_ring, refuse_dev_key_store_token, require_https


class PortalSettings(ServiceSettings):
    http_port: int = 8000
    database_url: str = "postgresql://access_portal:access_portal@127.0.0.1:5432/convocations"
    portal_base_url: str = "http://127.0.0.1:8000"
    seal_keys: KeyRing = dev_ring("seal-k1")
    # The key store (services/key-store): the period key a letter was sealed under opens it with the link.
    key_store_url: str = "http://127.0.0.1:8006"
    key_store_token: SecretStr = SecretStr("dev-key-store-portal-token")  # the store's PORTAL_TOKEN
    portal_field_key: KeyRing = dev_ring("portal-field")
    sms_field_key: KeyRing = dev_ring("sms-field")
    portal_secret_key: KeyRing = dev_ring("portal-secret")  # HMAC of codes, numbers, addresses, CSRF
    staff_field_key: KeyRing = dev_ring("staff-field")  # opens the corrected numbers the secretariat sends
    hospital_name: str = "Hôpitaux Universitaires de Genève"
    # The hospital's general number, on every page (also those of an unknown or closed link).
    hospital_phone: str = "+41 22 372 33 11"
    cookie_secure: bool = True  # Secure + __Host- prefix; browsers accept it on http://localhost too
    # OTP policy: NIST SP 800-63B §5.1.3 (out-of-band authenticator), OWASP ASVS V2.7.
    otp_ttl_seconds: int = 600
    otp_max_wrong_per_code: int = 5
    otp_resend_seconds: int = 30
    otp_max_per_message_hour: int = 5
    otp_max_per_number_day: int = 10
    session_idle_seconds: int = 15 * 60
    session_absolute_seconds: int = 60 * 60
    # The document page warns this long before an idle session ends and offers to extend it (WCAG 2.2.1).
    session_warning_seconds: int = 2 * 60
    # Access audit kept one year (docs/architecture.md#security), then pruned; the database refuses
    # to prune anything younger.
    audit_retention_days: int = Field(365, ge=365)
    # A message (its sealed document destroyed at expiry already), its codes, sessions, downloads and paper
    # reports are deleted this long after it expired; a verified number this long after it was last bound
    # (docs/retention.md).
    message_retention_days: int = Field(30, ge=1)
    binding_retention_days: int = Field(730, ge=1)

    @model_validator(mode="after")
    def _refuse_plain_production(self) -> "PortalSettings":
        refuse_dev_key_store_token(self.environment, self.key_store_token)
        if self.environment == "production":
            require_https("PORTAL_BASE_URL", self.portal_base_url)
            if not self.cookie_secure:
                raise ValueError("COOKIE_SECURE=false is refused in production: session cookies must be Secure")
        return self

    @property
    def portal_host(self) -> str:
        return urlsplit(self.portal_base_url).netloc
