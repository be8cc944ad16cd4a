"""asyncpg pool per service schema; SQL migrations applied under an advisory lock, or waited for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import asyncpg

from shared.logs import get_logger

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL round trip (~15 % of a short handler, docs/architecture.md#performance):
    our connections never change session state outside a transaction, LISTEN uses its own connection."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections see only the service's schema first on the search path."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": schema, "application_name": schema},
        command_timeout=30,
        reset=_keep_session,
    )


def _migration_files(directories: list[Path]) -> list[tuple[str, Path]]:
    files = []
    for directory in directories:
        prefix = "shared" if directory == SHARED_MIGRATIONS else "service"
        files += [(f"{prefix}/{path.name}", path) for path in sorted(directory.glob("*.sql"))]
    return files


def checksum(path: Path) -> str:
    """What is recorded of a migration file when it is applied: SHA-256 of its bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MigrationDrift(RuntimeError):
    """A migration file changed after it was applied: the schema is not what this release's files say."""


def _refuse_drift(schema: str, recorded: dict[str, str | None], files: list[tuple[str, Path]]) -> None:
    """Raise :class:`MigrationDrift` naming every applied migration whose file now differs from what was
    applied. A version without a checksum (applied before they were recorded) and a version this release
    has no file for (applied by a newer release, before a rollback) are not drift."""
    changed = [version for version, path in files if recorded.get(version) not in (None, checksum(path))]
    if changed:
        raise MigrationDrift(
            f"schema {schema}: applied migration(s) {', '.join(changed)} changed since they were applied (their"
            " SHA-256 differs from the one recorded in schema_migrations). Nothing was started or migrated."
            " An applied migration must never change: restore the file as released and put the change in a"
            " new migration (docs/runbooks.md#a-migration-changed-after-it-was-applied)."
        )


async def _recorded(conn: asyncpg.Connection) -> dict[str, str | None]:
    return {r["version"]: r["checksum"] for r in await conn.fetch("select version, checksum from schema_migrations")}


async def migrate(pool: asyncpg.Pool, schema: str, service_migrations: Path) -> list[str]:
    """Apply the shared then the service's migrations not yet applied; returns the versions applied.

    Several replicas may start at once: a transaction-level advisory lock on the schema name
    serialises them, and each file runs in its own transaction with its version row and checksum.
    Refuses (:class:`MigrationDrift`), before applying anything, when an applied file has changed.
    """
    applied_now: list[str] = []
    files = _migration_files([SHARED_MIGRATIONS, service_migrations])
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
            await conn.execute(
                "create table if not exists schema_migrations ("
                " version text primary key, applied_at timestamptz not null default now())"
            )
            # Recorded from this release on; the versions applied before it get theirs from today's files.
            await conn.execute("alter table schema_migrations add column if not exists checksum text")
            recorded = await _recorded(conn)
            _refuse_drift(schema, recorded, files)
            for version, path in files:
                if version in recorded:
                    if recorded[version] is None:
                        await conn.execute(
                            "update schema_migrations set checksum = $2 where version = $1", version, checksum(path)
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "insert into schema_migrations(version, checksum) values ($1, $2)", version, checksum(path)
                    )
                applied_now.append(version)
    if applied_now:
        log.info("migrations applied", schema=schema, versions=applied_now)
    return applied_now


async def pending_migrations(pool: asyncpg.Pool, schema: str, service_migrations: Path) -> list[str]:
    """The versions this code expects that the schema has not got yet (all of them before the first run).
    Raises :class:`MigrationDrift` when an applied file has changed since."""
    files = _migration_files([SHARED_MIGRATIONS, service_migrations])
    async with pool.acquire() as conn:
        try:
            recorded = await _recorded(conn)
        except asyncpg.UndefinedTableError:
            recorded = {}
        except asyncpg.UndefinedColumnError:  # applied before checksums: the release's job records them
            return [version for version, _ in files]
    _refuse_drift(schema, recorded, files)
    return [v for v, _ in files if v not in recorded]


async def wait_for_migrations(pool: asyncpg.Pool, schema: str, service_migrations: Path, wait_seconds: float) -> None:
    """Wait until the release's migration job has brought the schema to this code's version.

    A runtime role may not change the schema (production), so a replica started before the job has
    finished waits instead of failing; past ``wait_seconds`` it exits and its pod restarts. A changed
    applied migration stops it at once (:class:`MigrationDrift`).
    """
    deadline = time.monotonic() + wait_seconds
    while pending := await pending_migrations(pool, schema, service_migrations):
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"schema {schema} lacks migrations {pending}: run the release's migration job "
                "(python -m <service> migrate, as the schema owner)"
            )
        log.info("waiting for the migration job", schema=schema, pending=len(pending))
        await asyncio.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


# A transaction-level advisory lock named by text (``<kind>:<key>``), as SQL to place in a statement of its
# own or beside other reads: held until the transaction ends. Statements after the one that waited see
# what the previous holder committed; that statement itself reads from before the wait.
NAMED_LOCK = "pg_advisory_xact_lock(hashtextextended($1::text, 0))"


async def lock_named(conn: asyncpg.Connection, name: str) -> None:
    """Wait for, then hold until this transaction ends, the lock called ``name``."""
    await conn.execute(f"select {NAMED_LOCK}", name)
