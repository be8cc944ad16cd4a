"""FHIR R4 in (Appointment with its Patient and letter, alone or in a transaction or batch Bundle),
OperationOutcome and CapabilityStatement out, and the Communication and Task we send back. No I/O here.

Resources are validated with fhir.resources' R4B models (the R4 resources used here have the same shape in
R4B). They do not check required value sets, references or profiles: what a letter needs is checked here, and
a refusal names the element as a FHIRPath expression (``Appointment.participant[0].status``).
CH Core patients are taken as they come: only the name, one identifier that is not the AHV number, the birth
date, e-mail, mobile and language are read; nothing else is kept.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.task import Task
from pydantic import ValidationError

from hospital_gateway.booking import Booking, Problem, language_of, require
from hospital_gateway.settings import HospitalSystem

MEDIA_TYPE = "application/fhir+json"
AHV_SYSTEM = "urn:oid:2.16.756.5.32"  # the Swiss social security number (AHVN13): never kept
AHV = re.compile(r"^756\.?\d{4}\.?\d{4}\.?\d{2}$")
BOOK, CANCEL = frozenset({"proposed", "pending", "booked"}), frozenset({"cancelled", "entered-in-error"})
CODES = "https://convocations.example.org/fhir/CodeSystem/"  # our code systems (statuses, requests)
TEST_DATA = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}
# Problem codes -> OperationOutcome issue types (FHIR value set issue-type).
ISSUE_TYPES = {
    "required": "required",
    "invalid": "value",
    "unknown": "code-invalid",
    "not-supported": "not-supported",
    "past": "business-rule",
    "no-such-key": "not-found",
    "segment": "structure",
    "internal": "transient",
    "login": "login",
    "forbidden": "forbidden",
}
RESOURCES = frozenset({"Appointment", "Bundle", "Patient", "Location", "DocumentReference", "Binary", "resourceType"})


@dataclass
class Item:
    """One Appointment of a request, with the resources its references reach, and the path it sits at."""

    appointment: Appointment
    path: str  # 'Appointment' or 'Bundle.entry[2].resource'
    resources: dict[str, object] = field(default_factory=dict)  # reference -> resource


@dataclass
class Batch:
    """A batch Bundle: each entry validated on its own, an Item or the Problem that refuses it."""

    identifier: str | None
    entries: list[Item | Problem]


def fhirpath(root: str, loc: tuple) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _validated(model, raw, root: str):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        code = "required" if "missing" in err["type"] else "invalid"
        raise Problem(fhirpath(root, tuple(err["loc"])), code, err["msg"][:300]) from None
    except Exception:  # the models raise KeyError and others on some malformed input (e.g. unknown resourceType)
        raise Problem(root, "invalid", "not a valid FHIR R4 resource") from None


def parse(body: bytes) -> Appointment | Bundle | Batch:
    """A request body -> an Appointment, a transaction Bundle or a Batch, or the Problem that names what is
    wrong (for a batch, only what is wrong with the Bundle itself: each entry is judged alone)."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Problem("body", "segment", "the body is not JSON") from None
    kind = raw.get("resourceType") if isinstance(raw, dict) else None
    if kind == "Appointment":
        return _validated(Appointment, raw, "Appointment")
    if kind != "Bundle":
        raise Problem("resourceType", "not-supported", "send an Appointment or a Bundle (transaction or batch)")
    if raw.get("type") != "batch":
        return _validated(Bundle, raw, "Bundle")
    entries = raw.get("entry") if isinstance(raw.get("entry"), list) else []
    shell = _validated(
        Bundle,
        {**raw, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries if isinstance(e, dict)]},
        "Bundle",
    )
    judged: list[Item | Problem] = []
    for i, entry in enumerate(entries):
        at = f"Bundle.entry[{i}].resource"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        try:
            if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
                raise Problem(at, "not-supported", "each entry of a batch must be an Appointment")
            appointment = _validated(Appointment, resource, at)
            judged.append(Item(appointment, at, _contained(appointment)))
        except Problem as problem:
            judged.append(problem)
    return Batch(shell.identifier.value if shell.identifier else None, judged)


