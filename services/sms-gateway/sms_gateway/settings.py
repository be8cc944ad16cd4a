"""SMS gateway settings (environment variables)."""

from shared.settings import Key32, ServiceSettings, dev_key


class SmsSettings(ServiceSettings):
    http_port: int = 8003
    database_url: str = "postgresql://sms_gateway:sms_gateway@127.0.0.1:5432/convocations"
    sms_provider_url: str = "http://127.0.0.1:8025"  # Twilio-compatible base URL (https://api.twilio.com)
    sms_account_sid: str = "AC00000000000000000000000000000000"
    sms_auth_token: str = "dev-auth-token"
    sms_from: str = "HUG"
    sms_timeout: float = 10.0
    sms_field_key: Key32 = dev_key("sms-field")
    sms_allowed_countries: str = "CH,LI,FR,DE,IT,AT"
    sms_retry_delays: str = "5,30,120,600"
    sms_callback_base_url: str | None = None  # public URL of this service for delivery reports

    @property
    def allowed_countries(self) -> frozenset[str]:
        return frozenset(c.strip().upper() for c in self.sms_allowed_countries.split(",") if c.strip())
