"""The JSON API for hospital systems: the console's search, view, actions and department figures, authorised
by OAuth2 client-credentials access tokens from the same provider, scoped to the token's departments."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, model_validator

from secretariat import domain, store
from secretariat.auth import Identity, Oidc, Unauthenticated
from secretariat.console import Console, Found
from shared import crypto
from shared.logs import get_logger

log = get_logger(__name__)
bearer = HTTPBearer(auto_error=False, description="Access token (client credentials) from the hospital's provider.")
# What each refusal of an action answers (anything else: 409, the action does not fit the letter's state).
ACTION_STATUS = {
    "not-found": 404,
    "not-allowed": 403,
    "mobile-invalid": 400,
    "mobile-not-mobile": 400,
    "mobile-country": 400,
    "email-invalid": 400,
    "reason-required": 400,
    "reason-too-long": 400,
    "unknown-action": 400,
    "patient-mismatch": 400,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code


class PatientOut(BaseModel):
    name: str
    birth_date: date | None
    place: str | None = Field(description="Where the appointment is (building, floor or room).")


class Convocation(BaseModel):
    convocation_id: uuid.UUID
    message_id: uuid.UUID | None
    department: str | None
    department_name: str | None
    appointment_at: datetime | None
    patient: PatientOut | None = Field(description="Who the patient is: to the letter's own department only.")
    delivery: str | None = Field(description="'email' or 'postal', as the patient chose.")
    status: str | None
    status_at: datetime | None
    bounced_at: datetime | None
    downloaded_at: datetime | None
    postal_at: datetime | None
    postal_reason: str | None = Field(
        description="Why paper: preference, no-email, email-failed, not-downloaded, secretariat, patient-request."
    )
    printed_at: datetime | None
    posted_at: datetime | None
    returned_at: datetime | None
    locked_until: datetime | None
    phone_hint: str | None = Field(description="The mobile number on file (or last used), masked.")


class TimelineEntry(BaseModel):
    at: datetime
    kind: str = Field(
        description="sealed, e-mailed, bounced, code-requested, code-sent, code-failed, verified, "
        "downloaded, postal, postal-fallback, postal-cancelled, printed, posted, returned, "
        "locked, unlocked, binding-reset, binding-ended, mobile-corrected, "
        "reissue-requested (waiting for the hospital system to send the letter again), "
        "cancelled, superseded, expired, withdrawn"
    )
    detail: str | None
    action_id: uuid.UUID | None


class ActionAsked(BaseModel):
    action_id: uuid.UUID
    kind: str
    requested_at: datetime
    done_at: datetime | None


class ConvocationDetail(Convocation):
    phone_verified: bool | None = Field(
        description="Whether the patient has a verified number, to which later letters' codes go without asking"
        " (null: nothing reported yet)."
    )
    timeline: list[TimelineEntry]
    actions: list[ActionAsked]
    available_actions: list[str] = Field(description="The actions that fit the letter now, for this token.")
    reissue_unanswered_since: datetime | None = Field(
        description="When the hospital system was asked for the letter again, if it has not answered within the"
        " wait (REISSUE_WAIT_SECONDS): post it, or ask again."
    )


class PatientSearch(BaseModel):
    patient_id: str | None = Field(None, min_length=1, max_length=64, description="The hospital's patient id (exact).")
    name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Words of the name: each must be a whole word of it (accents and case aside).",
    )
    birth_date: date | None = None

    @model_validator(mode="after")
    def _something(self) -> PatientSearch:
        if not (self.patient_id or self.name or self.birth_date):
            raise ValueError("give patient_id, name or birth_date")
        return self


class ActionRequest(BaseModel):
    action: Literal[
        "post", "email-instead", "resend", "correct-email", "withdraw", "correct-mobile", "reset-binding", "unlock"
    ] = Field(
        description="resend, correct-email, email-instead: the hospital system is asked to publish the convocation"
        " again; a new link is e-mailed (for correct-email to the new address; for email-instead the print"
        " room first drops the letter, not printed yet) and the old one says it was replaced. Done when"
        " the timeline's e-mailed entry carries this action_id. Refused (409) when it does not fit the"
        " letter's state: see available_actions."
    )
    reason: str = Field(
        min_length=domain.REASON_MIN, max_length=domain.REASON_MAX, description="Why: kept in the staff audit."
    )
    mobile: str | None = Field(
        None, max_length=40, description="For correct-mobile: the new number (a mobile of an allowed country)."
    )
    email: str | None = Field(
        None,
        max_length=254,
        description="For correct-email: the new address (not kept by the secretariat; sealed for the issuer).",
    )


class ActionAccepted(BaseModel):
    action_id: uuid.UUID
    status: Literal["requested"] = "requested"


class ErasureRequest(BaseModel):
    convocation_id: uuid.UUID = Field(description="A convocation of the patient, in your departments.")
    reason: str = Field(
        min_length=domain.REASON_MIN,
        max_length=domain.REASON_MAX,
        description="Why (the patient's request and how it was checked): kept in the staff audit. Do not name the"
        " patient: the audit keeps it after the erasure.",
    )
    patient_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The hospital's id of the same patient (checked against the convocation): reaches their letters"
        " recorded under every key of the patient-ref ring, not only the one the convocation's was made with.",
    )
    confirm: Literal[True] = Field(description="An erasure cannot be undone: true to confirm it.")


class ErasureAccepted(BaseModel):
    erasure_id: uuid.UUID
    status: Literal["requested"] = "requested"


class ErasureConfirmation(BaseModel):
    service: str
    convocations: int = Field(description="The patient's convocations it erased.")
    rows: int = Field(description="The rows it deleted or made anonymous.")
    confirmed_at: datetime


class ErasureOut(BaseModel):
    erasure_id: uuid.UUID
    requested_at: datetime
    complete: bool = Field(description="Every service that holds letters' data has confirmed.")
    waiting_for: list[str] = Field(description="The services that have not confirmed yet.")
    confirmations: list[ErasureConfirmation]


class DepartmentFigures(BaseModel):
    department: str
    department_name: str | None
    sent: int = Field(description="Letters first sealed in the period.")
    emailed: int
    downloaded_within: int = Field(description="Downloaded within `days` days of the e-mail.")
    paper: int
    paper_by_reason: dict[str, int]
    bounced: int
    returned: int = Field(description="Paper letters the post returned as undeliverable.")
    locked_out: int = Field(description="Letters whose patient was locked out by wrong codes at least once.")
    median_seconds: float | None = Field(description="Median time from the e-mail to the download.")


class FiguresOut(BaseModel):
    date_from: date
    date_to: date
    days: int
    departments: list[DepartmentFigures]


def _convocation(found: Found) -> dict:
    row, patient = found.row, found.patient
    return {
        "convocation_id": row["id"],
        "patient": dataclasses.asdict(patient) if patient else None,
        **{k: row[k] for k in Convocation.model_fields if k not in ("convocation_id", "patient")},
    }


def create_api(console: Console, oidc: Oidc) -> FastAPI:
    api = FastAPI(
        title="Convocations secretariat API",
        version="1.1.0",
        docs_url=None,
        redoc_url=None,
        description="Search convocations of your departments (by id, dates, worklist, or by who the patient is),"
        " read their delivery timeline, act on them (each action with a reason, carried out by the"
        " service that owns the data), and read your departments' figures. Authenticate with an OAuth2"
        " client-credentials access token (scope convocations.read, and convocations.act for actions);"
        " the token's departments bound what you see.",
    )

    @api.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.code}, status_code=exc.status, headers=headers)

    async def client(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
        if credentials is None:
            raise ApiError(401, "token-required")
        try:
            who = await oidc.api_client(credentials.credentials)
        except Unauthenticated as exc:
            log.warning("API token refused", reason=str(exc))
            await console.refused("api", "api-token", "token", detail=str(exc))
            raise ApiError(401, "invalid-token") from None
        token_hash = crypto.keyed_hash(console.s.secretariat_secret_key, "api-token", credentials.credentials)
        async with console.pool.acquire() as conn:  # its first use is audited by the database
            await store.open_session(
                conn, token_hash, subject=who.subject, name=who.name, via="api", roles=[], departments=who.scope() or []
            )
        return dataclasses.replace(who, session_hash=token_hash)

    @api.get("/v1/convocations", response_model=list[Convocation])
    async def search(
        who: Identity = Depends(client),
        convocation_id: uuid.UUID | None = None,
        department: str | None = Query(None, max_length=32),
        date_from: date | None = None,
        date_to: date | None = None,
        worklist: Literal["bounced", "not-downloaded", "locked", "paper-today", "returned", "unanswered"] | None = None,
        days: int = Query(3, ge=0, le=365),
    ):
        """Search by id, department and appointment dates (Geneva days, both included), or a worklist
        (returned: paper letters the post returned; unanswered: requests the hospital system has not answered)."""
        c = domain.Criteria(
            convocation_id=convocation_id,
            department=department,
            date_from=date_from,
            date_to=date_to,
            worklist=worklist,
            days=days,
        )
        if c.empty():
            raise ApiError(400, "criteria-required")
        return [_convocation(f) for f in await console.search(who, c) or []]

    @api.post("/v1/convocations/search", response_model=list[Convocation])
    async def search_patient(body: PatientSearch, who: Identity = Depends(client)):
        """By patient id, name words and/or birth date, in the body so that they stay out of URLs and logs."""
        if body.name is not None and not domain.name_words(body.name):
            raise ApiError(400, "name-invalid")
        found = await console.search(
            who, domain.Criteria(patient_id=body.patient_id, name=body.name, birth_date=body.birth_date)
        )
        return [_convocation(f) for f in found or []]

    @api.get(
        "/v1/convocations/{convocation_id}",
        response_model=ConvocationDetail,
        responses={404: {"description": "Unknown, or not in your departments"}},
    )
    async def view(convocation_id: uuid.UUID, who: Identity = Depends(client)):
        v = await console.view(who, convocation_id)
        if v is None:
            raise ApiError(404, "not-found")
        return {
            **_convocation(Found(v.row, v.patient)),
            "phone_verified": v.bound,
            "timeline": [
                {"at": t["at"], "kind": t["kind"], "detail": t["detail"], "action_id": t["action_id"]}
                for t in v.timeline
            ],
            "actions": [
                {"action_id": a["id"], "kind": a["kind"], "requested_at": a["requested_at"], "done_at": a["done_at"]}
                for a in v.actions
            ],
            "available_actions": v.available,
            "reissue_unanswered_since": v.unanswered["requested_at"] if v.unanswered else None,
        }

    @api.post(
        "/v1/convocations/{convocation_id}/actions",
        response_model=ActionAccepted,
        status_code=202,
        responses={
            404: {"description": "Unknown, or not in your departments"},
            403: {"description": "The token lacks the convocations.act scope"},
            400: {"description": "The reason, number or address is not valid"},
            409: {"description": "The action does not fit the convocation's state"},
        },
    )
    async def act(convocation_id: uuid.UUID, body: ActionRequest, who: Identity = Depends(client)):
        """Ask for an action; it is done when its entry (with this action_id) appears in the timeline."""
        outcome = await console.act(who, convocation_id, body.action, body.reason, body.mobile or "", body.email or "")
        if outcome.ok:
            return {"action_id": outcome.action_id}
        raise ApiError(ACTION_STATUS.get(outcome.code, 409), outcome.code)

    @api.post(
        "/v1/erasures",
        response_model=ErasureAccepted,
        status_code=202,
        responses={
            404: {"description": "Unknown convocation, or not in your departments"},
            403: {"description": "The token lacks the convocations.act scope"},
            400: {"description": "The reason is not valid, or patient_id is not the convocation's patient"},
            409: {"description": "The convocation is not sealed yet: nothing names its patient"},
        },
    )
    async def erase(body: ErasureRequest, who: Identity = Depends(client)):
        """Erase everything about the patient of this convocation, in every service, at their request: every
        letter, e-mail, SMS, verified number and timeline goes; the audits keep who did what without the
        patient; the hospital system gets the status 'erased' of each letter. Done when GET
        /v1/erasures/{erasure_id} says complete."""
        outcome = await console.erase(who, body.convocation_id, body.reason, body.patient_id or "")
        if outcome.ok:
            return {"erasure_id": outcome.action_id}
        raise ApiError(ACTION_STATUS.get(outcome.code, 409), outcome.code)

    @api.get("/v1/erasures/{erasure_id}", response_model=ErasureOut, responses={404: {"description": "Unknown"}})
    async def erasure(erasure_id: uuid.UUID, who: Identity = Depends(client)):
        found = await console.erasure(who, erasure_id)
        if found is None:
            raise ApiError(404, "not-found")
        row, confirmations = found
        waiting = domain.erasure_waiting_for(confirmations)
        return {
            "erasure_id": row["id"],
            "requested_at": row["requested_at"],
            "complete": not waiting,
            "waiting_for": waiting,
            "confirmations": [dict(c) for c in confirmations],
        }

    @api.get("/v1/figures", response_model=FiguresOut)
    async def figures(
        who: Identity = Depends(client),
        date_from: date | None = None,
        date_to: date | None = None,
        days: int = Query(3, ge=0, le=365),
    ):
        """Your departments' figures for the letters first sealed from date_from to date_to (Geneva days, both
        included; the last 30 days by default)."""
        period, bad = domain.period(
            date_from=date_from.isoformat() if date_from else "",
            date_to=date_to.isoformat() if date_to else "",
            days=str(days),
            today=datetime.now(domain.ZURICH).date(),
        )
        if bad:
            raise ApiError(400, "period-invalid")
        rows = await console.figures(who, period) or []
        return {
            "date_from": period.start,
            "date_to": period.end,
            "days": period.days,
            "departments": [dataclasses.asdict(f) for f in rows],
        }

    return api
