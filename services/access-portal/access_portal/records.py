"""The portal's rows as typed records: what store.py returns and the service and handlers read."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self


class Record:
    """A row read by name: ``Message.from_row(row)`` takes the fields it declares, whatever else
    ``select *`` returns."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    @classmethod
    def maybe(cls, row: Mapping[str, Any] | None) -> Self | None:
        return None if row is None else cls.from_row(row)


@dataclass(frozen=True)
class Message(Record):
    """One sealed letter (table ``message``)."""

    message_id: uuid.UUID
    convocation_id: uuid.UUID
    patient_ref: str
    patient_refs: list[str] | None  # the patient's ref under every PATIENT_REF_KEY key the issuer had
    language: str
    key_id: str
    document_nonce: bytes | None
    document_ciphertext: bytes | None  # None once revoked or expired
    details_nonce: bytes | None
    details_ciphertext: bytes | None
    expires_at: datetime
    secretariat_phone: str
    secretariat_email: str | None
    public_phone: str | None  # what the pages before the code show
    public_email: str | None
    phone_hash: str | None  # the number on file: keyed hash, hint, sealed number
    phone_hint: str | None
    phone_enc: str | None
    proven_hash: str | None  # a number proven through this link (no number on file)
    proven_hint: str | None
    proven_enc: str | None
    state: str  # active, revoked, expired
    revoked_reason: str | None
    failed_checks: int
    locked_until: datetime | None
    postal_requested_at: datetime | None
    sandbox: bool  # a hospital integrator's test letter: its codes go to the sandbox SMS endpoint only
    trace_context: dict[str, str] | None  # the letter's trace (traceparent): its document.released joins it

    def contact(self, *, after_code: bool) -> tuple[str | None, str | None]:
        """(phone, e-mail) the pages show: before the code only the hospital's public contact (a
        department's own address, 'oncologie@…', would tell whoever holds the link what the letter is about)."""
        return (
            (self.secretariat_phone, self.secretariat_email) if after_code else (self.public_phone, self.public_email)
        )


@dataclass(frozen=True)
class Challenge(Record):
    """One code sent (table ``challenge``)."""

    id: uuid.UUID
    message_id: uuid.UUID
    code_hash: str
    phone_hash: str
    phone_hint: str
    phone_enc: str
    bind_source: str | None  # "hospital" or "first-use": what a right code binds
    created_at: datetime
    expires_at: datetime
    wrong: int
    status: str  # active, used, dead
    sms_failed: bool
    sms_sent_at: datetime | None  # when the provider accepted its SMS (sms.sent)

    def live(self, now: datetime) -> bool:
        return self.status == "active" and self.expires_at > now


@dataclass(frozen=True)
class Binding(Record):
    """The number a patient proved, under one of the patient's refs (table ``phone_binding``)."""

    patient_ref: str
    phone_hash: str
    phone_hint: str
    phone_enc: str
    source: str  # "hospital" (the number on file) or "first-use"


@dataclass(frozen=True)
class SendCounts(Record):
    """What the waits between codes need (store.send_counts)."""

    last_sent: datetime | None
    hour_n: int
    hour_oldest: datetime | None
    day_n: int
    day_oldest: datetime | None