def items(resource: Appointment | Bundle) -> list[Item]:
    """The Appointments of an Appointment or a transaction Bundle, each with what its references may reach
    (the entries of a transaction may refer to each other by fullUrl or type/id)."""
    if isinstance(resource, Appointment):
        return [Item(resource, "Appointment", _contained(resource))]
    if resource.type != "transaction":
        raise Problem("Bundle.type", "not-supported", "send a transaction or a batch Bundle")
    shared: dict[str, object] = {}
    for entry in resource.entry or []:
        if entry.resource is not None:
            for key in _keys(entry.fullUrl, entry.resource):
                shared[key] = entry.resource
    return [
        Item(entry.resource, f"Bundle.entry[{i}].resource", {**shared, **_contained(entry.resource)})
        for i, entry in enumerate(resource.entry or [])
        if isinstance(entry.resource, Appointment)
    ]


def _keys(full_url: str | None, resource) -> list[str]:
    keys = [full_url] if full_url else []
    if getattr(resource, "id", None):
        keys.append(f"{resource.get_resource_type()}/{resource.id}")
    return keys


def _contained(resource) -> dict[str, object]:
    return {f"#{r.id}": r for r in (resource.contained or []) if getattr(r, "id", None)}


def action_of(a: Appointment) -> str | None:
    return "book" if a.status in BOOK else "cancel" if a.status in CANCEL else None


def booking(item: Item, system: HospitalSystem) -> Booking:
    """The appointment an Appointment resource books or cancels."""
    a, at = item.appointment, item.path
    ident = next(
        (i for i in a.identifier or [] if i.value and i.system == system.appointment_identifier_system),
        next((i for i in a.identifier or [] if i.value), None),
    )
    appointment_id = require(ident.value if ident else a.id, f"{at}.identifier", "an identifier (or id)")
    action = action_of(a)
    if action is None:
        raise Problem(
            f"{at}.status",
            "not-supported",
            "only proposed, pending, booked (a letter) and cancelled or entered-in-error (its withdrawal) are acted on",
        )
    b = Booking(
        appointment_id=str(appointment_id)[:120],
        action=action,  # type: ignore[arg-type]
        where={(): at, ("convocation_id",): f"{at}.identifier"},
    )
    if action == "cancel":
        reason = a.cancelationReason
        b.reason = (
            (reason.text or next((c.display for c in reason.coding or [] if c.display), None)) if reason else None
        )
        b.where[("reason",)] = f"{at}.cancelationReason"
        return b
    patient, patient_at = _actor(item, "Patient")
    if patient is None:
        raise Problem(
            f"{at}.participant",
            "required",
            "a participant whose actor is the Patient (contained or in the transaction Bundle)",
        )
    _patient(patient, patient_at, system, b)
    b.starts_at = a.start
    b.where[("appointment", "starts_at")] = f"{at}.start"
    codes = [c.code for concept in (a.serviceType or []) + (a.specialty or []) for c in concept.coding or [] if c.code]
    b.department = next((c for c in codes if c in system.departments), codes[0] if codes else None)
    b.where[("appointment", "department")] = f"{at}.serviceType"
    location: Any
    location, location_at = _actor(item, "Location")
    if location is not None:
        b.place = location.name
        address = location.address
        if address is not None:
            b.address = (
                address.text
                or ", ".join(
                    p
                    for p in (
                        " ".join(address.line or []),
                        " ".join(x for x in (address.postalCode, address.city) if x),
                    )
                    if p
                )
                or None
            )
        b.where.update({("appointment", "place"): location_at, ("appointment", "place", "address"): location_at})
    b.instructions = a.patientInstruction
    b.where[("appointment", "instructions")] = f"{at}.patientInstruction"
    b.where[("appointment",)] = at
    _letter(item, b)
    return b


