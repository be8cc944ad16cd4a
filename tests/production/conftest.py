"""The production-like tier: the five services with the settings of the rendered production overlay,
their own broker users with the permissions of deploy/k8s/infra, a PostgreSQL cluster of the test's
own with scram passwords and TLS, an SMTP relay that requires STARTTLS with a private CA, the hospital's
single sign-on (the development OpenID provider) over HTTPS, and the portal and console over HTTPS. Test-only values fill the placeholders of the secret templates and replace the
hospital's host names; nothing else is set by hand."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from devoidc import DevOidc

from devinbox import DevInbox, parse_email
from devstack.postgres import PrivatePostgres
from devstack.stack import ROOT, SERVICES, Stack, free_port, python_path
from tests.conftest import AMQP_URL, RABBITMQCTL, VHOST, _purge_all_queues
from tests.production.manifests import K8S, PLACEHOLDER, container_env, find, render, secret_templates

PROD_VHOST = f"{VHOST}-production"
BROKER = f"{urlsplit(AMQP_URL).hostname}:{urlsplit(AMQP_URL).port or 5672}"  # the tests' RabbitMQ
CHAIN = ("issuer", "mailer", "sms-gateway", "access-portal")
# The chain, the department secretariats' console and API, and the hospital gateway (HL7 over MLLP with TLS,
# FHIR over HTTPS with the hospital provider's client-credentials tokens).
STARTED = (*CHAIN, "secretariat", "hospital-gateway")
HTTPS = ("access-portal", "sms-gateway", "secretariat", "hospital-gateway")  # TLS ends at the Gateway; here uvicorn's own
OIDC_CLIENT_SECRET = secrets.token_hex(16)
SMTP_USER, SMTP_PASSWORD = "convocations-relay", secrets.token_hex(16)


@pytest.fixture(scope="session", autouse=True)
def _servers(rabbitmq):
    """This tier runs on the tests' RabbitMQ node (tests/conftest.py), started for it; its PostgreSQL is
    the cluster below, with TLS."""


# --- a private CA, as a hospital's internal PKI ------------------------------------------------------

class PrivateCA:
    """A CA and one server certificate (localhost, 127.0.0.1) signed by it, as PEM files; client certificates
    on demand (a hospital system's, for mutual TLS)."""

    def __init__(self, directory: Path) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Convocations test CA")])
        ca = (x509.CertificateBuilder().subject_name(self.ca_name).issuer_name(self.ca_name)
              .public_key(self.ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(hours=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False),
                             critical=True)
              .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file, self.key_file = self._issue("server", "localhost", x509.ExtendedKeyUsageOID.SERVER_AUTH, [
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])

    def client_certificate(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files of a client certificate for ``name`` signed by this CA."""
        return self._issue(f"client-{name}", name, x509.ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(name)])

    def _issue(self, stem: str, common_name: str, usage, names: list) -> tuple[Path, Path]:
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=2))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return cert_file, key_file

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def work_dir():
    """A directory the PostgreSQL server (its own user when the tests run as root) can read."""
    directory = Path(tempfile.mkdtemp(prefix="convocations-production-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(work_dir) -> PrivateCA:
    return PrivateCA(work_dir)


# --- the manifests ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def rendered() -> list[dict]:
    return render("overlays/prod")


@pytest.fixture(scope="session")
def infra() -> list[dict]:
    return [d for f in sorted((K8S / "infra").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


# --- PostgreSQL: a throw-away cluster with scram passwords and TLS, laid out as postgres-cluster.yaml -----

class PostgresCluster(PrivatePostgres):
    """TLS only, scram passwords, the cluster's own max_connections: as deploy/k8s/infra/postgres-cluster.yaml."""

    def __init__(self, directory: Path, pki: PrivateCA, max_connections: int) -> None:
        super().__init__(max_connections=max_connections, tls=(pki.cert_file, pki.key_file), directory=directory)
        self.role_passwords: dict[str, str] = {}
        self.database = ""
        self.start()

    async def admin(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn(database))


async def _bootstrap(cluster: PostgresCluster, spec: dict) -> str:
    """What CloudNativePG does with the Cluster resource: the application database and its owner, the
    postInitApplicationSQL, then each managed role with LOGIN, its password and its connection limit."""
    initdb = spec["bootstrap"]["initdb"]
    database, owner = initdb["database"], initdb["owner"]
    conn = await cluster.admin()
    try:
        await conn.execute(f'create role "{owner}" login password \'{secrets.token_hex(16)}\'')
        await conn.execute(f'create database "{database}" owner "{owner}"')
    finally:
        await conn.close()
    conn = await cluster.admin(database)
    try:
        for statement in initdb.get("postInitApplicationSQL", []):
            await conn.execute(statement)
        for role in spec["managed"]["roles"]:
            password = cluster.role_passwords[role["name"]] = secrets.token_hex(16)
            exists = await conn.fetchval("select true from pg_roles where rolname = $1", role["name"])
            login = "login" if role.get("login") else "nologin"
            await conn.execute(f'{"alter" if exists else "create"} role "{role["name"]}" {login} '
                               f'connection limit {role.get("connectionLimit", -1)} password \'{password}\'')
            for parent in role.get("inRoles", []):
                await conn.execute(f'grant "{parent}" to "{role["name"]}"')
    finally:
        await conn.close()
    return database


@pytest.fixture(scope="session")
async def postgres(work_dir, pki, infra):
    [cluster_spec] = [d["spec"] for d in infra if d["kind"] == "Cluster"]
    max_connections = int(cluster_spec["postgresql"]["parameters"]["max_connections"])
    cluster = PostgresCluster(work_dir / "postgres", pki, max_connections)
    try:
        cluster.database = await _bootstrap(cluster, cluster_spec)
        yield cluster
    finally:
        cluster.stop()


# --- RabbitMQ: one user per service, with the permissions of rabbitmq-users.yaml, in the tier's vhost ----

def _rabbitmqctl(*args: str) -> None:
    subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def broker(infra):
    """{service: (username, password)}; the users are deleted at the end. The vhost is kept between runs
    with its queues emptied (as tests/conftest.py does, for the same reason)."""
    if RABBITMQCTL is None:
        raise RuntimeError("rabbitmqctl is not on PATH: the production tier creates its broker users with it")
    _rabbitmqctl("add_vhost", PROD_VHOST)
    _rabbitmqctl("set_permissions", "-p", PROD_VHOST, "guest", ".*", ".*", ".*")  # to empty the queues
    users: dict[str, tuple[str, str]] = {}
    try:
        for user in (d for d in infra if d["kind"] == "User"):
            name = user["metadata"]["name"]
            users[name] = (f"{PROD_VHOST}.{name}", secrets.token_hex(16))
            _rabbitmqctl("add_user", *users[name])
        for permission in (d for d in infra if d["kind"] == "Permission"):
            username = users[permission["spec"]["userReference"]["name"]][0]
            p = permission["spec"]["permissions"]
            _rabbitmqctl("set_permissions", "-p", PROD_VHOST, username, p.get("configure", "^$"),
                         p.get("write", "^$"), p.get("read", "^$"))
        for permission in (d for d in infra if d["kind"] == "TopicPermission"):
            username = users[permission["spec"]["userReference"]["name"]][0]
            p = permission["spec"]["permissions"]
            _rabbitmqctl("set_topic_permissions", "-p", PROD_VHOST, username, p["exchange"],
                         p.get("write", "^$"), p.get("read", "^$"))
        _purge_all_queues(PROD_VHOST, f"amqp://guest:guest@{BROKER}/{quote(PROD_VHOST, safe='')}")
        yield users
    finally:
        for username, _ in users.values():
            subprocess.run([RABBITMQCTL, "delete_user", username], capture_output=True, timeout=120)


def amqp_url(user: tuple[str, str]) -> str:
    """The tier's vhost as one of its broker users, e.g. ``amqp_url(broker["hospital-his"])``."""
    username, password = user
    return f"amqp://{quote(username, safe='')}:{quote(password, safe='')}@{BROKER}/{quote(PROD_VHOST, safe='')}"


# --- the hospital's SMTP relay: STARTTLS required, then AUTH -------------------------------------------

class Relay:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"rcpt": envelope.rcpt_tos,
                              "tls": session.ssl is not None,
                              "login": session.auth_data.login if session.authenticated else None,
                              **parse_email(envelope.content)})
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, auth_data=auth_data)


