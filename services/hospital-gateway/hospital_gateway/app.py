"""Hospital gateway process: an MLLP listener per hospital system, the FHIR and CSV API, the statuses and
requests back, the sweeper; health and metrics."""

from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI

from hospital_gateway import mllp, store
from hospital_gateway.api import Api
from hospital_gateway.handlers import GatewayHandlers
from hospital_gateway.intake import Intake
from hospital_gateway.settings import GatewaySettings, HospitalSystem
from shared import topology
from shared.contracts import ConvocationReissueRequestedV1, ConvocationStatusV1
from shared.metrics import counted_after_commit
from shared.runtime import Runtime

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    runtime = Runtime(topology.GATEWAY, "hospital_gateway", settings, MIGRATIONS)
    handlers = GatewayHandlers(settings)
    runtime.consumer.subscribe(ConvocationStatusV1, handlers.on_status)
    runtime.consumer.subscribe(ConvocationReissueRequestedV1, handlers.on_reissue_requested)
    runtime.use_retries(handlers.retry)
    intake = Intake(lambda: runtime.pool)

    async def on_message(system: HospitalSystem, data: bytes) -> bytes:
        return await mllp.handle(intake, system, data)

    listeners = mllp.Listeners(settings, on_message)
    runtime.on_started.append(listeners.start)  # after the migrations and the broker: a message can be stored
    runtime.on_stopping.insert(0, listeners.stop)

    async def sweep() -> None:
        assert runtime.pool is not None
        with counted_after_commit():
            async with runtime.pool.acquire() as conn, conn.transaction():
                await handlers.sweep(conn, datetime.now(timezone.utc))

    runtime.every(settings.sweep_seconds, sweep, "gateway-sweeper")
    runtime.keep(store.retention_rules(settings.retention_days))
    app = runtime.http_app(max_body_bytes=settings.fhir_max_bytes)
    app.include_router(Api(settings, intake).router())
    app.state.runtime = runtime
    return app
