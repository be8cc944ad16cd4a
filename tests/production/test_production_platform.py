"""Issue 18, items 5, 6 and 7 on the production-like tier: traffic to the broker and the database is TLS that
the services verify, and nothing answers in clear; a password rotated in the secret store reaches the
roles, the broker and the service at its restart, and the old one stops working; the broker applies the
manifests' delivery limit to the services' queues."""

from __future__ import annotations

import ssl
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import asyncpg
import pytest

from devstack.stack import ROOT
from tests.production.conftest import SMTP_USER, PrivateCA, role_passwords, send_letter

pytestmark = pytest.mark.production


async def test_the_broker_speaks_only_tls_and_the_services_verify_it(production, broker, tmp_path):
    # Every service is connected, and every one of their connections is TLS.
    lines = broker.node.ctl("list_connections", "-q", "--no-table-headers", "user", "ssl").stdout.split("\n")
    connections = [line.split("\t") for line in lines if line.strip()]
    service_users = {broker.users[name][0] for name in production.settings}
    assert {user for user, _ in connections} >= service_users, connections
    assert all(tls == "true" for user, tls in connections if user in service_users), connections
    # No plain AMQP: the broker's only listener speaks TLS and drops a plain client.
    url = urlsplit(broker.url("issuer"))
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(urlunsplit(url._replace(scheme="amqp", query="")), timeout=10)
    # A client that checks against another CA (someone posing as the broker, as seen from the client) fails.
    other = PrivateCA(tmp_path / "other", "Some other CA")
    with pytest.raises(aiormq.exceptions.AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await aio_pika.connect(urlunsplit(url._replace(query=f"cafile={other.ca_file}")), timeout=10)
    # A service told to connect in clear, or without checking the database, refuses to start (production).
    env = {
        **production.env_for("issuer"),
        "AMQP_URL": urlunsplit(url._replace(scheme="amqp", query="")),
        "DATABASE_URL": production.settings["issuer"]["DATABASE_URL"].replace("sslmode=verify-full", "sslmode=require"),
    }
    refused = subprocess.run(
        [sys.executable, "-m", "issuer"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "AMQP_URL must be amqps://" in refused.stdout + refused.stderr
    assert url.password not in refused.stdout + refused.stderr


async def test_postgres_refuses_clear_connections_and_the_clients_verify_its_certificate(
    production, postgres, tmp_path
):
    dsn = urlsplit(production.settings["mailer"]["DATABASE_URL"])
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(urlunsplit(dsn._replace(query="sslmode=disable")))
    other = PrivateCA(tmp_path / "other", "Some other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(urlunsplit(dsn._replace(query=f"sslmode=verify-full&sslrootcert={other.ca_file}")))
    admin = await postgres.admin()
    try:
        clear = await admin.fetch(
            "select usename from pg_stat_ssl join pg_stat_activity using (pid) where not ssl and usename is not null"
        )
        assert clear == [], clear
    finally:
        await admin.close()


async def test_the_broker_applies_the_manifests_delivery_limit_to_every_consumer_queue_and_no_dlq(production, broker):
    lines = broker.node.ctl("list_queues", "-q", "--no-table-headers", "name", "policy").stdout.split("\n")
    policies = dict(line.split("\t") for line in lines if line.strip())
    consumer_queues = [q for q in policies if not q.endswith(".dlq")]
    assert len(consumer_queues) > 20
    assert {policies[q] for q in consumer_queues} == {"convocations-delivery-limit"}, policies
    assert {policies[q] for q in policies if q.endswith(".dlq")} == {""}


async def test_passwords_rotated_in_the_secret_store_reach_the_roles_the_broker_and_the_mailer(
    production, settings, store, infra, postgres, broker, relay
):
    """The runbook's rotation of the mailer's database, broker and relay passwords: changed in the store; the
    operators apply the new ones from the Secrets made of it (CloudNativePG to the role, the topology
    operator to the user, the relay's administrator to the relay); the mailer restarts and uses them;
    the old ones are refused."""
    old = dict(production.settings["mailer"])
    for key in (("convocations/database/mailer", "password"), ("convocations/broker/mailer", "password")):
        store.values[key] = store.values[key][::-1] + "0"
    store.values[("convocations/mailer", "SMTP_PASSWORD")] = relay.password = "rotated-" + relay.password
    admin = await postgres.admin()
    try:
        await admin.execute(f"alter role mailer password '{role_passwords(infra, store)['mailer']}'")
    finally:
        await admin.close()
    user = store.secrets(infra)["rabbitmq-user-mailer"]
    broker.node.ctl("change_password", user["username"], user["password"])

    production.stop(["mailer"])
    production.settings["mailer"] = settings.of("Deployment", "mailer", "mailer")
    production.start(["mailer"])
    letter = await send_letter(production, broker, relay, "Convocation after the rotation")
    assert letter.mail["login"] == SMTP_USER.encode()

    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(old["DATABASE_URL"])
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(old["AMQP_URL"], timeout=10)