@pytest.fixture(scope="session")
def relay(pki):
    handler, port = Relay(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=pki.server_context(),
                            require_starttls=True, authenticator=_authenticate, auth_required=True)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture(scope="session")
def sso(pki):
    """The hospital's single sign-on: the development OpenID provider over HTTPS with the private CA's
    certificate, its console client holding the secret the Secret gives the secretariat."""
    provider = DevOidc(tls=(str(pki.cert_file), str(pki.key_file)))
    provider.clients[0]["client_secret"] = OIDC_CLIENT_SECRET
    with provider:
        yield provider


@pytest.fixture(scope="session")
def sms_provider():
    with DevInbox() as box:
        yield box


# --- the services ----------------------------------------------------------------------------------------

def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Settings:
    """Each service's environment from the rendered overlay, with the test's values in the placeholders
    and the test's hosts in place of the hospital's. Every replaced key must exist in the overlay."""

    def __init__(self, rendered, postgres, broker, relay, sms_provider, pki, ports, sso) -> None:
        self.rendered, self.postgres, self.broker = rendered, postgres, broker
        self.relay, self.sms, self.pki, self.ports, self.sso = relay, sms_provider, pki, ports, sso
        self.templates = secret_templates()
        self.keys: dict[str, str] = {}  # one value per key name: shared keys are equal in every Secret

    def placeholder(self, key: str, value: str) -> str:
        secret_values = {"SMTP_USERNAME": SMTP_USER, "SMTP_PASSWORD": SMTP_PASSWORD,
                         "SMS_ACCOUNT_SID": self.sms.account_sid, "SMS_AUTH_TOKEN": self.sms.auth_token,
                         "SMS_GENERIC_TOKEN": self.sms.generic_token, "OIDC_CLIENT_SECRET": OIDC_CLIENT_SECRET}
        if key in secret_values:
            return secret_values[key]
        if key.endswith("_KEY") or key.endswith("_KEYS"):
            self.keys.setdefault(key, _key())
            return PLACEHOLDER.sub(self.keys[key], value)
        raise KeyError(f"no test value for the placeholder of {key}")

    def database_url(self, template: str) -> str:
        url = urlsplit(template)
        password = self.postgres.role_passwords[url.username]
        return urlunsplit(url._replace(netloc=f"{url.username}:{quote(password, safe='')}@127.0.0.1:{self.postgres.port}"))

    def amqp_url(self, template: str) -> str:
        url = urlsplit(template)
        username, password = self.broker[url.username]
        return urlunsplit(url._replace(netloc=f"{quote(username, safe='')}:{quote(password, safe='')}@{BROKER}",
                                       path="/" + quote(PROD_VHOST, safe="")))

    def hosts(self, service: str) -> dict[str, str]:
        hosts = {"HTTP_HOST": "127.0.0.1", "PORTAL_BASE_URL": f"https://localhost:{self.ports['access-portal']}"}
        if service == "mailer":
            hosts |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.relay.port),
                      "BOUNCE_SMTP_HOST": "127.0.0.1", "BOUNCE_SMTP_PORT": str(free_port())}
        if service == "sms-gateway":
            # The development provider answers over plain HTTP on this host, as an egress sidecar would.
            hosts |= {"SMS_PROVIDER_URL": self.sms.twilio_base_url, "SMS_GENERIC_URL": self.sms.generic_messages_url,
                      "SMS_PLAIN_LOCAL_PROVIDER": "true",
                      "SMS_CALLBACK_BASE_URL": f"https://localhost:{self.ports['sms-gateway']}"}
        if service == "secretariat":
            hosts |= {"OIDC_ISSUER": self.sso.issuer, "PUBLIC_BASE_URL": f"https://localhost:{self.ports['secretariat']}"}
        if service == "hospital-gateway":
            hosts |= {"OIDC_ISSUER": self.sso.issuer, "MLLP_HOST": "127.0.0.1",
                      "MLLP_TLS_CERT_FILE": str(self.pki.cert_file), "MLLP_TLS_KEY_FILE": str(self.pki.key_file)}
        return hosts

    def of(self, kind: str, name: str, service: str) -> dict[str, str]:
        env = container_env(self.rendered, kind, name, self.templates)
        for key, value in list(env.items()):
            if key == "DATABASE_URL":
                env[key] = self.database_url(value)
            elif key == "AMQP_URL":
                env[key] = self.amqp_url(value)
            elif PLACEHOLDER.search(value):
                env[key] = self.placeholder(key, value)
        if kind == "Job":  # a migration: no host of its own but the database's
            return env
        for key, value in self.hosts(service).items():
            assert key in env, f"the production overlay does not set {key} for {name}"
            env[key] = value
        if service == "mailer":
            env["SMTP_CA_FILE"] = str(self.pki.ca_file)  # the hospital's CA, as a site would add it
            # The Secret mailer-dkim, mounted where DKIM_KEYS (the prod overlay) says, here a local file.
            selector, _, mounted = env["DKIM_KEYS"].partition(":")
            key_file = self.pki.ca_file.parent / Path(mounted).name
            if not key_file.exists():
                key_file.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            env["DKIM_KEYS"] = f"{selector}:{key_file}"
        if service in ("secretariat", "hospital-gateway"):
            env["SSL_CERT_FILE"] = str(self.pki.ca_file)  # the hospital's CA, which its provider's certificate chains to
        if service == "hospital-gateway":  # the overlay's systems, on this machine's free ports
            systems = json.loads(env["HOSPITAL_SYSTEMS"])
            for system in systems:
                system["mllp_port"] = self.ports[f"mllp-{system['id']}"] = free_port()
                if system.get("outbound"):  # statuses back: to a port nobody listens on (they are retried)
                    system["outbound"]["url"] = f"https://localhost:{free_port()}/fhir"
            env["HOSPITAL_SYSTEMS"] = json.dumps(systems)
        return env


