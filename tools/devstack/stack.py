"""Start the services as separate processes, as they run in production, and stop them."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import certifi
import httpx

from devstack.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {  # name: (python package, directory, schema/role)
    "issuer": ("issuer", "services/issuer", "issuer"),
    "mailer": ("mailer", "services/mailer", "mailer"),
    "sms-gateway": ("sms_gateway", "services/sms-gateway", "sms_gateway"),
    "access-portal": ("access_portal", "services/access-portal", "access_portal"),
    "secretariat": ("secretariat", "services/secretariat", "secretariat"),
    "hospital-gateway": ("hospital_gateway", "services/hospital-gateway", "hospital_gateway"),
}
# The key store (the period keys): no broker, no database; started with the issuer or the portal, which ask it.
KEY_STORE = "key-store"
KEY_STORE_PACKAGE, KEY_STORE_DIR = "key_store", "services/key-store"
KEY_STORE_CALLERS = ("issuer", "access-portal")


# Ports for the servers the tools start, below the kernel's ephemeral range (ip_local_port_range, 32768-60999 on
# Linux): a port the kernel hands out there may be taken by an outgoing connection before the server binds it
# (a test PostgreSQL failed to start so, on two loaded cores with many connections opening).
SERVER_PORTS = range(20000, 32000)
_given: set[int] = set()  # handed out by this process: a stack picks all its ports before any server binds
# Handed out by any process of this machine: a port is also locked (flock) in a file of this directory, held
# open until the process that chose it ends. ``make test``'s steps choose ports side by side; two once chose
# the same before either server bound it (one service failed to bind, and its stack's readiness probe was
# answered by the other step's).
PORT_LOCKS = Path(os.environ.get("TMPDIR", "/tmp")) / "convocations-ports"
_held: list[int] = []  # the open lock files' descriptors


@functools.cache
def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context that verifies servers against ``ca_file`` (by default what httpx trusts: $SSL_CERT_FILE,
    else $SSL_CERT_DIR, else certifi's bundle), made once per process. httpx makes one for every client it
    creates, parsing the whole bundle each time (about 20 ms of CPU): the tests' readiness polls and
    short-lived clients paid that thousands of times a run."""
    if ca_file is None and not os.environ.get("SSL_CERT_FILE") and os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=ca_file or os.environ.get("SSL_CERT_FILE") or certifi.where())


def http(method: str, url: str, *, verify: ssl.SSLContext | str | bool = True, **kw) -> httpx.Response:
    """``httpx.request`` with the process's TLS context (``tls_context``): one request on a client of its
    own, closed after the answer, so nothing (cookies, connections) is shared between calls."""
    context = tls_context(verify) if isinstance(verify, str) else tls_context() if verify is True else verify
    with httpx.Client(
        verify=context, timeout=kw.pop("timeout", 5.0), follow_redirects=kw.pop("follow_redirects", False)
    ) as c:
        return c.request(method, url, **kw)


def free_port() -> int:
    for _ in range(500):
        port = random.choice(SERVER_PORTS)  # noqa: S311 - a port, not a secret
        if port in _given:
            continue
        if (lock := _lock(port)) is None:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                os.close(lock)  # in use by something else: not ours to keep
                continue
        _held.append(lock)
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {SERVER_PORTS.start}-{SERVER_PORTS.stop - 1}")


def _lock(port: int) -> int | None:
    """The descriptor of ``port``'s lock file, locked; None if another live process holds it. A lock file
    another user made is opened to read, which is all ``flock`` needs."""
    try:
        fd = os.open(_lock_directory(PORT_LOCKS) / str(port), os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:  # a file of another user's that this one cannot open: take it as taken
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@functools.cache
def _lock_directory(path: Path) -> Path:
    """``path``, made once per process and shared by the machine's users (sticky, writable by all)."""
    path.mkdir(exist_ok=True)
    if path.stat().st_mode & 0o7777 != 0o1777:
        with contextlib.suppress(OSError):  # the umask left it 0755: open it to every user, as /tmp is
            path.chmod(0o1777)
    return path


class Process(Protocol):
    """A service's process: a ``subprocess.Popen``, or a child of the fork server (``forkserver.Forked``)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


_fork_server: ForkServer | None = None


@contextlib.contextmanager
def fork_server(log_file: Path) -> Iterator[ForkServer]:
    """While open, ``spawn`` forks ``python -m`` commands from a server that has imported their libraries
    (``devstack.forkserver``): the test suite's way to start services; outside it, ``spawn`` runs them."""
    global _fork_server
    server = ForkServer(log_file, ROOT / "tools")
    _fork_server = server
    try:
        yield server
    finally:
        _fork_server = None
        server.stop()


def spawn(command: list[str], env: dict[str, str], log_file: Path, cwd: Path = ROOT, fork: bool = True) -> Process:
    """Start ``command`` with ``env`` (the whole environment), its output appended to ``log_file``; forked
    from the fork server when one is open, unless ``fork`` is false (a process whose memory is measured: a
    fork holds the server's preloaded libraries too)."""
    if fork and _fork_server is not None and _fork_server.forks(command, env):
        return _fork_server.spawn(command, env, cwd, log_file)
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)


