"""Issuer settings (environment variables)."""

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from shared.crypto import b64e, recipient_public_key
from shared.settings import KeyRing, ServiceSettings, _decode_key, dev_key, dev_ring, refuse_dev_key_store_token

# The development print room's public key ring (its private key is the development key 'print-room').
DEV_PRINT_ROOM: Any = f"k1:{b64e(recipient_public_key(_decode_key(dev_key('print-room'))))}"


class IssuerSettings(ServiceSettings):
    http_port: int = 8001
    database_url: str = "postgresql://issuer:issuer@127.0.0.1:5432/convocations"
    seal_keys: KeyRing = dev_ring("seal-k1")  # newest last; older ones still open old messages
    # The key store (services/key-store): each letter is sealed under the period key of its expiry too.
    key_store_url: str = "http://127.0.0.1:8006"
    key_store_token: SecretStr = SecretStr("dev-key-store-issuer-token")  # the store's ISSUER_TOKEN
    patient_ref_key: KeyRing = dev_ring("patient-ref")  # rings like SEAL_KEYS: current last
    mailer_field_key: KeyRing = dev_ring("mailer-field")
    portal_field_key: KeyRing = dev_ring("portal-field")
    issuer_field_key: KeyRing = dev_ring("issuer-field")  # opens the corrected e-mail addresses the secretariat sends
    # Seals the patient's name, birth date, the place and the masked number for the secretariat's staff.
    secretariat_field_key: KeyRing = dev_ring("secretariat-field")
    hospital_name: str = "Hôpitaux Universitaires de Genève"
    # An image file (PNG, JPEG or SVG) at the top of the letters the issuer renders; its alternative text
    # is HOSPITAL_NAME. None: the name alone.
    letter_logo: Path | None = None
    # X25519 public key of the hospital's print room: postal copies are sealed to it.
    print_room_public_key: KeyRing = DEV_PRINT_ROOM
    message_ttl_days: int = 30  # the message expires this long after the appointment
    postal_fallback_hours: int = 48  # no download this long before the appointment: paper
    sweep_seconds: float = 60.0  # how often reminders, fallbacks and expiries are looked for
    # A convocation, its status history and the letters asked again are deleted this long after the letter
    # expired (docs/retention.md): the hospital's period for delivery reports.
    convocation_retention_days: int = Field(365, ge=1)
    # Memory: a 10 MB letter is a 13 MB message, and handling it takes a few copies. Letters waiting
    # unacknowledged are held in memory (LETTERS_PREFETCH), and those over 1 MB are sealed one at a
    # time (LARGE_LETTERS_AT_ONCE): four 10 MB letters at once peak at 255–271 MB (pod limit 320Mi).
    letters_prefetch: int = Field(2, ge=1)
    large_letters_at_once: int = Field(1, ge=1)
    # Remind a patient who has not downloaded the letter this many days before the paper deadline (0: never).
    reminder_days: int = 2
    # Shown before the code when the hospital system gives no public_contact: never a department's own.
    public_contact_phone: str = "+41 22 372 33 11"
    public_contact_email: str | None = None

    @model_validator(mode="after")
    def _refuse_dev_key_store_token(self) -> "IssuerSettings":
        refuse_dev_key_store_token(self.environment, self.key_store_token)
        return self