@pytest.fixture(scope="session")
def production(rendered, postgres, broker, relay, sms_provider, pki, sso, tmp_path_factory):
    ports = {name: free_port() for name in SERVICES}
    settings = Settings(rendered, postgres, broker, relay, sms_provider, pki, ports, sso)
    sso.clients[0]["redirect_uris"] = [f"https://localhost:{ports['secretariat']}/auth/callback"]
    stack = Stack(database=postgres.database, exchange="", smtp_port=relay.port, sms_provider_url="",
                  sms_account_sid="", sms_auth_token="", log_dir=tmp_path_factory.mktemp("production-logs"),
                  ports=ports, tls={n: (str(pki.cert_file), str(pki.key_file)) for n in HTTPS},
                  ca_file=str(pki.ca_file))
    stack.settings = {name: settings.of("Deployment", name, name) for name in STARTED}
    # The release's migration Jobs first, with their own settings and command (python -m <pkg> migrate).
    for job in find(rendered, "Job"):
        service = job["metadata"]["name"].removesuffix("-migrate")
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": python_path(),
               **settings.of("Job", job["metadata"]["name"], service)}
        python, *args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert python == "python", job["spec"]["template"]["spec"]["containers"][0]
        result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120,
                                cwd=ROOT)
        assert result.returncode == 0, f"{job['metadata']['name']} failed:\n{result.stdout}{result.stderr}"
    try:
        stack.start(list(STARTED))
        yield stack
    finally:
        stack.stop()
