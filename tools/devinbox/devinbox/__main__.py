"""CLI: ``python -m devinbox --smtp-port 1025 --http-port 8025`` runs both servers until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from .server import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_GENERIC_TOKEN,
    DevInbox,
)


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m devinbox", description=__doc__)
    p.add_argument("--smtp-host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, default=1025, help="0 picks a free port")
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8025, help="0 picks a free port")
    p.add_argument("--public-url", help="URL clients use to reach the HTTP server (default: from host/port)")
    p.add_argument("--account-sid", default=env("DEVINBOX_ACCOUNT_SID", DEFAULT_ACCOUNT_SID))
    p.add_argument("--auth-token", default=env("DEVINBOX_AUTH_TOKEN", DEFAULT_AUTH_TOKEN))
    p.add_argument("--generic-token", default=env("DEVINBOX_GENERIC_TOKEN", DEFAULT_GENERIC_TOKEN))
    args = p.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with DevInbox(
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        http_host=args.http_host,
        http_port=args.http_port,
        public_url=args.public_url,
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        generic_token=args.generic_token,
    ) as box:
        print(
            f"devinbox: page {box.base_url}/ | SMTP {args.smtp_host}:{box.smtp_port} | "
            f"Twilio base URL {box.twilio_base_url} account_sid={box.account_sid} auth_token={box.auth_token} | "
            f"generic {box.generic_messages_url} token={box.generic_token}",
            flush=True,
        )
        while not stop.wait(0.5):  # a timed wait so the signal handler's flag is seen promptly
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
