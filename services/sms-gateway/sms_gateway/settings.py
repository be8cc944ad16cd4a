"""SMS gateway settings (environment variables); services/sms-gateway/README.md lists them."""

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from shared.settings import KeyRing, ServiceSettings, dev_ring, loopback, require_https

DEV_AUTH_TOKEN = "dev-auth-token"  # noqa: S105 - development only; production refuses it


class SmsSettings(ServiceSettings):
    http_port: int = 8003
    # An SMS row with its provider attempts, and a delivery report, are deleted this long after they were
    # made (docs/retention.md); the hourly and daily caps look back a day at most.
    sms_retention_days: int = Field(90, ge=2)
    database_url: str = "postgresql://sms_gateway:sms_gateway@127.0.0.1:5432/convocations"
    # Primary provider: Twilio's Messages API (or anything with its shape).
    sms_provider_url: str = "http://127.0.0.1:8025"  # https://api.twilio.com in production
    sms_account_sid: str = "AC00000000000000000000000000000000"
    sms_auth_token: SecretStr = SecretStr(DEV_AUTH_TOKEN)
    sms_from: str = "HUG"
    # The hospital as the SMS names it: short, so that every language's text fits one segment.
    sms_hospital_name: str = Field("HUG", min_length=1, max_length=20)
    # Second provider, used after SMS_FAILOVER_AFTER failed attempts at the first (off when unset).
    sms_generic_url: str | None = None  # e.g. https://sms.example.net/generic/v1/messages
    sms_generic_token: SecretStr | None = None
    # Production refuses an http:// provider (it receives the numbers and codes, with our credentials)
    # unless this is set and the provider is on this host (an egress sidecar that adds TLS).
    sms_plain_local_provider: bool = False
    sms_failover_after: int = Field(2, ge=1)
    sms_timeout: float = 10.0
    sms_field_key: KeyRing = dev_ring("sms-field")
    sms_allowed_countries: str = "CH,LI,FR,DE,IT,AT"
    sms_retry_delays: str = "5,30,120,600"
    sms_max_per_number_hour: int = Field(10, ge=0)
    sms_max_global_hour: int = Field(2000, ge=0)
    # Public URL of this service as the providers reach it: delivery reports are sent to
    # <base>/webhooks/twilio/status and <base>/webhooks/generic/status. Unset: no delivery reports.
    sms_callback_base_url: str | None = None
    # Sandbox tests (otp.requested sandbox) go only to this Twilio-compatible provider (a development inbox),
    # without delivery reports; unset, they fail (sms.failed 'sandbox-not-configured'), never reaching the real one.
    sandbox_sms_provider_url: str | None = None
    sandbox_sms_account_sid: str = "AC00000000000000000000000000000000"
    sandbox_sms_auth_token: SecretStr = SecretStr(DEV_AUTH_TOKEN)

    @property
    def allowed_countries(self) -> frozenset[str]:
        return frozenset(c.strip().upper() for c in self.sms_allowed_countries.split(",") if c.strip())

    @model_validator(mode="after")
    def _real_credentials(self) -> "SmsSettings":
        if self.sms_generic_url and not self.sms_generic_token:
            raise ValueError("SMS_GENERIC_URL is set without SMS_GENERIC_TOKEN")
        if self.environment == "production":
            if self.sms_auth_token.get_secret_value() == DEV_AUTH_TOKEN:
                raise ValueError("SMS_AUTH_TOKEN is the development token; set the provider's token in production")
            require_https("SMS_CALLBACK_BASE_URL", self.sms_callback_base_url)
            for name, url in (("SMS_PROVIDER_URL", self.sms_provider_url), ("SMS_GENERIC_URL", self.sms_generic_url)):
                if url and not (self.sms_plain_local_provider and loopback(urlsplit(url).hostname)):
                    require_https(name, url)
        return self
