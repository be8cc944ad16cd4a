"""Fixtures on real infrastructure: a PostgreSQL cluster and a RabbitMQ node of the run's own, a fresh test
database, a real SMTP server and SMS provider (devinbox), and the five services as separate processes.

Importing this file starts nothing: the unit and contract tiers (plain ``pytest``) run without any
server. The tiers that need the servers say so in their own conftest.py with an autouse fixture that
asks for ``rabbitmq`` and ``postgres`` (docs/testing.md)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from devoidc import DevOidc

from devinbox import DevInbox
from devstack.broker import PrivateBroker
from devstack.hospital import DevHospital, hospital_systems
from devstack.postgres import PrivatePostgres
from devstack.printroom import DevPrintRoom
from devstack.stack import ROOT, Stack, fork_server, free_port

# A database per run: concurrent runs (two developers, CI, the tiers of one `make test`) never drop
# each other's data.
TEST_DB = os.environ.get("TEST_DATABASE", f"convocations_test_{uuid.uuid4().hex[:8]}")
# Every service the tests start inherits this: a few stacks of six services with production-sized
# pools (10) could take a development PostgreSQL's 100 connections; the tests need far fewer.
os.environ.setdefault("DATABASE_POOL_SIZE", "4")
# The tests' PostgreSQL is a cluster of their own (devstack.postgres), started by the session fixture
# ``postgres`` on first use and removed at exit: the machine's server and its 100 connections are shared.
# psql, scripts/db-setup.sh and the stacks (PGPORT) address it through the libpq variables set here.
# TEST_ADMIN_DSN points the tests at another server instead (psql then reads PGPASSWORD or ~/.pgpass).
PG = None if "TEST_ADMIN_DSN" in os.environ or not PrivatePostgres.available() else PrivatePostgres()
if PG is not None:
    atexit.register(PG.stop)
    os.environ.update(PG.libpq_env())
ADMIN_DSN = PG.admin_dsn() if PG else os.environ.get("TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_PORT = PG.port if PG else urlsplit(ADMIN_DSN).port or 5432
os.environ.setdefault("PGPORT", str(DB_PORT))  # the stacks' DATABASE_URL (devstack.stack)
# The tests' RabbitMQ is a node of their own (devstack.broker), started by the session fixture
# ``rabbitmq`` on first use and stopped at exit, so a shared broker's state (other vhosts holding its
# file handles) can neither break nor be broken by a run. Its ports are chosen here, so that AMQP_URL
# is known at import. AMQP_URL points the tests at another broker instead (then TEST_AMQP_VHOST names
# their vhost, created with the rabbitmqctl of this machine).
VHOST = os.environ.get("TEST_AMQP_VHOST", "convocations-test")
BROKER = None if "AMQP_URL" in os.environ or not PrivateBroker.available() else PrivateBroker(vhost=VHOST)
if BROKER is not None:
    atexit.register(BROKER.stop)
    # rabbitmqctl, wherever the tests and tools call it, now addresses the tests' node.
    os.environ.update({k: BROKER.env()[k] for k in ("RABBITMQ_NODENAME", "RABBITMQ_CONF_ENV_FILE", "PATH")})
RABBITMQCTL = shutil.which("rabbitmqctl")
AMQP_URL = (
    BROKER.amqp_url(VHOST)
    if BROKER is not None
    else os.environ.get("AMQP_URL") or f"amqp://guest:guest@127.0.0.1:5672/{VHOST if RABBITMQCTL else ''}"
)
SCHEMAS = (
    "issuer",
    "mailer",
    "sms_gateway",
    "access_portal",
    "portal_audit",
    "secretariat",
    "secretariat_audit",
    "hospital_gateway",
)  # and the access and staff audits


def inbox_stack(devinbox, **settings) -> Stack:
    """A stack whose SMTP relay and SMS provider are the development inbox's; ``settings``: the rest of Stack's."""
    return Stack(
        smtp_port=devinbox.smtp_port,
        sms_provider_url=devinbox.twilio_base_url,
        sms_account_sid=devinbox.account_sid,
        sms_auth_token=devinbox.auth_token,
        **settings,
    )


@pytest.fixture(scope="session")
def postgres() -> str:
    """The tests' PostgreSQL, running; its superuser DSN. The tiers that need it use it as an autouse fixture."""
    if PG is not None:
        PG.start()  # once per run; removed at exit
    return ADMIN_DSN


def _psql(*args: str, check: bool = True) -> None:
    env = {"PGHOST": "127.0.0.1", "PGUSER": "postgres", **os.environ}
    subprocess.run(["psql", "-q", "-d", "postgres", *args], check=check, capture_output=True, env=env)


@pytest.fixture(scope="session")
def services_forked(tmp_path_factory):
    """From here on, the services' processes (every stack's, the key stores') are forked from a server that
    has imported their libraries once (``devstack.forkserver``), instead of each importing them again: the
    tiers that start services ask for it with their servers."""
    with fork_server(tmp_path_factory.mktemp("fork-server") / "server.log"):
        yield


@pytest.fixture(scope="session")
def test_database(postgres):
    """A fresh database with the service roles, each owning its schema."""
    _psql("-c", f'drop database if exists "{TEST_DB}" with (force)')
    subprocess.run([str(ROOT / "scripts/db-setup.sh"), TEST_DB], check=True, capture_output=True)
    yield TEST_DB
    _psql("-c", f'drop database if exists "{TEST_DB}" with (force)', check=False)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    """The tests' broker, running, with their vhost (a node of the run's own boots with it and holds nothing
    yet; on the machine's broker, every queue an earlier run left is emptied); the AMQP URL of that vhost.
    The tiers that need a broker use it as an autouse fixture."""
    if BROKER is not None:
        BROKER.start()  # once per run, with the vhost; stopped at exit
        return AMQP_URL
    if RABBITMQCTL and "AMQP_URL" not in os.environ:
        _rabbitmqctl("add_vhost", VHOST)  # idempotent
        _rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
        _purge_all_queues()
    return AMQP_URL


