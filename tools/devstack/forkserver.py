"""Service processes forked from one that has already imported their libraries: for the test suite.

Each start of a service imports FastAPI, FastStream, pydantic, asyncpg and the rest before it reads a
setting: about 0.8 CPU seconds, and a run of the suite starts about 150 service processes (every stack,
every restart with other keys or settings) on two cores shared by every tier. The fork server imports those
third-party libraries once (``PRELOAD``); each start is then a fork of it that runs
``python -m <package> ARGS`` as that command line would:

- its environment is the one given (replaced, not merged), its working directory the one given, and its
  ``sys.path`` that of ``python -m`` there: the directory, then the environment's ``PYTHONPATH``, then the
  interpreter's own;
- its standard output and error go to its log, its standard input is ``/dev/null``;
- ``runpy`` runs the package's ``__main__``. The services' own modules, and so their settings, are imported
  in the child after its environment is set. The server imports no project module. What the interpreter
  reads as it starts (``PYTHON*``, the locale, ``TZ``) and the few switches libraries read when imported
  stay the server's: no stack sets any of them but the OpenTelemetry API's (``READ_WHEN_IMPORTED``, read by
  the API FastAPI imports), and a command whose environment sets one of those otherwise than the server's
  runs as a process of its own (``forks``).
- A Ctrl-C reaches the tests' whole process group: the server ignores it (the caller stops it), the children
  take it as an interpreter does.

The child is the server's, not the caller's: ``Forked`` stands for it as ``subprocess.Popen`` does (``pid``,
``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``), waiting and signalling
through a pidfd (Linux 5.3) and asking the server for the exit status, which only a parent can read.

The tests start one server per process (``tests/conftest.py``); ``devstack.stack.spawn`` uses it when one
is running and ``subprocess.Popen`` otherwise (``make run``; the benchmark, which measures each service's
memory as a process of its own; a stack's ``unforked`` services, whose memory a test measures: a fork
holds the server's preloaded libraries too).

    python -m devstack.forkserver   # the server: requests on standard input, one JSON object a line
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

# The third-party libraries the services import before they read a setting, the costly ones (by
# ``python -X importtime``); none reads the environment when imported. A name missing here only costs time.
PRELOAD = (
    "fastapi",
    "fastapi.openapi.models",
    "fastapi.routing",
    "starlette.middleware.base",
    "pydantic",
    "pydantic_settings",
    "faststream",
    "faststream.rabbit",
    "aio_pika",
    "aiormq",
    "asyncpg",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "structlog",
    "jinja2",
    "httpx",
    "email_validator",
    "dns.resolver",
    "dkim",
    "phonenumbers",
    "icalendar",
    "babel",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.x509",
    "pypdf",  # the issuer's letters
    "aiosmtplib",  # the mailer's relay and bounces
    "aiosmtpd.smtp",
    "authlib.integrations.httpx_client",  # the secretariat's sign-in
    "joserfc.jwt",
    "joserfc.jwk",
    "hl7.mllp",  # the hospital gateway's HL7 v2 and FHIR
    "fhir.resources.R4B.appointment",
    "fhir.resources.R4B.bundle",
    "fhir.resources.R4B.capabilitystatement",
    "fhir.resources.R4B.communication",
    "fhir.resources.R4B.operationoutcome",
    "fhir.resources.R4B.task",
    "yaml",
)

# Settings read when a preloaded library is imported (the OpenTelemetry API's context and propagators).
READ_WHEN_IMPORTED = ("OTEL_PYTHON_CONTEXT", "OTEL_PROPAGATORS")


# -- the server ---------------------------------------------------------------------------------------


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer ``{"spawn": {...}}`` with ``{"pid": N}`` and ``{"reap": N}`` with ``{"returncode": C}`` (the
    exit code, or minus the signal that ended it, as ``Popen.returncode``), until ``requests`` ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the tests' process group: the caller stops it
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the preloaded objects stay out of the children's collections: their pages stay shared
    base_path = [p for p in sys.path if p not in _python_path(os.environ) and p not in ("", os.getcwd())]
    for line in requests:
        request = json.loads(line)
        if "spawn" in request:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["spawn"], base_path)  # never returns
            answer: dict[str, Any] = {"pid": pid}
        else:
            try:
                _, status = os.waitpid(request["reap"], 0)
                answer = {"returncode": os.waitstatus_to_exitcode(status)}
            except ChildProcessError as exc:  # not a child of the server's (any more): said, not fatal
                answer = {"error": repr(exc)}
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


def _python_path(env: dict[str, str] | os._Environ[str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(spawn: dict[str, Any], base_path: list[str]) -> None:
    """In the forked child: become ``python -m spawn["module"] *spawn["args"]`` and exit as it would."""
    code = 1
    try:
        log = os.open(spawn["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the server's requests
        os.dup2(log, 1)  # not the server's replies
        os.dup2(log, 2)
        os.closerange(3, 1024)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interpreter starts
        os.chdir(spawn["cwd"])
        os.environ.clear()
        os.environ.update(spawn["env"])
        sys.path[:] = [spawn["cwd"], *_python_path(spawn["env"]), *base_path]
        sys.argv = [spawn["module"], *spawn["args"]]  # runpy sets argv[0] to the module's file, as -m does
        runpy.run_module(spawn["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:  # as the interpreter does: SystemExit's message to stderr (the services' say what was refused,
            print(exit_.code, file=sys.stderr)  # an argument or a migration's drift, never a patient's data)
    except BaseException:  # noqa: BLE001 - the interpreter's last word, as python -m would print it
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# -- the caller's side ----------------------------------------------------------------------------------


class Forked:
    """A child of the fork server, used as a ``subprocess.Popen``."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]) -> None:
        self.pid, self.args = pid, args
        self.returncode: int | None = None
        self._server = server
        self._lock = threading.Lock()
        self._fd: int | None = os.pidfd_open(pid)  # a child that already ended is not reaped until asked

    def _ended(self, timeout: float | None) -> bool:
        assert self._fd is not None
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))

    def poll(self) -> int | None:
        if self.returncode is None and self._ended(0):
            self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ended(None if timeout is None else max(timeout, 0)):
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def _reap(self) -> None:
        with self._lock:  # two threads polling the same child: one reaps it
            if self._fd is None:
                return
            self.returncode = self._server.reap(self.pid)
            os.close(self._fd)
            self._fd = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self._fd is not None:
            with contextlib.suppress(ProcessLookupError):  # ended, not yet reaped: as Popen
                signal.pidfd_send_signal(self._fd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server as a child process of the caller: ``spawn`` a ``python -m`` command, ``stop`` at the end."""

    def __init__(self, log_file: Path, tools: Path) -> None:
        """``tools``: the directory that holds ``devstack`` (the server's own module)."""
        self._lock = threading.Lock()
        self._broken = ""  # why the server can no longer be asked, once it cannot
        self._environment = {**os.environ, "PYTHONPATH": str(tools)}
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devstack.forkserver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=tools,
                env=self._environment,
            )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            if self._broken:
                raise RuntimeError(f"the fork server is out of use: {self._broken}")
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline()
            except BaseException as exc:  # a reply left unread would answer the next request
                self._broken = repr(exc)
                raise
            if not answer:
                self._broken = f"it has ended (exit code {self.process.poll()})"
                raise RuntimeError(f"the fork server {self._broken}")
        result: dict[str, Any] = json.loads(answer)
        if "error" in result:
            raise RuntimeError(f"the fork server: {result['error']}")
        return result

    def forks(self, command: list[str], env: dict[str, str]) -> bool:
        """Whether the server runs ``command`` with ``env`` as that command line would: ``python -m package
        ...`` with this interpreter, and none of ``READ_WHEN_IMPORTED`` set otherwise than the server's."""
        same = all(env.get(name) == self._environment.get(name) for name in READ_WHEN_IMPORTED)
        return same and len(command) >= 3 and command[0] == sys.executable and command[1] == "-m"

    def spawn(self, command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Forked:
        assert self.forks(command, env), command
        request = {"module": command[2], "args": command[3:], "env": env, "cwd": str(cwd), "log": str(log)}
        return Forked(self, self._ask({"spawn": request})["pid"], command)

    def reap(self, pid: int) -> int:
        returncode: int = self._ask({"reap": pid})["returncode"]
        return returncode

    def stop(self) -> None:
        """End the server (its children are the callers' to stop first)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
