"""The production-like tier: the five services with the settings of the rendered production overlay, their
Secrets made from a secret store the way the External Secrets Operator makes them from the overlay's
ExternalSecrets, a RabbitMQ node that speaks only TLS with the broker users and policy of deploy/k8s/infra,
a PostgreSQL cluster of the test's own (scram passwords, TLS verified against a private CA, its WAL archived
to an S3-compatible object store as the Barman Cloud plugin does), an SMTP relay that requires STARTTLS, the
hospital's single sign-on over HTTPS, and the portal and console over HTTPS. The test's hosts replace the
hospital's, and local files the Secrets the pods mount; nothing else is set by hand."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import boto3
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.x509.oid import NameOID
from devoidc import DevOidc
from moto.server import ThreadedMotoServer

from devinbox import DevInbox, parse_email
from devstack.broker import PrivateBroker
from devstack.brokerusers import password_hash
from devstack.otlp import OtlpReceiver
from devstack.postgres import PrivatePostgres
from devstack.sample import convocation_event, publish, sample_pdf
from devstack.stack import KEY_STORE, ROOT, SERVICES, Stack, free_port, python_path
from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.patient import PatientClient, find_link
from tests.production.manifests import container_env, find, render, resolve_external_secret
from tests.waiting import PATIENCE, eventually

CHAIN = ("issuer", "mailer", "sms-gateway", "access-portal")
# The chain, the department secretariats' console and API, and the hospital gateway (HL7 over MLLP with TLS,
# FHIR over HTTPS with the hospital provider's client-credentials tokens).
STARTED = (*CHAIN, "secretariat", "hospital-gateway")
HTTPS = ("access-portal", "sms-gateway", "secretariat", "hospital-gateway")  # TLS ends at the Gateway; here their own
OIDC_CLIENT_SECRET = secrets.token_hex(16)
SMTP_USER, SMTP_PASSWORD = "convocations-relay", secrets.token_hex(16)
BARMAN_TOOLS = ("barman-cloud-wal-archive", "barman-cloud-backup", "barman-cloud-restore", "barman-cloud-wal-restore")


# --- a private CA, as a hospital's internal PKI ------------------------------------------------------


class PrivateCA:
    """A CA and one server certificate (localhost, 127.0.0.1) signed by it, as PEM files; client certificates
    on demand (a hospital system's, for mutual TLS)."""

    def __init__(self, directory: Path, name: str = "Convocations test CA") -> None:
        now = dt.datetime.now(dt.timezone.utc)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca = (
            x509.CertificateBuilder()
            .subject_name(self.ca_name)
            .issuer_name(self.ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file, self.key_file = self._issue(
            "server",
            "localhost",
            x509.ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    def client_certificate(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files of a client certificate for ``name`` signed by this CA."""
        return self._issue(f"client-{name}", name, x509.ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(name)])

    def ca_key_pem(self) -> str:
        """The CA's own key, as the secret store keeps it for cert-manager's Issuer (deploy/k8s/infra)."""
        return self.ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def _issue(self, stem: str, common_name: str, usage, names: list) -> tuple[Path, Path]:
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
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
    return render("infra")


# --- the hospital's secret store, read as the External Secrets Operator reads it ------------------------


class SecretStore:
    """The ClusterSecretStore ``convocations``: one value per (remote key, property). Passwords and keys are
    made on first read, as an operator would put them in; the outside parties' credentials are the test
    doubles' own. ``secrets(docs)`` is what ESO writes for each ExternalSecret of a rendering."""

    def __init__(self, known: dict[tuple[str, str], str]) -> None:
        self.values = dict(known)

    def fetch(self, key: str, prop: str) -> str:
        if (key, prop) not in self.values:
            self.values[(key, prop)] = self._make(key, prop)
        return self.values[(key, prop)]

    @staticmethod
    def _make(key: str, prop: str) -> str:
        if key.startswith(("convocations/database/", "convocations/broker/")) and prop == "password":
            return secrets.token_hex(24)
        if key == "convocations/keys" and prop == "PRINT_ROOM_PUBLIC_KEY":
            public = x25519.X25519PrivateKey.generate().public_key()
            return base64.b64encode(
                public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            ).decode()
        if key == "convocations/keys":
            return ("k1:" if prop == "SEAL_KEYS" else "") + base64.b64encode(os.urandom(32)).decode()
        if key == "convocations/key-store":
            if prop == "KEY_STORE_MASTER_KEY":
                return "m1:" + base64.b64encode(os.urandom(32)).decode()
            return secrets.token_hex(24)  # ISSUER_TOKEN, PORTAL_TOKEN
        raise KeyError(f"the tier's secret store has nothing under {key} {prop}")

    def secrets(self, docs: list[dict]) -> dict[str, dict[str, str]]:
        return {
            es["spec"]["target"]["name"]: resolve_external_secret(es, self.fetch) for es in find(docs, "ExternalSecret")
        }


@pytest.fixture(scope="session")
def store(pki, sms_provider) -> SecretStore:
    dkim = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return SecretStore(
        {
            ("convocations/mailer", "SMTP_USERNAME"): SMTP_USER,
            ("convocations/mailer", "SMTP_PASSWORD"): SMTP_PASSWORD,
            ("convocations/mailer-dkim", "dkim2026"): dkim,
            ("convocations/sms-gateway", "SMS_ACCOUNT_SID"): sms_provider.account_sid,
            ("convocations/sms-gateway", "SMS_AUTH_TOKEN"): sms_provider.auth_token,
            ("convocations/sms-gateway", "SMS_GENERIC_TOKEN"): sms_provider.generic_token,
            ("convocations/secretariat", "OIDC_CLIENT_SECRET"): OIDC_CLIENT_SECRET,
            ("convocations/internal-ca", "ca.crt"): pki.ca_file.read_text(),
            ("convocations/internal-ca", "ca.key"): pki.ca_key_pem(),
            ("convocations/hospital-gateway-mllp", "tls.crt"): pki.cert_file.read_text(),
            ("convocations/hospital-gateway-mllp", "tls.key"): pki.key_file.read_text(),
            ("convocations/backups", "access_key_id"): secrets.token_hex(10),
            ("convocations/backups", "secret_access_key"): secrets.token_hex(20),
        }
    )


# --- the object store of the database's backups (S3, played by moto) ------------------------------------


class ObjectStore:
    """The ObjectStore of deploy/k8s/infra/backups.yaml on an S3-compatible server of the test's own, and the
    barman-cloud commands the Barman Cloud plugin runs against it, with its bucket, server name and
    compression (CloudNativePG's instance manager runs the same tools with the same arguments)."""

    def __init__(self, infra: list[dict], store: SecretStore) -> None:
        missing = [tool for tool in BARMAN_TOOLS if shutil.which(tool) is None]
        if missing:  # a failure, not a skip: the restore drill is the proof that backups restore
            raise RuntimeError(f"{', '.join(missing)} not on PATH: scripts/bootstrap.sh installs barman-cli-cloud")
        [cluster] = find(infra, "Cluster")
        [plugin] = cluster["spec"]["plugins"]
        [spec] = [s["spec"] for s in find(infra, "ObjectStore", plugin["parameters"]["barmanObjectName"])]
        configuration = spec["configuration"]
        self.destination, self.server = configuration["destinationPath"], plugin["parameters"]["serverName"]
        credentials = store.secrets(infra)[configuration["s3Credentials"]["accessKeyId"]["name"]]
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self.server_process = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.server_process.start()
        host, port = self.server_process.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": credentials[configuration["s3Credentials"]["accessKeyId"]["key"]],
            "AWS_SECRET_ACCESS_KEY": credentials[configuration["s3Credentials"]["secretAccessKey"]["key"]],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=urlsplit(self.destination).netloc)
        self.wal_flags = ["--gzip"] if configuration["wal"]["compression"] == "gzip" else []
        self.data_flags = ["--gzip"] if configuration["data"]["compression"] == "gzip" else []

    def command(self, tool: str, *args: str) -> list[str]:
        flags = self.wal_flags if tool == "barman-cloud-wal-archive" else []
        flags = self.data_flags if tool == "barman-cloud-backup" else flags
        return [tool, *flags, "--endpoint-url", self.endpoint, self.destination, self.server, *args]

    def run(self, tool: str, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            self.command(tool, *args),
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def stop(self) -> None:
        self.server_process.stop()


@pytest.fixture(scope="session")
def object_store(infra, store):
    objects = ObjectStore(infra, store)
    yield objects
    objects.stop()


# --- PostgreSQL: a throw-away cluster with scram passwords and TLS, laid out as postgres-cluster.yaml -----


def _owned_by_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:  # the server runs as postgres (CI runs as root): its files are postgres's
        for path in paths:
            subprocess.run(["chown", "-R", "postgres", str(path)], check=True)


class PostgresCluster(PrivatePostgres):
    """TLS only and verified against the private CA, scram passwords, the cluster's own max_connections and
    server settings (``archive_command`` as the Barman Cloud plugin runs it): as postgres-cluster.yaml."""

    def __init__(
        self,
        directory: Path,
        pki: PrivateCA,
        max_connections: int,
        settings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            max_connections=max_connections,
            tls=(pki.cert_file, pki.key_file),
            directory=directory,
            settings=settings,
            env=env,
        )
        self.pki, self.database = pki, "postgres"

    def dsn(self, user: str, password: str, database: str = "postgres") -> str:
        return (
            f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"
            f"?sslmode=verify-full&sslrootcert={self.pki.ca_file}"
        )

    async def admin(self, database: str | None = None) -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn(database or self.database))


async def _bootstrap(cluster: PostgresCluster, spec: dict, passwords: dict[str, str]) -> str:
    """What CloudNativePG does with the Cluster resource: the application database and its owner, the
    postInitApplicationSQL, then each managed role with LOGIN, its connection limit and the password of
    its Secret (``passwords``: made from the secret store by deploy/k8s/infra/external-secrets.yaml)."""
    initdb = spec["bootstrap"]["initdb"]
    database, owner = initdb["database"], initdb["owner"]
    conn = await cluster.admin()
    try:
        await conn.execute(f"create role \"{owner}\" login password '{secrets.token_hex(16)}'")
        await conn.execute(f'create database "{database}" owner "{owner}"')
    finally:
        await conn.close()
    conn = await cluster.admin(database)
    try:
        for statement in initdb.get("postInitApplicationSQL", []):
            await conn.execute(statement)
        for role in spec["managed"]["roles"]:
            exists = await conn.fetchval("select true from pg_roles where rolname = $1", role["name"])
            login = "login" if role.get("login") else "nologin"
            await conn.execute(
                f'{"alter" if exists else "create"} role "{role["name"]}" {login} '
                f"connection limit {role.get('connectionLimit', -1)} password '{passwords[role['name']]}'"
            )
            for parent in role.get("inRoles", []):
                await conn.execute(f'grant "{parent}" to "{role["name"]}"')
    finally:
        await conn.close()
    return database


def role_passwords(infra: list[dict], store: SecretStore) -> dict[str, str]:
    """Each managed role's password, from the Secret its ``passwordSecret`` names (basic-auth, its username
    the role's name), as CloudNativePG reads it."""
    [spec] = [d["spec"] for d in find(infra, "Cluster")]
    made = store.secrets(infra)
    passwords = {}
    for role in spec["managed"]["roles"]:
        secret = made[role["passwordSecret"]["name"]]
        assert secret["username"] == role["name"], role
        passwords[role["name"]] = secret["password"]
    return passwords


@pytest.fixture(scope="session")
async def postgres(work_dir, pki, infra, store, object_store):
    [spec] = [d["spec"] for d in find(infra, "Cluster")]
    cluster = PostgresCluster(
        work_dir / "postgres",
        pki,
        int(spec["postgresql"]["parameters"]["max_connections"]),
        settings={
            "archive_mode": "on",
            "archive_command": " ".join(object_store.command("barman-cloud-wal-archive", "%p")),
        },
        env=object_store.env,
    )
    try:
        cluster.start()
        cluster.database = await _bootstrap(cluster, spec, role_passwords(infra, store))
        yield cluster
    finally:
        cluster.stop()


# --- RabbitMQ: a node of the tier's own, TLS only, with the users, permissions and policies of infra -------


@dataclass
class Broker:
    node: PrivateBroker
    users: dict[str, tuple[str, str]]  # User resource name: (username, password)
    ca_file: Path

    def url(self, user: str) -> str:
        """amqps:// to the tier's node as one of its users (e.g. ``broker.url("hospital-his")``)."""
        username, password = self.users[user]
        return (
            f"amqps://{quote(username, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.node.port}/"
            f"?cafile={self.ca_file}"
        )


@pytest.fixture(scope="session")
def broker(infra, store, pki):
    """Its users, passwords from their Secrets (made from the secret store), permissions and policies as the
    Messaging Topology Operator applies rabbitmq-users.yaml and rabbitmq-policies.yaml."""
    node = PrivateBroker(
        "convocations-production", tls=(str(pki.ca_file), str(pki.cert_file), str(pki.key_file))
    ).start()
    try:
        made = store.secrets(infra)
        users = {}
        for user in find(infra, "User"):
            secret = made[user["spec"]["importCredentialsSecret"]["name"]]
            users[user["metadata"]["name"]] = (secret["username"], secret["password"])
        # What the operator applies one object at a time, loaded here in one ``import_definitions`` (each
        # rabbitmqctl call starts an Erlang VM: thirty of them took a minute on two busy cores).
        definitions = {
            "users": [
                {
                    "name": name,
                    "password_hash": password_hash(password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                }
                for name, password in users.values()
            ],
            "permissions": [
                {
                    "user": users[spec["userReference"]["name"]][0],
                    "vhost": spec["vhost"],
                    "configure": spec["permissions"].get("configure", "^$"),
                    "write": spec["permissions"].get("write", "^$"),
                    "read": spec["permissions"].get("read", "^$"),
                }
                for spec in (p["spec"] for p in find(infra, "Permission"))
            ],
            "topic_permissions": [
                {
                    "user": users[spec["userReference"]["name"]][0],
                    "vhost": spec["vhost"],
                    "exchange": spec["permissions"]["exchange"],
                    "write": spec["permissions"].get("write", "^$"),
                    "read": spec["permissions"].get("read", "^$"),
                }
                for spec in (p["spec"] for p in find(infra, "TopicPermission"))
            ],
            "policies": [
                {
                    "vhost": spec["vhost"],
                    "name": spec["name"],
                    "pattern": spec["pattern"],
                    "apply-to": spec["applyTo"],
                    "definition": spec["definition"],
                    "priority": spec["priority"],
                }
                for spec in (p["spec"] for p in find(infra, "Policy"))
            ],
        }
        loaded = node.home / "definitions.json"
        loaded.write_text(json.dumps(definitions))
        node.ctl("import_definitions", str(loaded))
        loaded.unlink()  # password hashes: not left behind
        yield Broker(node, users, pki.ca_file)
    finally:
        node.stop()


# --- the hospital's SMTP relay: STARTTLS required, then AUTH -------------------------------------------


class Relay:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.password = SMTP_PASSWORD

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "rcpt": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "login": session.auth_data.login if session.authenticated else None,
                **parse_email(envelope.content),
            }
        )
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == self.password.encode()
        return AuthResult(success=ok, auth_data=auth_data)


@pytest.fixture(scope="session")
def relay(pki):
    handler, port = Relay(), free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=pki.server_context(),
        require_starttls=True,
        authenticator=handler.authenticate,
        auth_required=True,
    )
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


@pytest.fixture(scope="session")
def collector():
    """The cluster's OpenTelemetry Collector, which the overlay's services export their spans to: a receiver of
    the tier's own. Without one, each service spent 7 s of its stop retrying a name that does not resolve."""
    with OtlpReceiver() as otlp:
        yield otlp


# --- the services ----------------------------------------------------------------------------------------


class Settings:
    """Each service's environment as the kubelet assembles it from the rendered overlay: its ConfigMaps, its
    Secrets (made from the store), the Secrets it mounts (files under a local directory, their paths in the
    environment rewritten to match), with the test's hosts in place of the hospital's."""

    def __init__(
        self, rendered, store, postgres, broker, relay, sms_provider, pki, ports, sso, collector, work_dir
    ) -> None:
        self.rendered, self.store, self.postgres, self.broker = rendered, store, postgres, broker
        self.relay, self.sms, self.pki, self.ports, self.sso = relay, sms_provider, pki, ports, sso
        self.collector = collector
        self.mounts = work_dir / "mounts"

    def database_url(self, value: str, port: int | None = None) -> str:
        url = urlsplit(value)
        return urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{port or self.postgres.port}"))

    def amqp_url(self, value: str) -> str:
        url = urlsplit(value)
        return urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{self.broker.node.port}"))

    def hosts(self, service: str) -> dict[str, str]:
        hosts = {"HTTP_HOST": "127.0.0.1", "PORTAL_BASE_URL": f"https://localhost:{self.ports['access-portal']}"}
        if service == "mailer":
            hosts |= {
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(self.relay.port),
                "BOUNCE_SMTP_HOST": "127.0.0.1",
                "BOUNCE_SMTP_PORT": str(free_port()),
            }
        if service == "sms-gateway":
            # The development provider answers over plain HTTP on this host, as an egress sidecar would.
            hosts |= {
                "SMS_PROVIDER_URL": self.sms.twilio_base_url,
                "SMS_GENERIC_URL": self.sms.generic_messages_url,
                "SMS_PLAIN_LOCAL_PROVIDER": "true",
                "SMS_CALLBACK_BASE_URL": f"https://localhost:{self.ports['sms-gateway']}",
            }
        if service == "secretariat":
            hosts |= {
                "OIDC_ISSUER": self.sso.issuer,
                "PUBLIC_BASE_URL": f"https://localhost:{self.ports['secretariat']}",
            }
        if service == "hospital-gateway":
            hosts |= {"OIDC_ISSUER": self.sso.issuer, "MLLP_HOST": "127.0.0.1"}
        if service in ("issuer", "access-portal"):
            hosts |= {"KEY_STORE_URL": f"http://127.0.0.1:{self.ports[KEY_STORE]}"}
        if service == KEY_STORE:  # its volume: a directory of the tier's own
            hosts |= {"KEY_STORE_DIR": str(self.mounts.parent / "key-store")}
        return hosts

    def mounted(self, kind: str, name: str, made: dict[str, dict[str, str]]) -> dict[str, str]:
        """{mount path: local directory} of the Secrets a workload mounts, written out as the kubelet would."""
        [workload] = find(self.rendered, kind, name)
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
        paths = {}
        for mount in pod["containers"][0].get("volumeMounts", []):
            if mount["name"] in volumes:
                secret = volumes[mount["name"]]["secretName"]
                directory = self.mounts / secret
                directory.mkdir(parents=True, exist_ok=True)
                for key, value in made.get(secret, {}).items():
                    (directory / key).write_text(value)
                    (directory / key).chmod(0o600)
                paths[mount["mountPath"]] = str(directory)
        return paths

    def of(self, kind: str, name: str, service: str) -> dict[str, str]:
        made = self.store.secrets(self.rendered)
        env = container_env(self.rendered, kind, name, made)
        for mount_path, directory in self.mounted(kind, name, made).items():
            env = {key: value.replace(mount_path + "/", directory + "/") for key, value in env.items()}
        for key, value in list(env.items()):
            if key in ("DATABASE_URL", "MIGRATION_DATABASE_URL"):
                env[key] = self.database_url(value)
            elif key == "AMQP_URL":
                env[key] = self.amqp_url(value)
        if kind == "Job":  # a migration: no host of its own but the database's
            return env
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:  # the collector's address in the cluster: the tier's receiver
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.collector.endpoint
        for key, value in self.hosts(service).items():
            assert key in env, f"the production overlay does not set {key} for {name}"
            env[key] = value
        if service == "mailer":
            env["SMTP_CA_FILE"] = str(self.pki.ca_file)  # the hospital's CA, as a site would add it
        if service in ("secretariat", "hospital-gateway"):
            env["SSL_CERT_FILE"] = str(
                self.pki.ca_file
            )  # the hospital's CA, which its provider's certificate chains to
        if service == "hospital-gateway":  # the overlay's systems, on this machine's free ports
            systems = json.loads(env["HOSPITAL_SYSTEMS"])
            for system in systems:
                system["mllp_port"] = self.ports[f"mllp-{system['id']}"] = free_port()
                if system.get("outbound"):  # statuses back: to a port nobody listens on (they are retried)
                    system["outbound"]["url"] = f"https://localhost:{free_port()}/fhir"
            env["HOSPITAL_SYSTEMS"] = json.dumps(systems)
        return env


@pytest.fixture(scope="session")
def settings(rendered, store, postgres, broker, relay, sms_provider, pki, sso, collector, work_dir) -> Settings:
    ports = {name: free_port() for name in [*SERVICES, KEY_STORE]}
    return Settings(rendered, store, postgres, broker, relay, sms_provider, pki, ports, sso, collector, work_dir)


def run_migration_jobs(rendered: list[dict], settings: Settings) -> None:
    """The release's migration Jobs, with their own settings and command (python -m <pkg> migrate)."""
    for job in find(rendered, "Job"):
        service = job["metadata"]["labels"]["app.kubernetes.io/name"].removesuffix("-migrate")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": python_path(),
            **settings.of("Job", job["metadata"]["name"], service),
        }
        python, *args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert python == "python", job["spec"]["template"]["spec"]["containers"][0]
        result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert result.returncode == 0, f"{job['metadata']['name']} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def production(rendered, settings, pki, sso, relay, tmp_path_factory, services_forked):
    ports = settings.ports
    sso.clients[0]["redirect_uris"] = [f"https://localhost:{ports['secretariat']}/auth/callback"]
    stack = Stack(
        database=settings.postgres.database,
        exchange="",
        smtp_port=relay.port,
        sms_provider_url="",
        sms_account_sid="",
        sms_auth_token="",
        log_dir=tmp_path_factory.mktemp("production-logs"),
        ports=ports,
        tls={n: (str(pki.cert_file), str(pki.key_file)) for n in HTTPS},
        ca_file=str(pki.ca_file),
    )
    stack.settings = {name: settings.of("Deployment", name, name) for name in STARTED}
    stack.key_store_settings = settings.of("Deployment", KEY_STORE, KEY_STORE)
    run_migration_jobs(rendered, settings)
    try:
        stack.start(list(STARTED))
        yield stack
    finally:
        stack.stop()


# --- what the tests do as the hospital and as a patient -------------------------------------------------


@dataclass
class Letter:
    event: dict
    email: str
    e164: str
    national: str
    link: str = ""

    @property
    def convocation_id(self) -> str:
        return self.event["data"]["convocation_id"]

    @property
    def pdf(self) -> bytes:
        return base64.b64decode(self.event["data"]["document_pdf_base64"])


async def send_letter(production: Stack, broker: Broker, relay: Relay, title: str) -> Letter:
    """The hospital publishes a convocation as its own broker user; returns it once its e-mail is at the relay."""
    e164, national = random_mobile()
    letter = Letter(convocation_event(email=random_email(), mobile=national, pdf=sample_pdf(title)), "", e164, national)
    letter.email = letter.event["data"]["patient"]["email"]
    await publish(broker.url("hospital-his"), production.settings["issuer"]["EVENTS_EXCHANGE"], letter.event)
    mail = await eventually(
        lambda: next((m for m in relay.messages if letter.email in m["rcpt"]), None), what="the e-mail at the relay"
    )
    letter.link = find_link(mail["text"])
    letter.mail = mail  # type: ignore[attr-defined]
    return letter


def patient_client(link: str, pki: PrivateCA, cookies: list[str] | None = None) -> PatientClient:
    hooks = {"response": [lambda r: cookies.extend(r.headers.get_list("set-cookie"))]} if cookies is not None else {}
    return PatientClient(link, client=httpx.Client(timeout=10, verify=pki.client_context(), event_hooks=hooks))


async def open_letter(patient: PatientClient, letter: Letter, sms_provider) -> httpx.Response:
    """The patient types the number, gets the code by SMS, enters it and downloads the PDF."""
    before = sum(1 for s in sms_provider.inbox.sms() if s["to"] == letter.e164)
    assert patient.request_code(letter.national).status_code in (200, 303)
    sms = await eventually(
        lambda: ([s for s in sms_provider.inbox.sms() if s["to"] == letter.e164][before:] or [None])[0], what="the SMS"
    )
    assert patient.enter_code(code_of(sms)).status_code in (200, 303)
    letter.code = code_of(sms)  # type: ignore[attr-defined]
    return patient.download("pdf")


# --- backups: what the Barman Cloud plugin does for CloudNativePG, on the tier's own cluster ---------------


def base_backup(objects: ObjectStore, cluster: PostgresCluster) -> str:
    """A base backup of the running cluster to the object store (as the ScheduledBackup takes one); returns
    its id."""
    # An immediate checkpoint (the drill's backup would otherwise wait for a spread one, minutes).
    objects.run(
        "barman-cloud-backup",
        "--immediate-checkpoint",
        env={
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
            "PGPASSWORD": cluster.superuser_password,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(cluster.pki.ca_file),
        },
    )
    listing = json.loads(objects.run("barman-cloud-backup-list", "--format", "json"))
    return listing["backups_list"][-1]["backup_id"]


async def archive_everything(cluster: PostgresCluster, timeout: float = PATIENCE) -> None:
    """Close the current WAL segment and wait until the archive has it: every commit so far is in the store."""
    admin = await cluster.admin()
    try:
        segment = await admin.fetchval("select pg_walfile_name(pg_switch_wal())")
        archiver: dict = {}

        async def archived() -> bool:
            archiver.update(await admin.fetchrow("select last_archived_wal, last_failed_wal from pg_stat_archiver"))
            return archiver["last_archived_wal"] is not None and archiver["last_archived_wal"] >= segment

        await eventually(
            archived,
            timeout,
            what=f"the archiving of WAL segment {segment}",
            seen=lambda: f"last archived {archiver['last_archived_wal']}, last failed {archiver['last_failed_wal']}",
        )
    finally:
        await admin.close()


async def restore(
    objects: ObjectStore, origin: PostgresCluster, backup_id: str, target: dt.datetime, directory: Path
) -> PostgresCluster:
    """A new cluster from the object store: the base backup, then the archived WAL replayed up to ``target``
    (CloudNativePG's bootstrap.recovery with a recoveryTarget.targetTime), then promoted."""
    restored = PostgresCluster(
        directory,
        origin.pki,
        origin.max_connections,
        env=objects.env,
        settings={
            "restore_command": " ".join(objects.command("barman-cloud-wal-restore", "%f", "%p")),
            "recovery_target_time": target.isoformat(),
            "recovery_target_action": "promote",
            "archive_mode": "off",
        },
    )  # the drill's cluster is thrown away: it archives nothing of its own
    restored.superuser_password, restored.database = origin.superuser_password, origin.database
    objects.run("barman-cloud-restore", backup_id, str(restored.data))
    restored.data.chmod(0o700)
    (restored.data / "recovery.signal").touch()
    _owned_by_postgres(directory)
    restored.start()
    admin = await restored.admin()
    try:
        await eventually(
            lambda: admin.fetchval("select not pg_is_in_recovery()"), what="the end of the restored cluster's recovery"
        )
        return restored
    finally:
        await admin.close()
