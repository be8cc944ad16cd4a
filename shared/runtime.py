"""What every service process runs: broker, pool, migrations, outbox relay, health and metrics.

A service builds a :class:`Runtime`, registers its handlers with ``runtime.consumer.subscribe``,
and serves ``runtime.http_app()`` (or mounts ``runtime.routes()`` on its own FastAPI app).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import aio_pika
import asyncpg
from fastapi import APIRouter, FastAPI, Response
from faststream.rabbit import Channel, RabbitBroker
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared import topology, tracing
from shared.consumer import Consumer
from shared.db import MigrationDrift, create_pool, migrate, wait_for_migrations
from shared.http import MAX_BODY_BYTES, BodyLimit
from shared.logs import configure_logging, get_logger
from shared.memory import return_large_buffers_to_the_system
from shared.metrics import DEPENDENCY_UP, PERIODIC_LAST_SUCCESS
from shared.outbox import OutboxRelay
from shared.retention import RetentionRule, Sweeper, inbox_rule
from shared.settings import MigrationSettings, ServiceSettings

log = get_logger(__name__)
RETIRED_QUEUES_RETRY_SECONDS = 60  # while a replica of the previous release still consumes a retired queue
RETIRED_QUEUES_RECHECK_SECONDS = 600  # then for the process's life: a restarted old pod declares it again
EXIT_SECONDS = 1.0  # of the shutdown budget, kept for the process to end once the runtime has stopped


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
            # At shutdown, how long each subscription waits for its handlers in flight (see ``stop``).
            graceful_timeout=settings.shutdown_timeout_seconds / 2,
            # After an outage the consumers are back within a second of the broker (aio-pika's default: 5 s);
            # the outbox relay probes as often (shared/outbox.py).
            reconnect_interval=1.0,
            app_id=service,
            apply_types=False,  # handlers take the raw message; validation is ours (shared/consumer.py)
        )
        self.pool: asyncpg.Pool | None = None
        self.consumer = Consumer(
            service=service,
            broker=self.broker,
            exchange=settings.events_exchange,
            pool_getter=lambda: self.pool,
            outage_backoff_max=settings.outage_backoff_max_seconds,
        )
        self.relay: OutboxRelay | None = None
        self.declarations: list = []  # topology this service declares beyond its consumer queues
        self._health_task: asyncio.Task | None = None
        self._retired_queues_task: asyncio.Task | None = None
        self.retired_queues_left = False
        self.on_started: list = []
        self.on_stopping: list = []
        self._draining: asyncio.Task | None = None
        self._deadline = 0.0

    def keep(self, rules: Sequence[RetentionRule]) -> Sweeper:
        """Sweep, every RETENTION_SWEEP_SECONDS, what ``rules`` and the inbox's retention say is past its period
        (shared/retention.py; docs/retention.md)."""
        rules = [*rules, inbox_rule(self.settings.inbox_retention_days)]
        sweeper = Sweeper(self.service, lambda: self.pool, rules, self.settings.retention_batch)
        self.every(self.settings.retention_sweep_seconds, sweeper.sweep_once, f"{self.service}-retention")
        return sweeper

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
        self.pool = await create_pool(
            self.settings.database_url, self.schema, max_size=self.settings.database_pool_size
        )
        try:
            if self.settings.migrate_on_start:
                await migrate(self.pool, self.schema, self.migrations)
            else:
                await wait_for_migrations(self.pool, self.schema, self.migrations, self.settings.migration_wait_seconds)
        except MigrationDrift as drift:
            log.error("refusing to start", detail=str(drift))
            raise
        await self.connect_bus()
        for hook in self.on_started:
            await hook()
        await self.broker.start()
        self.relay = OutboxRelay(
            service=self.service,
            schema=self.schema,
            pool=self.pool,
            dsn=self.settings.database_url,
            broker=self.broker,
            exchange=self.exchange,
            poll_seconds=self.settings.outbox_poll_seconds,
        )
        await self.relay.start()
        self._health_task = asyncio.create_task(self._watch_dependencies(), name=f"{self.service}-health")
        if topology.retired_queues(self.exchange, self.service):
            self._retired_queues_task = asyncio.create_task(
                self._keep_retired_queues_deleted(), name=f"{self.service}-retired-queues"
            )
        log.info("service started", queues=len(self.consumer.queues))

    async def connect_bus(self) -> None:
        """Connect, declare this service's exchanges and queues and delete those it no longer consumes
        (its broker user may do exactly that: shared/topology.py ``broker_permissions``).
        ``broker.start()`` then binds and consumes its queues."""
        await self.broker.connect()
        # DLQs and exchanges first, so that a subscriber never consumes into a missing DLX.
        await topology.declare_dead_letter_queues(
            self.broker, self.exchange, self.consumer.queues, self.settings.amqp_url
        )
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
            log.warning(
                "deleting retired queues failed; trying again later", error=type(exc).__name__, detail=str(exc)[:200]
            )
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

    def begin_shutdown(self) -> None:
        """SIGTERM: from now on no message is taken, and the process exits within
        ``shutdown_timeout_seconds``. Called by the HTTP server as it stops accepting connections (``serve``),
        so the handlers in flight drain while the requests in flight finish; ``stop`` calls it otherwise."""
        if self._draining is not None:
            return
        self._deadline = time.monotonic() + self.settings.shutdown_timeout_seconds - EXIT_SECONDS
        self.consumer.stop_holding()
        log.info(
            "service stopping: no new messages; draining the work in flight",
            within_seconds=self.settings.shutdown_timeout_seconds,
        )
        self._draining = asyncio.create_task(self._drain_handlers(), name=f"{self.service}-drain")

    def _left(self, keep: float = 0.0) -> float:
        """Seconds left of the shutdown budget, less ``keep`` for the steps after this one."""
        return max(0.0, self._deadline - time.monotonic() - keep)

    async def _drain_handlers(self) -> None:
        # Each subscription stops taking messages, waits up to the broker's graceful_timeout (half the
        # budget) for its handlers, then cancels its consumer. Those still running after that are let go:
        # unacknowledged, their messages return to their queues when the connection closes.
        stopping = [asyncio.ensure_future(subscriber.stop()) for subscriber in self.broker.subscribers]
        if stopping:
            done, running = await asyncio.wait(stopping, timeout=self._left(keep=3))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("a subscription did not stop cleanly", error=type(task.exception()).__name__)
            if running:
                log.warning(
                    "handlers still running at the end of their share of the shutdown; their messages"
                    " return to their queues",
                    subscriptions=len(running),
                )

    async def stop(self) -> None:
        self.begin_shutdown()
        background = [task for task in (self._health_task, self._retired_queues_task) if task]
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background, timeout=1)
            for task in background:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: however it ended, it was told to stop
        if self._draining is not None:
            await self._draining
        for hook in self.on_stopping:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), self._left(keep=2))
        if self.relay:  # its last pass publishes what was committed, while the broker is still connected
            await self.relay.stop(within=self._left(keep=1.5))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.stop(), max(0.5, self._left(keep=1)))
        if self.pool:
            try:
                await asyncio.wait_for(self.pool.close(), max(0.5, self._left()))
            except TimeoutError:
                self.pool.terminate()  # a handler let go still holds a connection: its transaction rolls back
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
        app.add_middleware(
            BodyLimit, max_bytes=max_body_bytes
        )  # every route of every service, health and metrics included
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


def main(
    service: str,
    schema: str,
    migrations: Path,
    create_app,
    settings_class: type[ServiceSettings],
    argv: list[str] | None = None,
) -> None:
    """``python -m <service>`` serves; ``python -m <service> migrate`` applies the migrations and exits.

    The migration job (one per release, as the schema owner) reads only the database settings: it
    holds no key, so nothing else is asked of its environment.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["migrate"]:
        database = MigrationSettings()
        configure_logging(service, database.log_level)
        try:
            asyncio.run(migrate_only(database.database_url, schema, migrations))
        except MigrationDrift as drift:
            log.error("migration refused", detail=str(drift))
            raise SystemExit(str(drift)) from None
        return
    if argv:
        raise SystemExit(f"unknown arguments {argv}: run without arguments to serve, or with 'migrate'")
    settings = settings_class()
    serve(create_app(settings), settings)


