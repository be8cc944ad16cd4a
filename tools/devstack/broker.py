"""A RabbitMQ node of our own, for the test suite and the benchmark.

The machine's broker is shared: other projects' vhosts and queues use its file descriptors, and a
RabbitMQ 3.10 that runs out of them stops answering new connections without any alarm (seen here:
a few hundred quorum queues left by other runs took it past its 927 handles). The suite therefore
starts its own node, on free ports, with its data in a temporary directory, and stops and removes it
at the end. Nothing of the machine's broker is touched.

The node runs RabbitMQ's own scripts (``/usr/lib/rabbitmq/bin``) as the current user rather than
Debian's wrappers, which switch to the rabbitmq user through ``su`` and so to PAM's limit of 1 024
open files; the node gets this process's limit instead. ``rabbitmqctl`` and the other tools reach it
through shims on ``PATH`` (``env()``), which share the node's Erlang cookie in its home.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.stack import free_port

SCRIPTS = Path("/usr/lib/rabbitmq/bin")  # where Debian's package keeps RabbitMQ's own scripts
TOOLS = ("rabbitmqctl", "rabbitmq-diagnostics", "rabbitmq-plugins", "rabbitmq-queues")


class PrivateBroker:
    """``rabbitmq-server`` as a child process: ``with PrivateBroker() as b: b.amqp_url("vhost")``.

    ``tls=(ca, certificate, key)`` (PEM files): AMQP over TLS only, on ``port`` (no plain listener), as a
    RabbitmqCluster with ``disableNonTLSListeners``; ``amqp_url`` is then ``amqps://`` with ``cafile``."""

    def __init__(
        self, name: str = "convocations-test", tls: tuple[str, str, str] | None = None, vhost: str = "/"
    ) -> None:
        """``vhost``: the node's default virtual host, made at its first boot with every permission for the
        guest user (no ``rabbitmqctl add_vhost``, each call of which boots an Erlang VM)."""
        self.vhost = vhost
        self.port, self.dist_port, self.prometheus_port = free_port(), free_port(), free_port()
        self.node = f"{name}-{self.port}@localhost"
        self.home = Path(tempfile.mkdtemp(prefix="convocations-rabbitmq-"))
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._tools()  # before the start: callers may resolve ``rabbitmqctl`` on PATH right away

    @staticmethod
    def available() -> bool:
        return (SCRIPTS / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None

    def env(self) -> dict[str, str]:
        """The environment under which ``rabbitmqctl`` (and the server) address this node."""
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.home / "rabbitmq-env.conf"),
            "PATH": f"{self.home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _tools(self) -> None:
        """Shims for the command-line tools: RabbitMQ's own script, this node's home (its cookie)."""
        (self.home / "bin").mkdir()
        for tool in TOOLS:
            real = SCRIPTS / tool if (SCRIPTS / tool).exists() else Path(shutil.which(tool) or tool)
            shim = self.home / "bin" / tool
            shim.write_text(f'#!/bin/sh\nHOME="{self.home}" exec "{real}" "$@"\n')
            shim.chmod(0o755)

    def amqp_url(self, vhost: str = "") -> str:
        if self.tls:
            return f"amqps://guest:guest@127.0.0.1:{self.port}/{vhost}?cafile={self.tls[0]}"
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _listeners(self) -> str:
        if not self.tls:
            return f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        ca, certificate, key = self.tls
        return (
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {ca}\nssl_options.certfile = {certificate}\nssl_options.keyfile = {key}\n"
            "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
        )

    def start(self) -> PrivateBroker:
        if self.running:
            return self
        (self.home / "rabbitmq-env.conf").write_text("")  # not the machine's /etc/rabbitmq/rabbitmq-env.conf
        (self.home / "rabbitmq.conf").write_text(
            self._listeners() + f"default_vhost = {self.vhost}\n"
            f"prometheus.tcp.port = {self.prometheus_port}\n"
            "prometheus.tcp.ip = 127.0.0.1\n"
            "management_agent.disable_metrics_collector = false\n"
        )
        (self.home / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
        env = {
            **self.env(),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.home / "pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(self.home / "erl_crash.dump"),
        }
        if not self.tls:  # the plain listener's port (with TLS, the configuration's ssl listener alone)
            env["RABBITMQ_NODE_PORT"] = str(self.port)
        log = (self.home / "server.out").open("wb")
        server = SCRIPTS / "rabbitmq-server" if (SCRIPTS / "rabbitmq-server").exists() else "rabbitmq-server"
        self.process = subprocess.Popen(
            [str(server)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while True:
            if self._ctl("await_startup", "--timeout", "10", timeout=30) == 0:
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.home / "server.out").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"the test broker {self.node} did not start:\n{output}")
            time.sleep(1)

    def stop(self) -> None:
        """Stop this node (only the process started here, and its process group) and remove its data. The node
        is thrown away with its data, which a clean stop would only have written out: its process group is
        killed (a clean stop on SIGTERM took 6 s, at the end of every test process)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        shutil.rmtree(self.home, ignore_errors=True)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl ARGS`` against this node; raises if it fails."""
        return subprocess.run(
            [str(self.home / "bin" / "rabbitmqctl"), *args],
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _ctl(self, *args: str, timeout: float) -> int | None:
        """``rabbitmqctl -q ARGS`` against this node; None if it did not return in time (it is killed,
        with the Erlang VM it started)."""
        ctl = subprocess.Popen(
            [str(self.home / "bin" / "rabbitmqctl"), "-q", *args],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return ctl.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(ctl.pid, signal.SIGKILL)
            ctl.wait()
            return None

    def __enter__(self) -> PrivateBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
