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


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """``initdb`` + ``pg_ctl start`` as a child cluster: ``with PrivatePostgres() as pg: pg.dsn(...)``.

    ``tls``: (certificate file, key file) to accept only TLS connections (``hostssl``); else plain TCP on
    the loopback address. Either way only scram passwords are accepted: no trust, no peer."""

    def __init__(
        self, *, max_connections: int = 300, tls: tuple[Path, Path] | None = None, directory: Path | None = None
    ) -> None:
        self.bin = _bin_dir()
        self.port, self.max_connections, self.tls = free_port(), max_connections, tls
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
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections} -c password_encryption=scram-sha-256"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        if self.tls:
            cert, key = self.tls
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        log = str(self.dir / "pg.log")
        _run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"]))
        self.started = True
        return self

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
