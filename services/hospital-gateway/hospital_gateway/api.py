"""The HTTP side: FHIR R4 (``/fhir``) and a day's list as CSV (``/csv``), for hospital systems holding an
OAuth2 client-credentials access token of the hospital's provider. Every answer to a FHIR request is FHIR
(OperationOutcome, Bundle); nothing a client sends can cause a 5xx but the database being away (503)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fhir.resources.R4B.bundle import Bundle

from hospital_gateway import csvlist, fhir
from hospital_gateway.booking import Booking, Problem
from hospital_gateway.intake import Accepted, Intake, Unavailable, count
from hospital_gateway.settings import GatewaySettings, HospitalSystem
from shared.logs import get_logger
from shared.oauth import TokenVerifier, Unauthenticated, bearer_token

log = get_logger(__name__)
HTTP_STATUS = {
    "required": 400,
    "invalid": 400,
    "segment": 400,
    "not-supported": 422,
    "unknown": 422,
    "past": 422,
    "no-such-key": 422,
    "internal": 500,
}


def fhir_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return JSONResponse(body, status_code=status, media_type=fhir.MEDIA_TYPE, headers=headers)


class Refusal(Exception):
    """An answer other than success, already shaped: status, FHIR body, headers."""

    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


def _unavailable() -> Refusal:
    return Refusal(
        503,
        fhir.outcome(
            [
                Problem(
                    "request",
                    "internal",
                    "the gateway cannot store the request now; send it again in a minute (same X-Request-Id)",
                )
            ]
        ),
        {"retry-after": "60"},
    )


class Api:
    def __init__(self, settings: GatewaySettings, intake: Intake) -> None:
        self.settings, self.intake = settings, intake
        self.tokens = TokenVerifier(settings.oidc_issuer)

    async def system_of(self, request: Request) -> HospitalSystem:
        """The hospital system whose client holds the request's access token."""
        token = bearer_token(request.headers.get("authorization"))
        try:
            if token is None:
                raise Unauthenticated("no bearer token")
            claims = await self.tokens.client(token, audience=self.settings.api_audience, scope=self.settings.api_scope)
        except Unauthenticated as exc:
            log.info("api request refused", reason=str(exc))
            raise Refusal(
                401,
                fhir.outcome(
                    [Problem("Authorization", "login", "a valid access token (OAuth2 client credentials) is required")]
                ),
                {"www-authenticate": "Bearer"},
            ) from None
        system = self.settings.system_of_client(str(claims.get("client_id") or claims.get("sub")))
        if system is None:
            raise Refusal(
                403,
                fhir.outcome(
                    [Problem("Authorization", "forbidden", "this client is no hospital system of the gateway")]
                ),
            )
        return system

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/fhir/metadata")
        async def metadata(request: Request) -> Response:
            return fhir_response(fhir.capability_statement(str(request.base_url) + "fhir", datetime.now(timezone.utc)))

        @router.post("/fhir/Appointment")
        async def create(request: Request) -> Response:
            return await self._answer(request, self._appointment)

        @router.put("/fhir/Appointment/{resource_id}")
        async def update(resource_id: str, request: Request) -> Response:
            return await self._answer(request, lambda r, s, body: self._appointment(r, s, body, resource_id))

        @router.post("/fhir")
        async def bundle(request: Request) -> Response:
            return await self._answer(request, self._bundle)

        @router.post("/csv")
        async def day_list(request: Request) -> Response:
            return await self._answer(request, self._csv)

        return router

    async def _answer(self, request: Request, work: Callable[..., Awaitable[Response]]) -> Response:
        try:
            system = await self.system_of(request)
            return await work(request, system, await request.body())
        except Refusal as refusal:
            return fhir_response(refusal.body, refusal.status, refusal.headers)
        except Unavailable:
            busy = _unavailable()
            return fhir_response(busy.body, busy.status, busy.headers)

    async def _appointment(
        self, request: Request, system: HospitalSystem, body: bytes, resource_id: str | None = None
    ) -> Response:
        started = time.perf_counter()
        resource = self._parsed(system, body, "Appointment")
        if not isinstance(resource, fhir.Appointment):
            count(system.id, "fhir", "refused", started)
            raise Refusal(
                400,
                fhir.outcome(
                    [
                        Problem(
                            "resourceType", "not-supported", "this endpoint takes an Appointment; POST Bundles to /fhir"
                        )
                    ]
                ),
            )
        if resource_id is not None and resource.id != resource_id:
            count(system.id, "fhir", "refused", started)
            raise Refusal(400, fhir.outcome([Problem("Appointment.id", "invalid", "the id must be the URL's")]))
        [item] = fhir.items(resource)
        if fhir.action_of(resource) is None:
            count(system.id, "fhir", "ignored", started)
            return fhir_response(fhir.outcome([], information=f"status {resource.status} is not acted on"))
        b = self._booking(system, item, started)
        [done] = await self._submit(system, [(b, request.headers.get("x-request-id"))], started)
        return fhir_response(*_created(done, b))

    async def _bundle(self, request: Request, system: HospitalSystem, body: bytes) -> Response:
        started = time.perf_counter()
        resource = self._parsed(system, body, "Bundle")
        if isinstance(resource, fhir.Batch):
            return await self._batch(system, resource, request.headers.get("x-request-id") or resource.identifier)
        if not isinstance(resource, Bundle):
            count(system.id, "fhir", "refused", started)
            raise Refusal(
                400,
                fhir.outcome(
                    [
                        Problem(
                            "resourceType", "not-supported", "POST a Bundle here, an Appointment to /fhir/Appointment"
                        )
                    ]
                ),
            )
        try:
            found = fhir.items(resource)
        except Problem as problem:
            count(system.id, "fhir", "refused", started)
            raise Refusal(HTTP_STATUS.get(problem.code, 400), fhir.outcome([problem])) from None
        request_id = request.headers.get("x-request-id") or (resource.identifier.value if resource.identifier else None)
        return await self._transaction(system, resource, found, request_id, started)

    async def _transaction(
        self, system: HospitalSystem, bundle: Bundle, found: list[fhir.Item], request_id: str | None, started: float
    ) -> Response:
        """All the Bundle's Appointments, or none (one transaction)."""
        acting = [item for item in found if fhir.action_of(item.appointment) is not None]
        if not acting:
            count(system.id, "fhir", "refused", started)
            raise Refusal(422, fhir.outcome([Problem("Bundle.entry", "required", "no Appointment to act on")]))
        bookings = [(self._booking(system, item, started), _entry_id(request_id, item)) for item in acting]
        done = await self._submit(system, bookings, started, n=len(bookings))
        results = {id(item.appointment): (d, b) for item, d, (b, _) in zip(acting, done, bookings, strict=True)}
        entries = []
        for entry in bundle.entry or []:
            result = results.get(id(entry.resource))
            if result is None:
                entries.append(
                    {
                        "response": {
                            "status": "200 OK",
                            "outcome": fhir.outcome([], information="read for the letter, not stored"),
                        }
                    }
                )
            else:
                body, status = _created(*result)
                entries.append({"response": {"status": _status_line(status), "outcome": body}})
        return fhir_response({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

    async def _batch(self, system: HospitalSystem, batch: fhir.Batch, request_id: str | None) -> Response:
        """Each entry on its own: accepted or refused with its reason; an accepted one is one letter."""
        entries = []
        for item in batch.entries:
            started = time.perf_counter()
            try:
                if isinstance(item, Problem):
                    raise item
                if fhir.action_of(item.appointment) is None:
                    count(system.id, "fhir", "ignored", started)
                    entries.append(
                        {
                            "response": {
                                "status": "200 OK",
                                "outcome": fhir.outcome(
                                    [], information=f"status {item.appointment.status} is not acted on"
                                ),
                            }
                        }
                    )
                    continue
                b = self._booking(system, item, started)
                [done] = await self._submit(system, [(b, _entry_id(request_id, item))], started)
                body, status = _created(done, b)
            except Refusal as refusal:
                body, status = refusal.body, refusal.status
            except Problem as problem:
                count(system.id, "fhir", "refused", started)
                body, status = fhir.outcome([problem]), HTTP_STATUS.get(problem.code, 400)
            entries.append({"response": {"status": _status_line(status), "outcome": body}})
        return fhir_response({"resourceType": "Bundle", "type": "batch-response", "entry": entries})

    async def _csv(self, request: Request, system: HospitalSystem, body: bytes) -> Response:
        started = time.perf_counter()
        try:
            rows = csvlist.rows(body)
        except Problem as problem:
            count(system.id, "csv", "refused", started)
            return JSONResponse({"error": f"{problem.where}: {problem.text}"}, status_code=400)
        request_id = request.headers.get("x-request-id")
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        for line, row in rows:
            started = time.perf_counter()
            result: dict[str, Any] = {"line": line, "appointment_id": row.get("appointment_id", "")}
            try:
                b = csvlist.booking(line, row, system)
                if b.appointment_id in seen:
                    raise Problem(
                        f"line {line}, column appointment_id",
                        "invalid",
                        "this appointment is already on an earlier line of the file",
                    )
                seen.add(b.appointment_id)
                [done] = await self.intake.submit(system, [(b, f"{request_id}#{line}" if request_id else None)], "csv")
                count(system.id, "csv", "duplicate" if done.duplicate else "accepted", started)
                result |= {
                    "outcome": "duplicate" if done.duplicate else "accepted",
                    "convocation_id": str(done.convocation_id),
                    "warnings": [f"{w.where}: {w.text}" for w in b.warnings],
                }
            except Problem as problem:
                count(system.id, "csv", "refused", started)
                result |= {"outcome": "refused", "reason": f"{problem.where}: {problem.text}"}
            lines.append(result)
        accepted = sum(1 for r in lines if r["outcome"] != "refused")
        return JSONResponse({"accepted": accepted, "refused": len(lines) - accepted, "lines": lines})

    # --- steps ------------------------------------------------------------------------------------

    def _parsed(self, system: HospitalSystem, body: bytes, expected: str):
        try:
            return fhir.parse(body)
        except Problem as problem:
            count(system.id, "fhir", "refused")
            log.info("fhir request refused", system=system.id, where=problem.where, problem=problem.code)
            raise Refusal(HTTP_STATUS.get(problem.code, 400), fhir.outcome([problem])) from None

    def _booking(self, system: HospitalSystem, item: fhir.Item, started: float) -> Booking:
        try:
            return fhir.booking(item, system)
        except Problem as problem:
            count(system.id, "fhir", "refused", started)
            log.info("fhir appointment refused", system=system.id, where=problem.where, problem=problem.code)
            raise Refusal(HTTP_STATUS.get(problem.code, 400), fhir.outcome([problem])) from None

    async def _submit(
        self, system: HospitalSystem, bookings: list[tuple[Booking, str | None]], started: float, n: int = 1
    ) -> list[Accepted]:
        try:
            done = await self.intake.submit(system, bookings, "fhir")
        except Problem as problem:
            count(system.id, "fhir", "refused", started, n)
            log.info("fhir appointment refused", system=system.id, where=problem.where, problem=problem.code)
            raise Refusal(HTTP_STATUS.get(problem.code, 400), fhir.outcome([problem])) from None
        for d in done:
            count(system.id, "fhir", "duplicate" if d.duplicate else "accepted", started)
        return done


def _entry_id(request_id: str | None, item: fhir.Item) -> str | None:
    return f"{request_id}#{item.path}" if request_id else None


def _created(done: Accepted, b: Booking) -> tuple[dict, int]:
    if done.duplicate:
        return fhir.outcome(
            [], information=f"already accepted (same request id): convocation {done.convocation_id}"
        ), 200
    if b.action == "cancel":
        text = "already cancelled" if done.already_cancelled else "accepted: the letter is withdrawn"
        return fhir.outcome([], information=f"{text} (convocation {done.convocation_id})"), 200
    return fhir.warnings_outcome(
        f"accepted: the letter will be sent (convocation {done.convocation_id})", b.warnings
    ), 201


def _status_line(status: int) -> str:
    return {
        200: "200 OK",
        201: "201 Created",
        400: "400 Bad Request",
        401: "401 Unauthorized",
        422: "422 Unprocessable Entity",
        503: "503 Service Unavailable",
    }.get(status, str(status))
