"""``DevInbox``: the SMTP server and the HTTP server in background threads, sharing one Inbox."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from .app import create_app
from .inbox import Inbox
from .smtp import InboxController

# Fixed development credentials, so services can hard-code them in their dev settings.
DEFAULT_ACCOUNT_SID = "AC" + "de" * 16
DEFAULT_AUTH_TOKEN = "devinbox-auth-token"
DEFAULT_GENERIC_TOKEN = "devinbox-generic-token"


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # a wildcard bind is reachable on loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class DevInbox:
    """Start with ``start()`` or ``with DevInbox() as box:``; port 0 picks free ports.

    After start: ``smtp_port``, ``http_port``, ``base_url`` (web page and JSON API) and
    ``twilio_base_url`` (use it in place of https://api.twilio.com).
    """

    def __init__(
        self,
        *,
        smtp_host: str = "127.0.0.1",
        smtp_port: int = 0,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        generic_token: str = DEFAULT_GENERIC_TOKEN,
        public_url: str | None = None,
        callback_delay: float = 0.2,
        inbox: Inbox | None = None,
    ) -> None:
        self.inbox = inbox or Inbox()
        self.smtp_host, self.smtp_port, self.http_host, self.http_port = smtp_host, smtp_port, http_host, http_port
        self.account_sid, self.auth_token, self.generic_token = account_sid, auth_token, generic_token
        self.callback_delay = callback_delay
        self._public_url = public_url
        self.base_url = ""
        self._smtp: InboxController | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._requested = (smtp_port, http_port)  # so a restart with port 0 picks fresh ports

    @property
    def twilio_base_url(self) -> str:
        return self.base_url

    @property
    def twilio_messages_url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    @property
    def generic_messages_url(self) -> str:
        return f"{self.base_url}/generic/v1/messages"

    def start(self) -> DevInbox:
        if self._thread is not None:
            raise RuntimeError("DevInbox already started")
        self.smtp_port, self.http_port = self._requested
        # A fresh controller each time: aiosmtpd closes its event loop on stop().
        self._smtp = InboxController(self.inbox, self.smtp_host, self.smtp_port)
        self._smtp.start()
        self.smtp_port = self._smtp.port
        try:
            self._start_http()
        except BaseException:
            self._smtp.stop()
            self._smtp = None
            raise
        return self

    def _start_http(self) -> None:
        # Bind here rather than in uvicorn: the real port (and so the public URL) is known before the app.
        family = socket.AF_INET6 if ":" in self.http_host else socket.AF_INET
        sock = socket.create_server((self.http_host, self.http_port), family=family)
        self.http_port = sock.getsockname()[1]
        self.base_url = (self._public_url or f"http://{_url_host(self.http_host)}:{self.http_port}").rstrip("/")
        app = create_app(
            self.inbox,
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            generic_token=self.generic_token,
            public_url=self.base_url,
            smtp_port=self.smtp_port,
            callback_delay=self.callback_delay,
        )
        # log_config=None: leave the host process's logging alone. The graceful timeout bounds stop()
        # when a scripted hanging request is still in flight.
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="devinbox-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 5
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread, self._server = None, None
                sock.close()
                raise RuntimeError(f"devinbox HTTP server did not start on {self.http_host}:{self.http_port}")
            time.sleep(0.005)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(5)
        if self._smtp is not None:
            self._smtp.stop()
        self._server, self._thread, self._smtp = None, None, None

    def __enter__(self) -> DevInbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
