"""The tests' HTTP helper (devstack.stack.http): the same request as httpx's, without the CA bundle parsed
anew for each one (about 20 ms of CPU each: the readiness polls alone paid it thousands of times a run)."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devstack import stack


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        body = f"{self.path} {self.headers.get('cookie')}".encode()
        self.send_response(200)
        self.send_header("Set-Cookie", "session=1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_requests_share_one_tls_context_and_nothing_else(monkeypatch):
    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counted(*args, **kwargs):
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    stack.tls_context.cache_clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        answers = [stack.http("GET", f"{url}/readyz?n={n}", timeout=2) for n in range(5)]
    finally:
        server.shutdown()
        stack.tls_context.cache_clear()
    assert [a.text for a in answers] == [f"/readyz?n={n} None" for n in range(5)]  # no cookie carried over
    assert len(made) == 1
    assert stack.tls_context() is stack.tls_context()
