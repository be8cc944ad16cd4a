"""Issue #7 item 2: every HTTP endpoint of every service caps request bodies by the bytes it actually
reads. The reviewer's probe: a 200 MB chunked, unsigned POST to the gateway's webhook was read whole
(497 MB resident, pod limit 256 Mi) before the 403."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
CHUNK = b"x" * (64 * 1024)
TOTAL = 50 * 1024 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def chunked_post(port: int, path: str, total: int = TOTAL) -> tuple[int, int]:
    """POST ``total`` bytes chunked, as fast as the server takes them; (status, bytes the server took)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent += len(CHUNK)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: what we want
        reply = b""
        try:
            while b"\r\n" not in reply and (data := sock.recv(4096)):
                reply += data
        except ConnectionResetError:
            pass
    assert reply.startswith(b"HTTP/1.1 "), f"no HTTP answer after sending {sent} bytes: {reply[:100]!r}"
    return int(reply.split()[1]), sent


class PeakRss:
    """Samples a process's resident memory every 5 ms while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self) -> PeakRss:
        # Start from a quiet process: work left by an earlier test (a relay batch) is not this request's.
        self.before, steady = rss_kb(self.pid), 0
        for _ in range(60):
            time.sleep(0.25)
            previous, self.before = self.before, rss_kb(self.pid)
            steady = steady + 1 if abs(previous - self.before) < 512 else 0
            if steady == 4:  # one second without change
                break
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1024


ENDPOINTS = [
    ("sms-gateway", "/webhooks/generic/status"),  # the reviewer's probe
    ("sms-gateway", "/webhooks/twilio/status"),
    ("access-portal", f"/m/{uuid.uuid4()}/code"),
    ("access-portal", "/metrics"),
    ("issuer", "/healthz"),
    ("mailer", "/readyz"),
    ("secretariat", "/api/v1/convocations/search"),  # before the bearer token is even looked at
]


@pytest.mark.parametrize("service,path", ENDPOINTS)
def test_a_50_mb_chunked_unsigned_post_gets_413_and_costs_no_memory(chain, service, path):
    stack = chain.stack
    pid = stack.processes[service].pid
    with PeakRss(pid) as memory:
        status, sent = chunked_post(stack.ports[service], path)
    assert status == 413
    assert memory.growth_mb < 5, f"{service} grew by {memory.growth_mb:.1f} MB for a refused body"
    assert stack.processes[service].poll() is None  # and it still serves
    with socket.create_connection(("127.0.0.1", stack.ports[service]), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_a_lying_or_oversized_content_length_is_refused_before_reading(chain):
    port = chain.stack.ports["sms-gateway"]
    for length in (b"999999999", b"65537", b"-1"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /webhooks/generic/status HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n"
            )
            assert sock.recv(100).split()[1] in (b"413", b"400")  # -1: the HTTP parser refuses it first
