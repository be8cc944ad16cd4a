"""``make run``: the whole system on this machine, without Docker.

Starts the development inbox (a real SMTP server and a Twilio-compatible SMS provider, with a web
page showing both), the development OpenID provider, the services as separate processes, publishes a
sample convocation the way an upstream system would (and publishes it again when the secretariat asks
for a resend or corrects the e-mail address, as the hospital system must), runs a development print room
(letters on paper are printed and posted at its print runs, every minute), and prints the link to open
and how to sign in to the secretariat console. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from devoidc import DevOidc

from devinbox import DevInbox
from devstack.hospital import DevHospital
from devstack.printroom import DevPrintRoom
from devstack.sample import convocation_event, publish
from devstack.stack import ROOT, Stack

PRINT_RUN_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--database", default="convocations")
    parser.add_argument("--exchange", default="convocations")
    parser.add_argument("--email", default="marie.dupont@example.ch")
    parser.add_argument("--mobile", default="+41 79 123 45 67")
    parser.add_argument("--language", default="fr", choices=["fr", "de", "it", "en"])
    args = parser.parse_args()

    inbox = DevInbox(smtp_port=1025, http_port=8025).start()
    oidc = DevOidc(port=8030, key_file=ROOT / ".run" / "devoidc-key.pem").start()
    stack = Stack(
        database=args.database, exchange=args.exchange, smtp_port=inbox.smtp_port,
        sms_provider_url=inbox.twilio_base_url, sms_account_sid=inbox.account_sid,
        sms_auth_token=inbox.auth_token, log_dir=ROOT / ".run" / "logs", amqp_url=args.amqp_url,
        ports={"access-portal": 8000, "issuer": 8001, "mailer": 8002, "sms-gateway": 8003, "secretariat": 8004},
        portal_base_url="http://localhost:8000", oidc_issuer=str(oidc.issuer),  # set once it runs
    )
    hospital = print_room = None
    try:
        stack.start()
        hospital = DevHospital(args.amqp_url, args.exchange).start()
        print_room = DevPrintRoom(args.amqp_url, args.exchange, every=PRINT_RUN_SECONDS).start()
        # The portal runs under the development defaults, so no patient data is real: the
        # sample goes to the development inbox only.
        event = convocation_event(email=args.email, mobile=args.mobile, language=args.language, pdf=None)
        hospital.remember(event)
        asyncio.run(publish(args.amqp_url, args.exchange, event))
        mail = inbox.inbox.wait_for_email(lambda m: args.email in m["rcpt_tos"]
                                          and m["received_at"] >= event["occurred_at"][:23], timeout=30)
        link = next(u for u in mail["links"] if "/m/" in u)
        print(
            "\nConvocations is running.\n"
            f"  Open the patient's link:   {link}\n"
            f"  Mobile number on file:     {args.mobile}\n"
            f"  Development inbox (e-mail and SMS, the code arrives here): {inbox.base_url}/\n"
            f"  Secretariat console:       {stack.url('secretariat')}/  (sign in as 'Alice Martin', secretary of"
            " cardiology, on the development sign-in page; 'Sophie Rossi' is a supervisor)\n"
            f"  Secretariat API:           {stack.url('secretariat')}/api/openapi.json; token:"
            f" curl -u his-cardiology:dev-his-cardiology-secret -d grant_type=client_credentials {oidc.issuer}/token\n"
            "  Resend / correct the e-mail address in the console: the development hospital publishes the sample"
            " again (same convocation id) and the new e-mail arrives in the development inbox.\n"
            f"  Send by post in the console: the development print room prints the letter at its next run (every"
            f" {PRINT_RUN_SECONDS:.0f} s) and posts it at the one after; the timeline shows both.\n"
            f"  Services: portal {stack.url('access-portal')}, issuer {stack.url('issuer')}, "
            f"mailer {stack.url('mailer')}, sms-gateway {stack.url('sms-gateway')},"
            f" secretariat {stack.url('secretariat')} (/metrics, /readyz)\n"
            f"  Logs: {Path(stack.log_dir).relative_to(ROOT)}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        print("\nStopping…", file=sys.stderr)
        if hospital is not None:
            hospital.stop()
        if print_room is not None:
            print_room.stop()
        stack.stop()
        oidc.stop()
        inbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
