"""Issuer settings (environment variables)."""

from shared.settings import Key32, KeyRing, ServiceSettings, dev_key


class IssuerSettings(ServiceSettings):
    http_port: int = 8001
    database_url: str = "postgresql://issuer:issuer@127.0.0.1:5432/convocations"
    seal_keys: KeyRing = f"k1:{dev_key('seal-k1')}"  # newest last; older ones still open old messages
    patient_ref_key: Key32 = dev_key("patient-ref")
    mailer_field_key: Key32 = dev_key("mailer-field")
    portal_field_key: Key32 = dev_key("portal-field")
    hospital_name: str = "Hôpitaux Universitaires de Genève"
    message_ttl_days: int = 30
    postal_fallback_hours: int = 48