def _actor(item: Item, kind: str) -> tuple[object | None, str]:
    for i, participant in enumerate(item.appointment.participant or []):
        reference = participant.actor.reference if participant.actor else None
        resource = item.resources.get(reference or "")
        if resource is not None and resource.get_resource_type() == kind:  # type: ignore[attr-defined]
            return resource, f"{item.path}.participant[{i}].actor"
    return None, f"{item.path}.participant"


def _patient(p, at: str, system: HospitalSystem, b: Booking) -> None:
    ids = [i for i in p.identifier or [] if i.value and i.system != AHV_SYSTEM and not AHV.match(i.value)]
    mr = [i for i in ids if i.type and any(c.code == "MR" for c in i.type.coding or [])]
    own = [i for i in ids if system.patient_identifier_system and i.system == system.patient_identifier_system]
    chosen = (own or mr or ids or [None])[0]
    b.patient_id = chosen.value if chosen else None
    names = p.name or []
    name = next(
        (n for n in names if n.use == "official"),
        next((n for n in names if n.use == "usual"), names[0] if names else None),
    )
    if name is not None:
        b.patient_name = name.text or " ".join([*(name.prefix or []), *(name.given or []), name.family or ""]).strip()
    birth = p.birthDate
    if isinstance(birth, date):
        b.birth_date = birth
    elif birth:
        b.warnings.append(Problem(f"{at}.birthDate", "invalid", "a partial birth date is not kept"))
    for t in p.telecom or []:
        if t.system == "email" and t.value and not b.email:
            b.email = t.value
        elif t.system in ("phone", "sms") and t.use == "mobile" and t.value and not b.mobile:
            b.mobile = t.value
    languages = sorted(p.communication or [], key=lambda c: not c.preferred)
    code = next((c.code for comm in languages for c in (comm.language.coding or []) if c.code), None)
    b.language, warning = language_of(code, system, f"{at}.communication")
    if warning:
        b.warnings.append(warning)
    b.where.update(
        {
            ("patient",): at,
            ("patient", "id"): f"{at}.identifier",
            ("patient", "name"): f"{at}.name",
            ("patient", "birth_date"): f"{at}.birthDate",
            ("patient", "email"): f"{at}.telecom",
            ("patient", "mobile"): f"{at}.telecom",
            ("patient", "language"): f"{at}.communication",
        }
    )


def _letter(item: Item, b: Booking) -> None:
    """The PDF: a DocumentReference's attachment or a Binary, named by supportingInformation or the only one
    the request carries; without one the issuer renders the letter."""
    a = item.appointment
    named = [
        (item.resources.get(r.reference or ""), f"{item.path}.supportingInformation[{i}]")
        for i, r in enumerate(a.supportingInformation or [])
    ]
    distinct: list[Any] = list({id(r): r for r in item.resources.values()}.values())
    candidates = [(r, w) for r, w in named if r is not None] or [
        (r, f"{item.path} ({r.get_resource_type()}/{getattr(r, 'id', '')})")
        for r in distinct
        if r.get_resource_type() in ("DocumentReference", "Binary")
    ]
    for resource, where in candidates:
        kind = resource.get_resource_type()  # type: ignore[attr-defined]
        if kind == "Binary":
            content_type, data = resource.contentType, resource.data  # type: ignore[attr-defined]
        elif kind == "DocumentReference" and resource.content:  # type: ignore[attr-defined]
            attachment = resource.content[0].attachment  # type: ignore[attr-defined]
            content_type, data = attachment.contentType, attachment.data
        else:
            continue
        b.where[("document_pdf_base64",)] = where
        if content_type != "application/pdf" or not data:
            raise Problem(where, "not-supported", "the letter must be application/pdf with its data inline")
        if not bytes(data).startswith(b"%PDF-"):
            raise Problem(where, "invalid", "the document is not a PDF (no %PDF- header)")
        b.pdf_base64 = base64.b64encode(bytes(data)).decode("ascii")
        return


# --- answers ----------------------------------------------------------------------------------------


