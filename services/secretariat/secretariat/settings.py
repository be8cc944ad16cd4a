"""Secretariat settings (environment variables)."""

from pydantic import Field, model_validator

from shared.settings import KeyRing, ServiceSettings, dev_ring, require_https

DEV_CLIENT_SECRET = "dev-console-secret"  # noqa: S105 - development only; production refuses it


class SecretariatSettings(ServiceSettings):
    http_port: int = 8004
    database_url: str = "postgresql://secretariat:secretariat@127.0.0.1:5432/convocations"
    public_base_url: str = "http://127.0.0.1:8004"  # where staff reach the console (OIDC redirect URI)
    oidc_issuer: str = "http://127.0.0.1:8030"  # the hospital's single sign-on (Keycloak realm, Entra ID tenant)
    oidc_client_id: str = "secretariat-console"
    oidc_client_secret: str = DEV_CLIENT_SECRET
    oidc_scope: str = "openid profile"
    oidc_roles_claim: str = "roles"
    oidc_departments_claim: str = "departments"
    oidc_name_claim: str = "name"
    api_audience: str = "secretariat-api"  # the `aud` of access tokens hospital systems present
    patient_ref_key: KeyRing = dev_ring("patient-ref")  # the issuer's: search by patient id, never stored
    staff_field_key: KeyRing = dev_ring("staff-field")  # encrypts corrected numbers for the portal
    issuer_field_key: KeyRing = dev_ring("issuer-field")  # encrypts corrected e-mail addresses for the issuer
    # Opens the patient's name, birth date and place the issuer seals for the secretariat, and seals them at rest.
    secretariat_field_key: KeyRing = dev_ring("secretariat-field")
    # Sessions, CSRF, the sign-in cookie, and the keyed hashes that find a patient by name and birth date.
    secretariat_secret_key: KeyRing = dev_ring("secretariat-secret")
    cookie_secure: bool = True
    session_idle_seconds: int = 15 * 60
    session_absolute_seconds: int = 8 * 3600
    session_warning_seconds: int = 120  # the page warns this long before the idle time-out
    audit_retention_days: int = Field(400, ge=365)  # at least a year (the database refuses less); older rows are pruned
    # A convocation's read model, timeline and actions are deleted this long after the appointment; whether a
    # patient has a verified number this long after the portal last said so (docs/retention.md).
    convocation_retention_days: int = Field(365, ge=1)
    binding_retention_days: int = Field(730, ge=1)
    # Rows sealed or indexed under an older key of SECRETARIAT_FIELD_KEY / SECRETARIAT_SECRET_KEY are redone
    # under the current one this often (so that the old key can leave the ring).
    patient_reseal_interval_seconds: float = 3600.0
    # "Correct the mobile number" takes only mobiles of these countries (ISO codes), as the SMS gateway sends.
    mobile_allowed_countries: str = "CH,LI,FR,DE,IT,AT"
    # A request for the letter again that the hospital system has not answered after this long no longer
    # blocks the letter: the console offers the post or a new request (the alert fires at 30 minutes too).
    reissue_wait_seconds: int = Field(1800, ge=1)
    # Tokens naming a key the provider's key set lacks refetch it at most this often (key rotation).
    jwks_refresh_seconds: float = Field(60.0, ge=1)
    audit_page_rows: int = Field(100, ge=1)  # rows per page of the staff audit (the CSV export has them all)
    # The open timeline asks for news this often (no reload).
    timeline_refresh_seconds: int = Field(5, ge=1)

    @property
    def allowed_countries(self) -> frozenset[str]:
        return frozenset(c.strip().upper() for c in self.mobile_allowed_countries.split(",") if c.strip())

    @model_validator(mode="after")
    def _refuse_dev_client_secret(self) -> "SecretariatSettings":
        if self.environment == "production" and self.oidc_client_secret == DEV_CLIENT_SECRET:
            raise ValueError("OIDC_CLIENT_SECRET is the development secret; set the real one in production")
        if self.environment == "production":  # tokens, codes and session cookies travel only over TLS
            require_https("OIDC_ISSUER", self.oidc_issuer)
            require_https("PUBLIC_BASE_URL", self.public_base_url)
            if not self.cookie_secure:
                raise ValueError("COOKIE_SECURE=false sends staff session cookies without TLS; production refuses it")
        return self
