"""Browser tests: Debian's chromium driven by Playwright (never `playwright install`), on the running stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.guide import CHROMIUM, HEADLESS_SHELL, launched  # one way to start Debian's chromium
from tests.e2e.conftest import chain  # noqa: F401  (the e2e fixture, shared)


@pytest.fixture(scope="session", autouse=True)
def _servers(rabbitmq, postgres, services_forked):
    """This tier runs on the tests' RabbitMQ node and PostgreSQL cluster (tests/conftest.py), started for it,
    and starts its services from the fork server."""


def installed(executable: str) -> str:
    if not Path(executable).is_file():
        pytest.fail(f"{executable} missing: run scripts/bootstrap.sh --with-browser (Debian's chromium packages)")
    return executable


@pytest.fixture(scope="session")
async def browser():
    """Debian's chromium, as its headless shell (devstack.guide.HEADLESS_SHELL)."""
    async with launched(installed(HEADLESS_SHELL)) as chromium:
        yield chromium


@pytest.fixture(scope="module")
async def guide_browser():
    """Debian's full chromium, which records the guide's video (make guide): the screens compared with it."""
    async with launched(installed(CHROMIUM)) as chromium:
        yield chromium
