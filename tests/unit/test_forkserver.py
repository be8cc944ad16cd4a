"""The fork server (devstack.forkserver): a forked ``python -m`` behaves as the command line would, and its
stand-in answers as ``subprocess.Popen`` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.forkserver import PRELOAD, ForkServer
from devstack.stack import ROOT

PROBE = """
import json, os, sys, time
mode = sys.argv[1]
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[:2], "env": dict(os.environ),
                  "main": __name__, "stdin": sys.stdin.read()}), flush=True)
if mode == "exit":
    sys.exit(3)
if mode == "raise":
    raise ValueError("the probe fails")
if mode == "sleep":
    time.sleep(60)
"""


@pytest.fixture
def server(tmp_path):
    s = ForkServer(tmp_path / "server.log", ROOT / "tools")
    yield s
    s.stop()


@pytest.fixture
def probe(tmp_path) -> Path:
    package = tmp_path / "code" / "probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(PROBE)
    return tmp_path / "code"


def start(server, probe, tmp_path, mode: str, **env: str):
    log = tmp_path / f"{mode}.log"
    child_env = {"PYTHONPATH": str(probe), "PATH": os.environ.get("PATH", ""), **env}
    return server.spawn([sys.executable, "-m", "probe", mode], child_env, tmp_path, log), log


def said(log: Path) -> dict:
    return json.loads(log.read_text().splitlines()[0])


def test_a_forked_command_runs_as_python_dash_m_with_only_its_environment(server, probe, tmp_path, monkeypatch):
    monkeypatch.setenv("ONLY_IN_THE_CALLER", "1")
    process, log = start(server, probe, tmp_path, "exit", SETTING="its own")
    assert process.wait(30) == 3 and process.returncode == 3 and process.poll() == 3
    seen = said(log)
    assert seen["argv"] == [str(probe / "probe" / "__main__.py"), "exit"]
    assert seen["main"] == "__main__" and seen["cwd"] == str(tmp_path)
    assert seen["path0"] == [str(tmp_path), str(probe)]  # the directory, then PYTHONPATH, as python -m
    assert seen["env"]["SETTING"] == "its own" and "ONLY_IN_THE_CALLER" not in seen["env"]
    assert seen["stdin"] == ""  # not the server's requests


def test_an_uncaught_exception_exits_1_with_its_traceback_in_the_log(server, probe, tmp_path):
    process, log = start(server, probe, tmp_path, "raise")
    assert process.wait(30) == 1
    assert "ValueError: the probe fails" in log.read_text()


def test_a_running_child_is_polled_signalled_and_waited_for_as_a_popen(server, probe, tmp_path):
    process, log = start(server, probe, tmp_path, "sleep")
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == -signal.SIGTERM
    process.kill()  # an ended child: nothing happens, as with Popen


def preloaded() -> set[str]:
    """Every module a fresh interpreter holds once it has imported ``PRELOAD``."""
    code = (
        "import importlib, sys\n"
        "from devstack.forkserver import PRELOAD\n"
        "for name in PRELOAD: importlib.import_module(name)\n"
        "print(' '.join(sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tools")}
    return set(
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    )


def test_the_server_preloads_no_project_module_and_of_what_reads_settings_when_imported_only_the_tracing_api():
    modules = preloaded()
    packages = {m.split(".")[0] for m in modules}
    assert {name.split(".")[0] for name in PRELOAD} <= packages
    project = {
        "shared",
        "issuer",
        "mailer",
        "sms_gateway",
        "access_portal",
        "secretariat",
        "hospital_gateway",
        "key_store",
    }
    assert not packages & project
    assert "prometheus_client" not in packages  # reads PROMETHEUS_MULTIPROC_DIR when imported
    # FastAPI imports the OpenTelemetry API (READ_WHEN_IMPORTED), never its SDK, which the services configure.
    assert not [m for m in modules if m.startswith("opentelemetry.sdk")]


def test_a_command_that_sets_what_the_libraries_read_when_imported_runs_as_a_process_of_its_own(server, tmp_path):
    command = [sys.executable, "-m", "probe", "exit"]
    assert server.forks(command, {"PATH": "/usr/bin"})
    assert not server.forks(command, {"OTEL_PROPAGATORS": "b3"})
    assert not server.forks([sys.executable, "-c", "pass"], {})


def test_a_request_the_server_cannot_answer_is_refused_and_it_serves_on(server, probe, tmp_path):
    with pytest.raises(RuntimeError, match="ChildProcessError"):
        server.reap(os.getpid())  # not its child
    server.process.send_signal(signal.SIGINT)  # a Ctrl-C for the whole process group: the caller stops it
    process, _ = start(server, probe, tmp_path, "exit")
    assert process.wait(30) == 3
