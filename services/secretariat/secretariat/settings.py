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
    secretariat_secret_key: KeyRing = dev_ring("secretariat-secret")  # sessions, CSRF, the sign-in cookie
    cookie_secure: bool = True
    session_idle_seconds: int = 15 * 60
    session_absolute_seconds: int = 8 * 3600
    session_warning_seconds: int = 120  # the page warns this long before the idle time-out
    audit_retention_days: int = Field(400, ge=365)  # at least a year (the database refuses less); older rows are pruned
    audit_prune_interval_seconds: float = 3600.0

    @model_validator(mode="after")
    def _refuse_dev_client_secret(self) -> "SecretariatSettings":
        if self.environment == "production" and self.oidc_client_secret == DEV_CLIENT_SECRET:
            raise ValueError("OIDC_CLIENT_SECRET is the development secret; set the real one in production")
        if self.environment == "production":  # tokens, codes and session cookies travel only over TLS
            require_https("OIDC_ISSUER", self.oidc_issuer)
            require_https("PUBLIC_BASE_URL", self.public_base_url)
        return self