def outcome(problems: list[Problem], *, severity: str = "error", information: str | None = None) -> dict:
    """An OperationOutcome: one issue per problem, with its element as a FHIRPath expression (or, for what is
    no element, such as a header, its name in ``diagnostics``)."""
    issues = []
    for p in problems:
        issue = {"severity": severity, "code": ISSUE_TYPES.get(p.code, "invalid"), "details": {"text": p.text}}
        if p.where.split(".")[0].split("[")[0].split(" ")[0] in RESOURCES:
            issue["expression"] = [p.where]
        else:
            issue["diagnostics"] = p.where
        issues.append(issue)
    if information or not issues:
        issues.insert(0, {"severity": "information", "code": "informational", "details": {"text": information or "ok"}})
    return OperationOutcome(issue=issues).model_dump(mode="json", exclude_none=True)


def warnings_outcome(information: str, warnings: list[Problem]) -> dict:
    return outcome(warnings, severity="warning", information=information)


def capability_statement(base_url: str, now: datetime) -> dict:
    """What this endpoint does, for clients that read /fhir/metadata first."""
    return CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": now.isoformat(),
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "software": {"name": "Convocations hospital gateway"},
            "implementation": {"description": "Appointment letters delivered by e-mail and SMS code", "url": base_url},
            "rest": [
                {
                    "mode": "server",
                    "documentation": "POST an Appointment (with a contained or bundled Patient, and a DocumentReference or"
                    " Binary PDF, else the letter is rendered) to send a letter; status cancelled withdraws"
                    " it. Authenticate with an OAuth2 client-credentials access token.",
                    "security": {
                        "service": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                        "code": "OAuth",
                                    }
                                ]
                            }
                        ]
                    },
                    "resource": [
                        {
                            "type": "Appointment",
                            "interaction": [{"code": "create"}, {"code": "update"}],
                            "supportedProfile": [],
                        }
                    ],
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                }
            ],
        }
    ).model_dump(mode="json", exclude_none=True)


def _about(system: HospitalSystem, appointment_id: str) -> dict:
    identifier = {"value": appointment_id}
    if system.appointment_identifier_system:
        identifier["system"] = system.appointment_identifier_system
    return {"type": "Appointment", "identifier": identifier}


def _meta(sandbox: bool) -> dict:
    return {"meta": {"security": [TEST_DATA]}} if sandbox else {}


def status_communication(
    *,
    system: HospitalSystem,
    appointment_id: str,
    event_id: str,
    status: str,
    display: str,
    at: datetime,
    detail: str | None,
    sandbox: bool,
) -> dict:
    """A delivery status as a Communication about the hospital's Appointment; a sandbox test is labelled
    HTEST (test health data)."""
    resource = {
        "resourceType": "Communication",
        **_meta(sandbox),
        "status": "completed",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{event_id}"}],
        "category": [{"coding": [{"system": f"{CODES}convocation-status", "code": status, "display": display}]}],
        "about": [_about(system, appointment_id)],
        "sent": at.isoformat(),
        "payload": [{"contentString": display + (f" ({detail})" if detail else "")}],
    }
    return Communication.model_validate(resource).model_dump(mode="json", exclude_none=True)


def reissue_task(
    *,
    system: HospitalSystem,
    appointment_id: str,
    action_id: str,
    reason: str,
    display: str,
    requested_at: datetime,
    sandbox: bool,
) -> dict:
    """The secretariat's request to send the letter again, as a Task for the hospital system: it answers by
    sending the Appointment again with the same identifier."""
    resource = {
        "resourceType": "Task",
        **_meta(sandbox),
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{action_id}"}],
        "code": {
            "coding": [
                {"system": f"{CODES}convocation-request", "code": "resend", "display": "Send the convocation again"}
            ]
        },
        "reasonCode": {
            "coding": [{"system": f"{CODES}convocation-request-reason", "code": reason, "display": display}]
        },
        "focus": _about(system, appointment_id),
        "authoredOn": requested_at.isoformat(),
        "description": "The department's secretariat asked for this letter to be sent again: send the Appointment"
        " again with the same identifier.",
    }
    return Task.model_validate(resource).model_dump(mode="json", exclude_none=True)