def start_key_store(directory: Path, log_file: Path, **settings: str) -> tuple[Process, str]:
    """A key store of its own (development master key and callers' tokens), ready: (process, its URL)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": python_path(), "HTTP_PORT": str(port), "KEY_STORE_DIR": str(directory)}
    env |= {name.upper(): value for name, value in settings.items()}
    process = spawn([sys.executable, "-m", KEY_STORE_PACKAGE], env, log_file)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if http("GET", f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the key store did not start; see {log_file}")


def python_path() -> str:
    dirs = [ROOT, *(ROOT / d for _, d, _ in SERVICES.values()), ROOT / KEY_STORE_DIR]
    return os.pathsep.join(str(d) for d in dirs)


@dataclass
class Stack:
    database: str
    exchange: str
    smtp_port: int
    sms_provider_url: str
    sms_account_sid: str
    sms_auth_token: str
    log_dir: Path
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    portal_base_url: str | None = None
    oidc_issuer: str = "http://127.0.0.1:8030"  # the development OpenID provider (tools/devoidc)
    # The hospital gateway's systems (HOSPITAL_SYSTEMS, devstack.hospital.hospital_systems) and the sandbox
    # endpoints its sandbox tests go to (a development inbox of their own), when set.
    hospital_systems: list[dict] | None = None
    sandbox_smtp_port: int | None = None
    sandbox_sms_provider_url: str | None = None
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per service, or "*" for all
    # The PostgreSQL server's port on 127.0.0.1 (libpq's PGPORT, as psql and scripts/db-setup.sh read it).
    database_port: int = field(default_factory=lambda: int(os.environ.get("PGPORT", "5432")))
    # Complete settings per service (the production tier's, read from the manifests): they replace the
    # development ones above; only the port and the Python path are still the stack's.
    settings: dict[str, dict[str, str]] | None = None
    # Services served over HTTPS by uvicorn itself, {name: (certificate file, key file)}, and the CA
    # that the readiness checks trust for them.
    tls: dict[str, tuple[str, str]] = field(default_factory=dict)
    ca_file: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    # Where the key store keeps its period keys (default: beside the logs, a directory of this stack's own).
    key_store_dir: Path | None = None
    # The key store's complete settings (the production tier's, read from the manifests), like ``settings``.
    key_store_settings: dict[str, str] | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    # Services started as processes of their own even beside a fork server: those whose memory a test measures.
    # This stack's own (set after creation): a stack made from it with dataclasses.replace forks them all.
    unforked: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        for name in SERVICES:
            self.ports.setdefault(name, free_port())
        self.ports.setdefault(KEY_STORE, free_port())
        self.ports.setdefault("mailer-bounces", free_port())  # the mailer's inbound SMTP for late bounces
        # The hospital gateway's MLLP listeners (the development hospital's and the sandbox's) when no
        # HOSPITAL_SYSTEMS is given: ports of their own, so that stacks side by side never share one.
        self.ports.setdefault("gateway-hl7", free_port())
        self.ports.setdefault("gateway-sandbox", free_port())
        self.portal_base_url = self.portal_base_url or f"http://127.0.0.1:{self.ports['access-portal']}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.key_store_dir = self.key_store_dir or self.log_dir / "key-store"

    def url(self, name: str) -> str:
        scheme = "https" if name in self.tls else "http"
        host = "localhost" if name in self.tls else "127.0.0.1"  # the certificate's name
        return f"{scheme}://{host}:{self.ports[name]}"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def env_for(self, name: str) -> dict[str, str]:
        if name == KEY_STORE:
            return self.key_store_env()
        _, _, role = SERVICES[name]
        # TLS ends at the Gateway in a deployment; here the service's own HTTPS stands in for it.
        tls = {}
        if name in self.tls:
            tls = dict(zip(("HTTP_TLS_CERT_FILE", "HTTP_TLS_KEY_FILE"), self.tls[name], strict=True))
        if self.settings is not None:
            return {
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": python_path(),
                **self.settings[name],
                "HTTP_PORT": str(self.ports[name]),
                **tls,
            }
        env = {
            **os.environ,
            "PYTHONPATH": python_path(),
            "AMQP_URL": self.amqp_url,
            "DATABASE_URL": f"postgresql://{role}:{role}@127.0.0.1:{self.database_port}/{self.database}",
            "EVENTS_EXCHANGE": self.exchange,
            "HTTP_PORT": str(self.ports[name]),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_TLS": "none",
            "SMS_PROVIDER_URL": self.sms_provider_url,
            "SMS_ACCOUNT_SID": self.sms_account_sid,
            "SMS_AUTH_TOKEN": self.sms_auth_token,
            "SMS_CALLBACK_BASE_URL": self.url("sms-gateway"),
            "PORTAL_BASE_URL": self.portal_base_url or "",
            "PUBLIC_BASE_URL": self.url("secretariat"),
            "OIDC_ISSUER": self.oidc_issuer,
            "BOUNCE_SMTP_PORT": str(self.ports["mailer-bounces"]),
            "OUTBOX_POLL_SECONDS": "0.5",
            "KEY_STORE_URL": self.url(KEY_STORE),
        }
        env["HOSPITAL_SYSTEMS"] = json.dumps(
            self.hospital_systems if self.hospital_systems is not None else self.default_hospital_systems()
        )
        if self.sandbox_smtp_port is not None:
            env |= {"SANDBOX_SMTP_HOST": "127.0.0.1", "SANDBOX_SMTP_PORT": str(self.sandbox_smtp_port)}
        if self.sandbox_sms_provider_url is not None:
            env |= {
                "SANDBOX_SMS_PROVIDER_URL": self.sandbox_sms_provider_url,
                "SANDBOX_SMS_ACCOUNT_SID": self.sms_account_sid,
                "SANDBOX_SMS_AUTH_TOKEN": self.sms_auth_token,
            }
        env.update(self.extra_env.get("*", {}))
        env.update(self.extra_env.get(name, {}))
        return {**env, **tls}

    def key_store_env(self) -> dict[str, str]:
        """The key store's settings: its directory and port; the development master key and callers' tokens
        (those the issuer's and the portal's development settings hold), unless ``key_store_settings`` gives
        them all."""
        if self.key_store_settings is not None:
            return {
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": python_path(),
                **self.key_store_settings,
                "HTTP_PORT": str(self.ports[KEY_STORE]),
            }
        env = {**os.environ, "PYTHONPATH": python_path(), "HTTP_PORT": str(self.ports[KEY_STORE])}
        env["KEY_STORE_DIR"] = str(self.key_store_dir)
        env.update(self.extra_env.get("*", {}))
        env.update(self.extra_env.get(KEY_STORE, {}))
        return env

    def default_hospital_systems(self) -> list[dict]:
        from hospital_gateway.settings import DEV_SYSTEMS

        return [
            {**system, "mllp_port": self.ports[port]}
            for system, port in zip(DEV_SYSTEMS, ("gateway-hl7", "gateway-sandbox"), strict=True)
        ]

    def start(self, names: list[str] | None = None, timeout: float = 120) -> None:
        """Start the services and wait until each is ready: a process that exits fails at once; one that is
        not ready after ``timeout`` seconds (two busy cores start a stack in well under a minute) fails then."""
        names = names or list(SERVICES)
        if KEY_STORE not in names and KEY_STORE not in self.processes and set(names) & set(KEY_STORE_CALLERS):
            names = [KEY_STORE, *names]  # the issuer and the portal ask it for period keys
        for name in names:
            self.processes[name] = spawn(
                self.command(name), self.env_for(name), self.log_file(name), fork=name not in self.unforked
            )
        for name in names:
            self.wait_ready(name, timeout)

    def command(self, name: str, *args: str) -> list[str]:
        package = KEY_STORE_PACKAGE if name == KEY_STORE else SERVICES[name][0]
        return [sys.executable, "-m", package, *args]

    def verify(self) -> ssl.SSLContext:
        return tls_context(self.ca_file)

    def run(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a one-off command of a service (e.g. ``migrate``) with its settings, to completion."""
        return subprocess.run(
            self.command(name, *args), env=self.env_for(name), cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    def wait_ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(
                    f"{name} exited at start; see {self.log_file(name)}:\n" + self.log_file(name).read_text()[-3000:]
                )
            try:
                if http("GET", f"{self.url(name)}/readyz", timeout=1, verify=self.verify()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {timeout}s; see {self.log_file(name)}")

    def stop(self, names: list[str] | None = None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        names = names or list(self.processes)
        for name in names:
            proc = self.processes.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(sig)
        for name in names:
            proc = self.processes.pop(name, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def logs(self) -> str:
        names = [*SERVICES, KEY_STORE]
        return "\n".join(self.log_file(n).read_text(errors="replace") for n in names if self.log_file(n).exists())