class ServedSettings(Protocol):
    """What ``serve`` reads of a process's settings (a bus service's, or the key store's)."""

    @property
    def http_host(self) -> str: ...
    @property
    def http_port(self) -> int: ...
    @property
    def forwarded_allow_ips(self) -> str: ...
    @property
    def shutdown_timeout_seconds(self) -> float: ...
    @property
    def http_tls_cert_file(self) -> str | None: ...
    @property
    def http_tls_key_file(self) -> str | None: ...


def serve(app: FastAPI, settings: ServedSettings) -> None:
    """Run one service process with uvicorn (uvloop when installed), and exit within
    ``shutdown_timeout_seconds`` of SIGTERM: requests in flight get a third of it, while the consumers stop
    at once and their handlers drain (``Runtime.begin_shutdown``)."""
    import uvicorn

    budget = settings.shutdown_timeout_seconds

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            runtime = getattr(app.state, "runtime", None)
            if runtime is not None:
                runtime.begin_shutdown()
            # Whatever still holds the process (a handler let go that will not end) is cut at the budget:
            # as the kubelet's SIGKILL would, but before it, and said.
            watchdog = threading.Timer(budget + 1, _overdue, args=(budget,))
            watchdog.daemon = True  # a process that ends in time does not wait for it
            watchdog.start()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(budget / 3)),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ssl_certfile=settings.http_tls_cert_file,
        ssl_keyfile=settings.http_tls_key_file,
    )
    Server(config).run()


def _overdue(budget: float) -> None:
    log.error(
        "still running past the shutdown budget; exiting now (unacknowledged messages return to their"
        " queues, unpublished events wait in the outbox)",
        budget_seconds=budget,
    )
    os._exit(1)
