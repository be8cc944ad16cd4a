"""Ports for the test servers: a port one process of the machine chose is never chosen by another while the
first lives (``make test``'s steps choose theirs side by side), and is free again once it has ended."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from devstack import stack

ROOT = stack.ROOT


@pytest.fixture
def three_ports(tmp_path, monkeypatch):
    """A range of three ports nobody else uses, and a lock directory of the test's own."""
    monkeypatch.setattr(stack, "PORT_LOCKS", tmp_path / "locks")
    monkeypatch.setattr(stack, "_given", set())
    base = 19000 + (hash(str(tmp_path)) % 300) * 3  # below the tools' range: no server of a run is there
    ports = range(base, base + 3)
    monkeypatch.setattr(stack, "SERVER_PORTS", ports)
    return ports, tmp_path


def holder(ports: range, tmp_path) -> subprocess.Popen:
    """Another process that takes every port of ``ports`` and holds them until its standard input closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from devstack import stack
        stack.PORT_LOCKS = Path({str(tmp_path / "locks")!r})
        stack.SERVER_PORTS = range({ports.start}, {ports.stop})
        print(sorted(stack.free_port() for _ in range(3)), flush=True)
        sys.stdin.read()
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tools'}", "PATH": "/usr/bin:/bin"},
    )


def test_a_port_another_process_chose_is_not_chosen_until_that_process_ends(three_ports):
    ports, tmp_path = three_ports
    other = holder(ports, tmp_path)
    assert other.stdout.readline().strip() == str(list(ports))  # it took all three
    with pytest.raises(RuntimeError, match="no free port"):
        stack.free_port()  # none is bound yet, but each is another's
    other.stdin.close()
    other.wait(10)
    assert stack.free_port() in ports  # free again once it has ended
