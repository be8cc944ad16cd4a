"""Phone numbers at rest in the portal: a keyed hash to find them, a hint to show, the number sealed for
the portal alone (bound to the patient's ref). Used by the patient pages and the bus handlers alike."""

from __future__ import annotations

from dataclasses import dataclass

from access_portal.policy import phone_hint
from shared import crypto
from shared.crypto import Keys


def phone_storage_context(patient_ref: str) -> str:
    return f"portal-phone|{patient_ref}"


@dataclass(frozen=True)
class StoredPhone:
    """A number as the portal stores it: keyed hash, hint, sealed number."""

    phone_hash: str
    phone_hint: str
    phone_enc: str


class Phones:
    def __init__(self, secret_key: Keys, field_key: Keys) -> None:
        self._secret, self._field = secret_key, field_key

    def hash(self, e164: str) -> str:
        return crypto.keyed_hash(self._secret, "phone", e164)

    def hashes(self, e164: str) -> list[str]:
        """The number's hash under every PORTAL_SECRET_KEY key, for lookups of stored rows."""
        return crypto.keyed_hashes(self._secret, "phone", e164)

    def matches(self, e164: str, stored_hash: str) -> bool:
        """Whether a number is the one a stored hash was made from, under whichever key made it."""
        return crypto.hash_matches(self._secret, "phone", e164, stored_hash)

    def same_number(self, phone_hash: str, phone_enc: str | None, patient_ref: str, other_hash: str) -> bool:
        """Whether two stored number hashes name one number, also when made under different keys."""
        if phone_hash == other_hash or phone_enc is None:
            return phone_hash == other_hash
        return self.matches(self.open(phone_enc, patient_ref), other_hash)

    def seal(self, e164: str, patient_ref: str) -> str:
        return crypto.seal_field(self._field, {"phone": e164}, context=phone_storage_context(patient_ref))

    def open(self, token: str, patient_ref: str) -> str:
        return str(crypto.open_field(self._field, token, context=phone_storage_context(patient_ref))["phone"])

    def stored(self, e164: str, patient_ref: str) -> StoredPhone:
        return StoredPhone(self.hash(e164), phone_hint(e164), self.seal(e164, patient_ref))
