"""What every service process runs: broker, pool, migrations, outbox relay, health and metrics.

A service builds a :class:`Runtime`, registers its handlers with ``runtime.consumer.subscribe``,
and serves ``runtime.http_app()`` (or mounts ``runtime.routes()`` on its own FastAPI app).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import aio_pika
import asyncpg
from fastapi import APIRouter, FastAPI, Response
from faststream.rabbit import Channel, RabbitBroker
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared import topology, tracing
from shared.consumer import Consumer
from shared.db import create_pool, migrate, wait_for_migrations
from shared.http import MAX_BODY_BYTES, BodyLimit
from shared.logs import configure_logging, get_logger
from shared.memory import return_large_buffers_to_the_system
from shared.metrics import DEPENDENCY_UP, PERIODIC_LAST_SUCCESS
from shared.outbox import OutboxRelay
from shared.settings import MigrationSettings, ServiceSettings

log = get_logger(__name__)
RETIRED_QUEUES_RETRY_SECONDS = 60  # while a replica of the previous release still consumes a retired queue
RETIRED_QUEUES_RECHECK_SECONDS = 600  # then for the process's life: a restarted old pod declares it again


class Runtime:
    def __init__(self, service: str, schema: str, settings: ServiceSettings, migrations: Path) -> None:
        configure_logging(service, settings.log_level)
        return_large_buffers_to_the_system()
        self.tracer_provider = tracing.configure(service)  # None unless an OTLP endpoint is configured
        self.service, self.schema, self.settings, self.migrations = service, schema, settings, migrations
        self.broker = RabbitBroker(
            settings.amqp_url,
            # Publisher confirms are on by default; an unroutable event must raise, not vanish.
            default_channel=Channel(prefetch_count=settings.amqp_prefetch, on_return_raises=True),
            # No FastStream logger: its per-message lines cost a tenth of a short handler's CPU and say
            # less than ours (shared/consumer.py logs every outcome with the event's ids; connection
            # trouble is logged by aio-pika and aiormq themselves).
            logger=None,
            graceful_timeout=20,
            # After an outage the consumers are back within a second of the broker (aio-pika's default: 5 s);
            # the outbox relay probes as often (shared/outbox.py).
            reconnect_interval=1.0,
            app_id=service,
            apply_types=False,  # handlers take the raw message; validation is ours (shared/consumer.py)
        )
        self.pool: asyncpg.Pool | None = None
        self.consumer = Consumer(service=service, broker=self.broker, exchange=settings.events_exchange,
                                 pool_getter=lambda: self.pool, outage_backoff_max=settings.outage_backoff_max_seconds)
        self.relay: OutboxRelay | None = None
        self.declarations: list = []  # topology this service declares beyond its consumer queues
        self._health_task: asyncio.Task | None = None
        self._retired_queues_task: asyncio.Task | None = None
        self.retired_queues_left = False
        self.on_started: list = []
        self.on_stopping: list = []

    def every(self, seconds: float, job, name: str) -> None:
        """Run ``job()`` now and then every ``seconds`` while the service runs. A failure is logged
        and the job tried again next round (the database may be away for a while)."""
        task: list[asyncio.Task] = []

        async def loop() -> None:
            while True:
                try:
                    await job()
                    PERIODIC_LAST_SUCCESS.labels(self.service, name).set_to_current_time()
                except Exception:
                    log.exception("periodic job failed; retrying next round", job=name)
                await asyncio.sleep(seconds)

        async def start() -> None:
            task.append(asyncio.create_task(loop(), name=name))

        async def stop() -> None:
            for t in task:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t

        self.on_started.append(start)
        self.on_stopping.append(stop)

    def use_retries(self, policy) -> None:
        """Declare the delayed-retry holding queues of this service's consumer queues at start."""

        async def declare() -> None:
            await policy.declare(self.broker, self.exchange, self.consumer.queues)

        self.declarations.append(declare)

    @property
    def exchange(self) -> str:
        return self.settings.events_exchange

    async def start(self) -> None:
        self.pool = await create_pool(self.settings.database_url, self.schema,
                                      max_size=self.settings.database_pool_size)
        if self.settings.migrate_on_start:
            await migrate(self.pool, self.schema, self.migrations)
        else:
            await wait_for_migrations(self.pool, self.schema, self.migrations, self.settings.migration_wait_seconds)
        await self.connect_bus()
        for hook in self.on_started:
            await hook()
        await self.broker.start()
        self.relay = OutboxRelay(
            service=self.service, schema=self.schema, pool=self.pool, dsn=self.settings.database_url,
            broker=self.broker, exchange=self.exchange, poll_seconds=self.settings.outbox_poll_seconds,
        )
        await self.relay.start()
        self._health_task = asyncio.create_task(self._watch_dependencies(), name=f"{self.service}-health")
        if topology.retired_queues(self.exchange, self.service):
            self._retired_queues_task = asyncio.create_task(self._keep_retired_queues_deleted(),
                                                            name=f"{self.service}-retired-queues")
        log.info("service started", queues=len(self.consumer.queues))

    async def connect_bus(self) -> None:
        """Connect, declare this service's exchanges and queues and delete those it no longer consumes
        (its broker user may do exactly that: shared/topology.py ``broker_permissions``).
        ``broker.start()`` then binds and consumes its queues."""
        await self.broker.connect()
        # DLQs and exchanges first, so that a subscriber never consumes into a missing DLX.
        await topology.declare_dead_letter_queues(self.broker, self.exchange, self.consumer.queues,
                                                  self.settings.amqp_url)
        await self.broker.declare_exchange(topology.retry_exchange(self.exchange))
        for declare in self.declarations:
            await declare()
        self.retired_queues_left = not await self._delete_retired_queues()

    async def _delete_retired_queues(self) -> bool:
        """Housekeeping, never a reason not to start or to stop: a failure is logged and tried again."""
        try:
            # A connection of its own, closed after: looking up a missing queue closes the channel, and
            # the broker's robust connection would reopen such channels and keep them for good.
            async with await aio_pika.connect(self.settings.amqp_url) as connection:
                return await topology.delete_retired_queues(connection, self.exchange, self.service)
        except Exception as exc:
            log.warning("deleting retired queues failed; trying again later", error=type(exc).__name__,
                        detail=str(exc)[:200])
            return False

    async def _delete_retired_queues_later(self) -> None:
        """A retired queue still had consumers at startup (replicas of the previous release, during a
        rolling update) or could not be deleted: look again every minute until it is deleted, every ten
        minutes after ten tries (something else consumes it: a shovel, a debugging client)."""
        tries = 0
        while self.retired_queues_left:
            tries += 1
            await asyncio.sleep(RETIRED_QUEUES_RETRY_SECONDS if tries <= 10 else RETIRED_QUEUES_RECHECK_SECONDS)
            self.retired_queues_left = not await self._delete_retired_queues()

    async def _keep_retired_queues_deleted(self) -> None:
        """For the process's life: a pod of the previous release that restarts or reconnects after the
        deletion declares its queue again, which would then fill with events nobody reads."""
        while True:
            await self._delete_retired_queues_later()
            await asyncio.sleep(RETIRED_QUEUES_RECHECK_SECONDS)
            self.retired_queues_left = not await self._delete_retired_queues()

    async def _watch_dependencies(self) -> None:
        """Refresh convocations_dependency_up every 15 s, whether or not anyone calls /readyz."""
        while True:
            await self.ready()
            await asyncio.sleep(15)

    async def stop(self) -> None:
        log.info("service stopping: draining in-flight work")
        background = [task for task in (self._health_task, self._retired_queues_task) if task]
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=5)
            for task in background:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: however it ended, it was told to stop
        await self.broker.stop()  # waits for in-flight handlers (graceful_timeout)
        for hook in self.on_stopping:
            with contextlib.suppress(Exception):
                await hook()
        if self.relay:
            await self.relay.stop()
        if self.pool:
            await self.pool.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # the last spans, exported before the end
        log.info("service stopped")

    async def ready(self) -> dict[str, bool]:
        checks = {"database": False, "broker": False}
        if self.pool is not None:
            with contextlib.suppress(Exception):
                async with self.pool.acquire(timeout=2) as conn:
                    checks["database"] = await conn.fetchval("select true", timeout=2)
        with contextlib.suppress(Exception):
            checks["broker"] = bool(await asyncio.wait_for(self.broker.ping(timeout=2), 3))
        for dependency, ok in checks.items():
            DEPENDENCY_UP.labels(self.service, dependency).set(1 if ok else 0)
        return checks

    def routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/healthz", include_in_schema=False)
        async def healthz() -> dict:
            return {"status": "ok", "service": self.service}

        @router.get("/readyz", include_in_schema=False)
        async def readyz(response: Response) -> dict:
            checks = await self.ready()
            if not all(checks.values()):
                response.status_code = 503
            return {"ready": all(checks.values()), **checks}

        @router.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

        return router

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI):
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def http_app(self, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
        """The service's app with health, readiness and metrics. ``max_body_bytes``: the cap on request bodies,
        larger only where a service takes letters over HTTP (the hospital gateway's FHIR API)."""
        app = FastAPI(title=self.service, lifespan=self.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # every route of every service, health and metrics included
        tracing.instrument_app(app)
        app.include_router(self.routes())
        return app


async def migrate_only(database_url: str, schema: str, migrations: Path) -> list[str]:
    """Apply the pending migrations on one connection and return the versions applied."""
    pool = await create_pool(database_url, schema, min_size=1, max_size=1)
    try:
        return await migrate(pool, schema, migrations)
    finally:
        await pool.close()


def main(service: str, schema: str, migrations: Path, create_app, settings_class: type[ServiceSettings],
         argv: list[str] | None = None) -> None:
    """``python -m <service>`` serves; ``python -m <service> migrate`` applies the migrations and exits.

    The migration job (one per release, as the schema owner) reads only the database settings: it
    holds no key, so nothing else is asked of its environment.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["migrate"]:
        database = MigrationSettings()
        configure_logging(service, database.log_level)
        asyncio.run(migrate_only(database.database_url, schema, migrations))
        return
    if argv:
        raise SystemExit(f"unknown arguments {argv}: run without arguments to serve, or with 'migrate'")
    settings = settings_class()
    serve(create_app(settings), settings)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service process with uvicorn (uvloop when installed)."""
    import uvicorn

    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False,
                timeout_graceful_shutdown=25, forwarded_allow_ips=settings.forwarded_allow_ips)
