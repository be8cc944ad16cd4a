"""Browser tests: Debian's chromium driven by Playwright (never `playwright install`), on the running stack."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from devstack.guide import CHROMIUM, CHROMIUM_ARGS, chromium_env  # one way to start Debian's chromium
from tests.e2e.conftest import chain  # noqa: F401  (the e2e fixture, shared)


@pytest.fixture(scope="session", autouse=True)
def _servers(rabbitmq, postgres, services_forked):
    """This tier runs on the tests' RabbitMQ node and PostgreSQL cluster (tests/conftest.py), started for it,
    and starts its services from the fork server."""


@pytest.fixture(scope="session")
async def browser():
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=chromium_env()
        )
        yield chromium
        await chromium.close()
