"""Who the patient of a letter is, for the staff of its department: name, date of birth and place as the
issuer sealed them for the secretariat (SECRETARIAT_FIELD_KEY), sealed again at rest under the same ring
with a context of their own, and found through keyed hashes (SECRETARIAT_SECRET_KEY) of each word of the
normalised name and of the date of birth, so that a search never opens a row. Never logged."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from secretariat import domain
from secretariat.settings import SecretariatSettings
from shared import crypto
from shared.contracts import ConvocationStatusV1
from shared.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Patient:
    name: str
    birth_date: date | None
    place: str | None


def _at_rest(convocation_id: uuid.UUID) -> str:
    return f"secretariat-patient|{convocation_id}"


class Patients:
    def __init__(self, settings: SecretariatSettings) -> None:
        self.field_key, self.index_key = settings.secretariat_field_key, settings.secretariat_secret_key

    def opened(self, token: str, message_id: uuid.UUID) -> dict | None:
        """The details the issuer sealed for us on a 'sealed' status, or None (with a warning, never the
        details) when they do not open: SECRETARIAT_FIELD_KEY differs from the issuer's."""
        try:
            return crypto.open_field(
                self.field_key,
                token,
                context=crypto.field_context(ConvocationStatusV1.EVENT_TYPE, message_id, "secretariat"),
            )
        except crypto.CannotOpen:
            log.warning("patient details do not open: is SECRETARIAT_FIELD_KEY the issuer's?")
            return None

    def stored(self, convocation_id: uuid.UUID, details: dict) -> dict:
        """The columns that keep them: sealed at rest, and the search hashes under the current keys."""
        kept = {k: details.get(k) for k in ("name", "birth_date", "place")}
        return dict(
            patient_enc=crypto.seal_field(self.field_key, kept, context=_at_rest(convocation_id)),
            name_index=[
                crypto.keyed_hash(self.index_key, "patient-name", w) for w in domain.name_words(kept["name"] or "")
            ],
            birth_index=crypto.keyed_hash(self.index_key, "birth-date", kept["birth_date"])
            if kept["birth_date"]
            else None,
        )

    def reveal(self, row) -> Patient | None:
        """The patient of a convocation row, or None when it carries none (or it no longer opens)."""
        if not row["patient_enc"]:
            return None
        try:
            kept = crypto.open_field(self.field_key, row["patient_enc"], context=_at_rest(row["id"]))
        except crypto.CannotOpen:
            log.warning("patient details at rest do not open: a key left SECRETARIAT_FIELD_KEY too early?")
            return None
        born = kept.get("birth_date")
        return Patient(kept.get("name") or "", date.fromisoformat(born) if born else None, kept.get("place"))

    def name_hashes(self, typed: str) -> list[list[str]]:
        """Per word typed, its hashes under every key of the ring (rows indexed before a rotation match too)."""
        return [crypto.keyed_hashes(self.index_key, "patient-name", w) for w in domain.name_words(typed)]

    def birth_hashes(self, born: date) -> list[str]:
        return crypto.keyed_hashes(self.index_key, "birth-date", born.isoformat())

    @property
    def current_key_ids(self) -> tuple[str, str]:
        """The ids of the keys new details are sealed and indexed under."""
        return crypto.KeyRing.of(self.field_key).current_id, crypto.KeyRing.of(self.index_key).current_id

    def resealed(self, row) -> dict | None:
        """A row sealed under an older key, sealed and indexed again under the current ones."""
        patient = self.reveal(row)
        if patient is None:
            return None
        return self.stored(
            row["id"],
            {
                "name": patient.name,
                "place": patient.place,
                "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
            },
        )
