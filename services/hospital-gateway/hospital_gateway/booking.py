"""What the gateway takes from an HL7 v2 message, a FHIR resource or a CSV line: one appointment booked or
cancelled, with the place each value came from, so that a refusal names the hospital's own field (``PID-7``,
``Appointment.start``, ``line 4, column birth_date``). Plain functions, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

from pydantic import ValidationError

from hospital_gateway.settings import HospitalSystem
from shared.contracts import ConvocationCancelledV1, ConvocationCreatedV1

# The convocation id of an appointment is derived from the system and the hospital's appointment id, so a
# rescheduled appointment (HL7 S13/S14, a FHIR Appointment posted again) supersedes its letter.
CONVOCATION_NAMESPACE = uuid.UUID("9d7c1f52-3b0e-4c51-a8de-64f0a2e1c7b3")
LANGUAGES = {
    "fr": "fr",
    "fre": "fr",
    "fra": "fr",
    "de": "de",
    "ger": "de",
    "deu": "de",
    "gsw": "de",
    "it": "it",
    "ita": "it",
    "en": "en",
    "eng": "en",
}


def convocation_id(system_id: str, appointment_id: str) -> uuid.UUID:
    return uuid.uuid5(CONVOCATION_NAMESPACE, f"{system_id}\x1f{appointment_id}")


@dataclass
class Problem(Exception):
    """Why a message, or one field of it, is refused: ``where`` in the hospital's terms, ``code`` for machines
    (``required``, ``invalid``, ``unknown``, ``not-supported``, ``past``), ``text`` for people. Never the value:
    problems are logged and the value may be personal."""

    where: str
    code: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass
class Booking:
    """An appointment as one message states it. ``where`` maps the event's field paths (tuples, as pydantic
    reports them) to the hospital's places; ``warnings`` are problems that did not stop the letter."""

    appointment_id: str
    action: Literal["book", "cancel"]
    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: date | None = None
    email: str | None = None
    mobile: str | None = None
    language: str | None = None
    starts_at: datetime | None = None
    department: str | None = None  # the hospital's department code
    place: str | None = None
    address: str | None = None
    instructions: str | None = None
    pdf_base64: str | None = None
    reason: str | None = None  # a cancellation's
    where: dict[tuple, str] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    def source(self, path: tuple) -> str:
        """The hospital's place of an event field, or of the nearest enclosing one that has one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.where:
                return self.where[path[:end]]
        return self.where.get((), "message")


def require(value, where: str, what: str):
    if value in (None, "", []):
        raise Problem(where, "required", f"{what} is required")
    return value


def language_of(code: str | None, system: HospitalSystem, where: str) -> tuple[str, Problem | None]:
    """Our language for a hospital's code (ISO 639-1 or -2, any case, 'fr-CH'), or the system's default with a
    warning for a language we do not write letters in."""
    if not code:
        return system.default_language, None
    ours = LANGUAGES.get(code.strip().lower().split("-")[0])
    if ours:
        return ours, None
    return system.default_language, Problem(
        where, "not-supported", f"language not offered; the letter is in '{system.default_language}'"
    )


def created_event(system: HospitalSystem, b: Booking, now: datetime) -> ConvocationCreatedV1:
    """The convocation.created of a booking, or the Problem that names the field at fault."""
    dept_where = b.source(("appointment", "department"))
    department = system.departments.get(require(b.department, dept_where, "the department"))
    if department is None:
        raise Problem(dept_where, "unknown", "department code not configured for this system")
    starts_at = require(b.starts_at, b.source(("appointment", "starts_at")), "the appointment's start")
    if starts_at <= now:
        raise Problem(b.source(("appointment", "starts_at")), "past", "the appointment has already started")
    data = {
        "convocation_id": convocation_id(system.id, b.appointment_id),
        "patient": {
            "id": b.patient_id,
            "name": b.patient_name,
            "email": b.email or None,
            "mobile": b.mobile or None,
            "language": b.language or system.default_language,
            "birth_date": b.birth_date,
        },
        "appointment": {
            "starts_at": starts_at,
            "place": {
                "name": b.place or department.place or department.name,
                "address": b.address or department.address or system.address,
            },
            "department": {
                "code": department.code,
                "name": department.name,
                "secretariat_phone": department.secretariat_phone,
                "secretariat_email": department.secretariat_email,
            },
            "instructions": b.instructions or None,
        },
        "public_contact": system.public_contact,
        "document_pdf_base64": b.pdf_base64 or None,
        "sandbox": system.sandbox,
    }
    try:
        return ConvocationCreatedV1.model_validate(data)
    except ValidationError as exc:
        raise _problem(b, exc) from None


def cancelled_event(system: HospitalSystem, b: Booking) -> ConvocationCancelledV1:
    try:
        return ConvocationCancelledV1(
            convocation_id=convocation_id(system.id, b.appointment_id), reason=(b.reason or None) and b.reason[:200]
        )
    except ValidationError as exc:
        raise _problem(b, exc) from None


def _problem(b: Booking, exc: ValidationError) -> Problem:
    """The first failing field, named where the hospital wrote it. The contract's message says what is wrong
    (pydantic's messages never quote the value: the models hide input in errors)."""
    err = exc.errors()[0]  # the input is looked at (was it given?), never put into the problem
    path = tuple(err["loc"])
    missing = err["type"] == "missing" or err.get("input", "") is None
    return Problem(
        b.source(path), "required" if missing else "invalid", f"{'.'.join(str(p) for p in path)}: {err['msg']}"
    )
