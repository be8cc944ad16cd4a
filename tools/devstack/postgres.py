"""A PostgreSQL cluster of our own, for the test suite: Debian's server binaries (``initdb``, ``pg_ctl``) on a
free port, data in a temporary directory, scram passwords only, stopped and removed at the end.

The machine's server is shared: its 100 connections are taken by whoever runs tests at the time, and
a suite whose tiers run side by side (devstack.suite) starts several stacks of services at once. A
cluster per test run has connections for its own stacks only and touches nothing of the machine's.
The production-like tier starts one with TLS (``tls=``), laid out as deploy/k8s/infra's cluster.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from devstack.stack import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _as_postgres(command: list[str], env: dict[str, str] | None = None) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root. ``env`` goes through to the server.
    settings = [f"{key}={value}" for key, value in (env or {}).items()]
    command = ["env", *settings, *command] if settings else command
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """``initdb`` + ``pg_ctl start`` as a child cluster: ``with PrivatePostgres() as pg: pg.dsn(...)``.

    ``tls``: (certificate file, key file) to accept only TLS connections (``hostssl``); else plain TCP on
    the loopback address. Either way only scram passwords are accepted: no trust, no peer. ``settings``:
    more server settings (written to its postgresql.conf, e.g. an ``archive_command``), ``env``: the
    server's environment. A ``directory`` that already holds a data directory (``pgdata``, e.g. restored
    from a backup) is started as it is."""

    def __init__(
        self,
        *,
        max_connections: int = 300,
        tls: tuple[Path, Path] | None = None,
        directory: Path | None = None,
        settings: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.bin = _bin_dir()
        self.port, self.max_connections, self.tls = free_port(), max_connections, tls
        self.settings, self.env = settings or {}, env or {}
        self.dir = directory or Path(tempfile.mkdtemp(prefix="convocations-postgres-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "pgdata"
        self.superuser_password = secrets.token_hex(16)
        self.started = False

    @staticmethod
    def available() -> bool:
        return _bin_dir() is not None

    def dsn(self, user: str, password: str, database: str = "postgres") -> str:
        tls = "?sslmode=require" if self.tls else ""
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}{tls}"

    def admin_dsn(self, database: str = "postgres") -> str:
        return self.dsn("postgres", self.superuser_password, database)

    def libpq_env(self) -> dict[str, str]:
        """psql and the other client tools as the superuser of this cluster."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGPASSWORD": self.superuser_password,
        }

    def start(self) -> PrivatePostgres:
        if self.started:
            return self
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (Debian package postgresql) on this machine")
        self.dir.chmod(0o755)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        if self.settings:
            with open(self.data / "postgresql.conf", "a") as conf:  # later lines win over earlier ones
                conf.writelines(
                    f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in self.settings.items()
                )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections} -c password_encryption=scram-sha-256"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        if self.tls:
            cert, key = self.tls
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        log = str(self.dir / "pg.log")
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "300", "start"]
        started = subprocess.run(_as_postgres(command, self.env), capture_output=True, timeout=360)
        if started.returncode != 0:
            server_log = (
                (self.dir / "pg.log").read_text(errors="replace")[-2000:] if (self.dir / "pg.log").exists() else ""
            )
            raise RuntimeError(f"the test PostgreSQL on port {self.port} did not start:\n{server_log}")
        self.started = True
        return self

    def _initdb(self) -> None:
        assert self.bin is not None
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.superuser_password)
        owned = [self.dir, pwfile, *(self.tls or ())]
        if os.geteuid() == 0:  # the server runs as postgres: its files are postgres's
            for path in owned:
                shutil.chown(path, "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256"]
        _run(_as_postgres([*initdb, f"--pwfile={pwfile}", "--no-sync"]))
        pwfile.unlink()
        kind = "hostssl" if self.tls else "host"
        (self.data / "pg_hba.conf").write_text(f"{kind} all all 127.0.0.1/32 scram-sha-256\n")

    def stop(self) -> None:
        """Stop this cluster (only the server started here) and remove its data."""
        if self.started and self.bin is not None:
            subprocess.run(
                _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
