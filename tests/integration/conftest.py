"""Integration-tier helpers: a throw-away schema in the test database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from shared.db import create_pool
from tests.conftest import ADMIN_DSN


@pytest.fixture(scope="session", autouse=True)
def _servers(rabbitmq, postgres, services_forked):
    """This tier runs on the tests' RabbitMQ node and PostgreSQL cluster (tests/conftest.py), started for it,
    and starts its services from the fork server."""


@pytest.fixture(scope="session")
def key_store(tmp_path_factory) -> Iterator[str]:
    """A key store of this tier's own (its URL): the issuer's handlers seal under its period keys."""
    from devstack.stack import start_key_store

    directory = tmp_path_factory.mktemp("key-store")
    process, url = start_key_store(directory / "keys", directory / "key-store.log")
    yield url
    process.terminate()
    process.wait(10)


@contextlib.asynccontextmanager
async def throwaway_schema(database: str, prefix: str, *, max_size: int = 4):
    """(name, dsn, pool) of a fresh schema reached as the superuser, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"create schema {name}")
    pool = await create_pool(dsn, name, max_size=max_size)
    try:
        yield name, dsn, pool
    finally:
        await pool.close()
        await admin.execute(f"drop schema {name} cascade")
        await admin.close()