def _purge_all_queues(vhost: str = VHOST, amqp_url: str = AMQP_URL) -> None:
    out = subprocess.run(
        [RABBITMQCTL, "list_queues", "-q", "--no-table-headers", "-p", vhost, "name"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = [n.strip() for n in out.stdout.splitlines() if n.strip()]

    async def purge() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await (await channel.get_queue(name, ensure=False)).purge()

    asyncio.run(purge())


@pytest.fixture(scope="session")
def exchange_name() -> str:
    """The tests' exchange (and queue prefix), apart from a development stack's."""
    return "test"


@pytest.fixture(scope="session")
async def admin_db(test_database):
    """A superuser connection to the test database, for assertions across every schema."""
    conn = await asyncpg.connect(ADMIN_DSN.rsplit("/", 1)[0] + f"/{test_database}")
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def devinbox():
    with DevInbox() as box:
        yield box


@pytest.fixture(scope="session")
def devoidc(tmp_path_factory):
    """The development OpenID provider, its signing key in a file the tests can also sign with."""
    with DevOidc(key_file=tmp_path_factory.mktemp("oidc") / "key.pem") as provider:
        yield provider


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory) -> Path:
    """The mailer's DKIM private key (RSA 2048, PEM), as a hospital would mount it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = tmp_path_factory.mktemp("dkim") / "s2026b.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture(scope="session")
def sandbox_inbox():
    """Where the sandbox's e-mails and SMS go: a development inbox apart from the one playing the real providers."""
    with DevInbox() as box:
        yield box


@pytest.fixture(scope="session")
def hospital(devoidc):
    """The development hospital system, talking to the stack's hospital gateway (HL7 v2 and FHIR both ways)."""
    with DevHospital(token_url=f"{devoidc.issuer}/token", gateway_mllp_port=free_port()) as h:
        yield h


@pytest.fixture(scope="session")
def stack(
    request,
    rabbitmq,
    test_database,
    exchange_name,
    devinbox,
    devoidc,
    tmp_path_factory,
    dkim_key,
    sandbox_inbox,
    hospital,
):
    sandbox_port = free_port()
    s = inbox_stack(
        devinbox,
        database=test_database,
        exchange=exchange_name,
        log_dir=tmp_path_factory.mktemp("logs"),
        amqp_url=rabbitmq,
        # A shutdown budget of seconds: a test that stops a service stuck on purpose waits that long at most.
        extra_env={
            "*": {
                "MAILER_RETRY_DELAYS": "1,2,3",
                "SMS_RETRY_DELAYS": "1,2,3",
                "OUTBOUND_RETRY_DELAYS": "1,2,3",
                "LOG_LEVEL": "INFO",
                # Each sweep and poll is a few queries in every service, for the whole session: at 0.5 s,
                # 0.5 s and 1 s an idle stack used 1.65 CPU seconds in 40 (services and PostgreSQL), at these
                # 0.95. A NOTIFY still wakes the outbox at once; its poll picks up what the broker refused once
                # its backoff ends, listens again after a lost connection and refreshes an idle relay's gauges.
                "SWEEP_SECONDS": "1",
                "OUTBOX_POLL_SECONDS": "2",
                "SHUTDOWN_TIMEOUT_SECONDS": "6",
                # Swept hourly in production (docs/retention.md).
                "RETENTION_SWEEP_SECONDS": "3",
            },
            # The tests play the ingress from the loopback network.
            "access-portal": {"FORWARDED_ALLOW_IPS": "127.0.0.0/8"},
            "mailer": {"DKIM_KEYS": f"s2026b:{dkim_key}"},
            # A request to the hospital system unanswered for 15 s is late (30 min in production); the
            # open timeline asks for news every second.
            "secretariat": {"REISSUE_WAIT_SECONDS": "15", "TIMELINE_REFRESH_SECONDS": "1", "AUDIT_PAGE_ROWS": "20"},
            # An accepted letter not sealed this soon is dead-lettered (10 minutes in production).
            "hospital-gateway": {"CONFIRM_WITHIN_SECONDS": "5"},
        },
        oidc_issuer=devoidc.issuer,
        hospital_systems=hospital_systems(hospital, hl7_port=hospital.gateway_mllp_port, sandbox_port=sandbox_port),
        sandbox_smtp_port=sandbox_inbox.smtp_port,
        sandbox_sms_provider_url=sandbox_inbox.twilio_base_url,
    )
    s.ports |= {"gateway-hl7": hospital.gateway_mllp_port, "gateway-sandbox": sandbox_port}
    if any(item.path.name == "test_big_letters.py" for item in request.session.items):
        s.unforked = ("issuer",)  # that module holds the issuer's peak memory to the pod's limit
    hospital.gateway_url = s.url("hospital-gateway")
    devoidc.clients[0]["redirect_uris"].append(f"{s.url('secretariat')}/auth/callback")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def print_room(stack):
    """The development print room on the test stack's queues: print runs when a test calls ``run()``."""
    room = DevPrintRoom(AMQP_URL, stack.exchange).start()
    yield room
    room.stop()
