"""The JSON API for hospital systems: the console's search, view and actions, authorised by OAuth2
client-credentials access tokens from the same provider, scoped to the token's departments."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from secretariat import domain
from secretariat.auth import Identity, Oidc, Unauthenticated
from secretariat.console import Console
from secretariat.metrics import STAFF_REFUSALS
from shared.logs import get_logger

log = get_logger(__name__)
bearer = HTTPBearer(auto_error=False, description="Access token (client credentials) from the hospital's provider.")


class ApiError(Exception):
    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code


class Convocation(BaseModel):
    convocation_id: uuid.UUID
    message_id: uuid.UUID | None
    department: str | None
    appointment_at: datetime | None
    delivery: str | None = Field(description="'email' or 'postal', as the patient chose.")
    status: str | None
    status_at: datetime | None
    bounced_at: datetime | None
    downloaded_at: datetime | None
    postal_at: datetime | None
    locked_until: datetime | None
    phone_hint: str | None = Field(description="The mobile number, masked.")


class TimelineEntry(BaseModel):
    at: datetime
    kind: str = Field(description="sealed, e-mailed, bounced, code-requested, code-sent, code-failed, downloaded, "
                                  "postal, postal-fallback, locked, unlocked, binding-reset, mobile-corrected, "
                                  "reissue-requested (waiting for the hospital system to send the letter again), "
                                  "cancelled, superseded, expired, withdrawn")
    detail: str | None
    action_id: uuid.UUID | None


class ConvocationDetail(Convocation):
    timeline: list[TimelineEntry]


class PatientSearch(BaseModel):
    patient_id: str = Field(min_length=1, max_length=64, description="The hospital's patient id (exact).")


class ActionRequest(BaseModel):
    action: Literal["post", "resend", "correct-email", "withdraw", "correct-mobile", "reset-binding", "unlock"] = Field(
        description="resend and correct-email: the hospital system is asked to publish the convocation again; a new"
                    " link is e-mailed (for correct-email to the new address) and the old one says it was replaced."
                    " Done when the timeline's e-mailed entry carries this action_id.")
    reason: str = Field(min_length=domain.REASON_MIN, max_length=domain.REASON_MAX,
                        description="Why: kept in the staff audit.")
    mobile: str | None = Field(None, max_length=40, description="For correct-mobile: the new number.")
    email: str | None = Field(None, max_length=254, description="For correct-email: the new address (not kept by"
                                                               " the secretariat; sealed for the issuer).")


class ActionAccepted(BaseModel):
    action_id: uuid.UUID
    status: Literal["requested"] = "requested"


def _convocation(row) -> dict:
    return {"convocation_id": row["id"], **{k: row[k] for k in Convocation.model_fields if k != "convocation_id"}}


def create_api(console: Console, oidc: Oidc) -> FastAPI:
    api = FastAPI(
        title="Convocations secretariat API", version="1.0.0", docs_url=None, redoc_url=None,
        description="Search convocations of your departments, read their delivery timeline, and act on them "
                    "(each action with a reason, carried out by the service that owns the data). "
                    "Authenticate with an OAuth2 client-credentials access token (scope convocations.read, "
                    "and convocations.act for actions); the token's departments bound what you see.",
    )

    @api.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.code}, status_code=exc.status, headers=headers)

    async def client(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
        if credentials is None:
            raise ApiError(401, "token-required")
        try:
            return await oidc.api_client(credentials.credentials)
        except Unauthenticated as exc:
            STAFF_REFUSALS.labels("token").inc()
            log.warning("API token refused", reason=str(exc))
            raise ApiError(401, "invalid-token") from None

    @api.get("/v1/convocations", response_model=list[Convocation])
    async def search(who: Identity = Depends(client), convocation_id: uuid.UUID | None = None,
                     department: str | None = Query(None, max_length=32), date_from: date | None = None,
                     date_to: date | None = None,
                     worklist: Literal["bounced", "not-downloaded", "locked", "paper-today"] | None = None,
                     days: int = Query(3, ge=0, le=365)):
        """Search by id, department and appointment dates (Geneva days, both included), or a worklist."""
        c = domain.Criteria(convocation_id=convocation_id, department=department, date_from=date_from,
                            date_to=date_to, worklist=worklist, days=days)
        if c.empty():
            raise ApiError(400, "criteria-required")
        return [_convocation(r) for r in await console.search(who, c)]

    @api.post("/v1/convocations/search", response_model=list[Convocation])
    async def search_patient(body: PatientSearch, who: Identity = Depends(client)):
        """By patient id, in the body so that it stays out of URLs and access logs."""
        return [_convocation(r) for r in await console.search(who, domain.Criteria(patient_id=body.patient_id))]

    @api.get("/v1/convocations/{convocation_id}", response_model=ConvocationDetail,
             responses={404: {"description": "Unknown, or not in your departments"}})
    async def view(convocation_id: uuid.UUID, who: Identity = Depends(client)):
        found = await console.view(who, convocation_id)
        if found is None:
            raise ApiError(404, "not-found")
        row, timeline, _ = found
        return {**_convocation(row), "timeline": [
            {"at": t["at"], "kind": t["kind"], "detail": t["detail"], "action_id": t["action_id"]} for t in timeline]}

    @api.post("/v1/convocations/{convocation_id}/actions", response_model=ActionAccepted, status_code=202,
              responses={404: {"description": "Unknown, or not in your departments"},
                         403: {"description": "The token lacks the convocations.act scope"},
                         409: {"description": "The action does not fit the convocation's state"}})
    async def act(convocation_id: uuid.UUID, body: ActionRequest, who: Identity = Depends(client)):
        """Ask for an action; it is done when its entry (with this action_id) appears in the timeline."""
        outcome = await console.act(who, convocation_id, body.action, body.reason, body.mobile or "", body.email or "")
        if outcome.ok:
            return {"action_id": outcome.action_id}
        status = {"not-found": 404, "not-allowed": 403, "mobile-invalid": 400, "email-invalid": 400,
                  "reason-required": 400, "reason-too-long": 400}.get(outcome.code, 409)
        raise ApiError(status, outcome.code)

    return api
