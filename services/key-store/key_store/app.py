"""The key store's HTTP API, its destruction sweep and its operator commands.

    POST /v1/periods          {"expires_at": ...}  issuer only: the period key of a letter's expiry (made on first use)
    GET  /v1/periods/{period}                      issuer and portal: a period's key; 410 once destroyed

Every request carries its caller's bearer token (ISSUER_TOKEN, PORTAL_TOKEN); anything else is 401. Keys go
out only in answers, never in a log line or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
from datetime import datetime, timezone

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import AwareDatetime, BaseModel

from key_store.metrics import DESTROYED, OVERDUE, PERIODS, REQUESTS
from key_store.settings import KeyStoreSettings
from key_store.store import KeyFiles, PeriodClosed, TooEarly
from shared import crypto
from shared.http import MAX_BODY_BYTES, BodyLimit
from shared.logs import configure_logging, get_logger
from shared.metrics import PERIODIC_LAST_SUCCESS
from shared.runtime import serve

SERVICE = "key-store"
log = get_logger(__name__)


class ForExpiry(BaseModel):
    expires_at: AwareDatetime


def key_files(settings: KeyStoreSettings) -> KeyFiles:
    return KeyFiles(
        settings.key_store_dir,
        settings.key_store_master_key,
        period_seconds=settings.period_seconds,
        grace_seconds=settings.destroy_grace_seconds,
    )


def sweep(files: KeyFiles, now: datetime) -> list[str]:
    """Destroy every period key past its end plus the grace; refresh the gauges. Returns the ids destroyed."""
    destroyed = []
    for period in files.due(now):
        files.destroy(period.period_id, now)
        DESTROYED.inc()
        destroyed.append(period.period_id)
        log.info("period key destroyed", period=period.period_id, ended_at=period.ends_at.isoformat())
    periods = files.periods()
    PERIODS.labels("live").set(sum(1 for p in periods if p.key is not None))
    PERIODS.labels("destroyed").set(sum(1 for p in periods if p.key is None))
    OVERDUE.set(sum(1 for p in periods if p.key is not None and p.destroy_after <= now))
    return destroyed


def create_app(settings: KeyStoreSettings | None = None) -> FastAPI:
    settings = settings or KeyStoreSettings()
    configure_logging(SERVICE, settings.log_level)
    files = key_files(settings)
    callers = {"issuer": settings.issuer_token, "access-portal": settings.portal_token}

    def caller_of(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        for name, expected in callers.items():
            if hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
                return name
        return None

    def answer(caller: str, action: str, status: int, body: dict) -> JSONResponse:
        REQUESTS.labels(caller, action, str(status)).inc()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    async def sweep_loop() -> None:
        while True:
            try:
                await asyncio.to_thread(sweep, files, datetime.now(timezone.utc))
                PERIODIC_LAST_SUCCESS.labels(SERVICE, "key-store-sweep").set_to_current_time()
            except Exception:
                log.exception("destruction sweep failed; retrying next round")
            await asyncio.sleep(settings.sweep_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(sweep_loop(), name="key-store-sweep")
        log.info("service started", period_seconds=settings.period_seconds, grace=settings.destroy_grace_seconds)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("service stopped")

    app = FastAPI(title=SERVICE, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.post("/v1/periods")
    async def for_expiry(request: Request) -> JSONResponse:
        caller = caller_of(request)
        if caller is None:
            return answer("unknown", "create", 401, {"detail": "a caller's bearer token is required"})
        if caller != "issuer":
            return answer(caller, "create", 403, {"detail": "only the issuer seals"})
        try:
            asked = ForExpiry.model_validate_json(await request.body())
        except ValueError:
            return answer(caller, "create", 422, {"detail": 'expected {"expires_at": <ISO time with offset>}'})
        try:
            period = files.for_expiry(asked.expires_at, datetime.now(timezone.utc))
        except PeriodClosed as exc:
            return answer(caller, "create", 409, {"detail": str(exc)})
        if period.key is None:
            return answer(caller, "create", 409, {"detail": f"period {period.period_id} is destroyed"})
        return answer(caller, "create", 200, period.answer())

    @app.get("/v1/periods/{period_id}")
    async def get_period(period_id: str, request: Request) -> JSONResponse:
        caller = caller_of(request)
        if caller is None:
            return answer("unknown", "get", 401, {"detail": "a caller's bearer token is required"})
        try:
            period = files.get(period_id)
        except KeyError:
            return answer(caller, "get", 404, {"detail": "no such period"})
        if period.key is None:
            return answer(caller, "get", 410, {"detail": f"period {period_id} was destroyed"})
        return answer(caller, "get", 200, period.answer())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "service": SERVICE}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        # Ready when the key directory can be written and the master key opens what is there.
        ready = True
        try:
            probe = settings.key_store_dir / ".ready"
            probe.write_bytes(b"")
            probe.unlink()
            live = [p for p in files.periods() if p.key is not None]
            if live:
                files.get(live[-1].period_id)
        except (OSError, crypto.CannotOpen, ValueError):
            ready = False
        return JSONResponse({"ready": ready, "keys": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    settings = KeyStoreSettings()
    if not argv:
        serve(create_app(settings), settings)
        return
    configure_logging(SERVICE, settings.log_level)
    files = key_files(settings)
    if argv == ["periods"]:
        for period in files.periods():
            print(json.dumps(period.summary()))
        return
    if len(argv) == 2 and argv[0] == "destroy":
        try:
            period = files.destroy(argv[1], datetime.now(timezone.utc))
        except KeyError:
            raise SystemExit(f"no period {argv[1]!r}") from None
        except TooEarly as exc:
            raise SystemExit(f"refused: {exc}") from None
        print(json.dumps(period.summary()))
        return
    raise SystemExit(f"unknown arguments {argv}: run without arguments to serve, or 'periods', or 'destroy <period>'")
