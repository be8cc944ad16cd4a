"""``make run``: the whole system on this machine, without Docker.

Starts the development inbox (a real SMTP server and a Twilio-compatible SMS provider, with a web
page showing both), the development OpenID provider, the services as separate processes and the
development hospital, which sends a sample appointment through the hospital gateway as FHIR (and sends it
again when the secretariat asks for a resend or corrects the e-mail address, as the hospital system must),
runs a development print room (letters on paper are printed and posted at its print runs, every minute),
and prints the link to open, how to sign in to the secretariat console and how to send the HL7 and FHIR
samples of docs/samples. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from devoidc import DevOidc

from devinbox import DevInbox
from devstack.hospital import SAMPLES, DevHospital, hospital_systems
from devstack.printroom import DevPrintRoom
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
    hospital = DevHospital(
        gateway_mllp_port=2575, gateway_url="http://127.0.0.1:8005", token_url=f"{oidc.issuer}/token"
    ).start()
    stack = Stack(
        database=args.database,
        exchange=args.exchange,
        smtp_port=inbox.smtp_port,
        sms_provider_url=inbox.twilio_base_url,
        sms_account_sid=inbox.account_sid,
        sms_auth_token=inbox.auth_token,
        log_dir=ROOT / ".run" / "logs",
        amqp_url=args.amqp_url,
        ports={
            "access-portal": 8000,
            "issuer": 8001,
            "mailer": 8002,
            "sms-gateway": 8003,
            "secretariat": 8004,
            "hospital-gateway": 8005,
            "key-store": 8006,
        },
        # The development period keys: outside the database, in .run/key-store (a week each, destroyed a day
        # after their week ends, as in production).
        key_store_dir=ROOT / ".run" / "key-store",
        portal_base_url="http://localhost:8000",
        oidc_issuer=str(oidc.issuer),
        # The development hospital (HL7 on 2575, FHIR as his-gateway) and the sandbox (2576, his-sandbox),
        # whose letters go to the same development inbox here.
        hospital_systems=hospital_systems(hospital, hl7_port=2575, sandbox_port=2576),
        sandbox_smtp_port=inbox.smtp_port,
        sandbox_sms_provider_url=inbox.twilio_base_url,
    )
    print_room = None
    try:
        stack.start()
        print_room = DevPrintRoom(args.amqp_url, args.exchange, every=PRINT_RUN_SECONDS).start()
        # The portal runs under the development defaults, so no patient data is real: the sample goes to
        # the development inbox only. The development hospital sends it as FHIR through the gateway.
        sent_at = datetime.now(timezone.utc).isoformat()[:23]
        answer = hospital.send_fhir(sample_appointment(args.email, args.mobile, args.language))
        if answer.status_code != 201:
            raise SystemExit(f"the gateway refused the sample ({answer.status_code}): {answer.text}")
        mail = inbox.inbox.wait_for_email(
            lambda m: args.email in m["rcpt_tos"] and m["received_at"] >= sent_at, timeout=30
        )
        link = next(u for u in mail["links"] if "/m/" in u)
        print(
            "\nConvocations is running.\n"
            f"  Open the patient's link:   {link}\n"
            f"  Mobile number on file:     {args.mobile}\n"
            f"  Development inbox (e-mail and SMS, the code arrives here): {inbox.base_url}/\n"
            f"  Secretariat console:       {stack.url('secretariat')}/  (sign in as 'Alice Martin', secretary of"
            " cardiology, on the development sign-in page; 'Marc Weber' manages cardiology and neurology, 'Sophie"
            " Rossi' is a supervisor)\n"
            f"  Secretariat API:           {stack.url('secretariat')}/api/openapi.json; token:"
            f" curl -u his-cardiology:dev-his-cardiology-secret -d grant_type=client_credentials {oidc.issuer}/token\n"
            "  Resend / correct the e-mail address in the console: the gateway asks the development hospital"
            " (a FHIR Task), which sends the appointment again; the new e-mail arrives in the development inbox.\n"
            f"  Send by post in the console: the development print room prints the letter at its next run (every"
            f" {PRINT_RUN_SECONDS:.0f} s) and posts it at the one after; the timeline shows both.\n"
            "  Hospital gateway (docs/integration.md): HL7 v2 over MLLP on 127.0.0.1:2575 (sandbox 2576), FHIR at"
            f" {stack.url('hospital-gateway')}/fhir\n"
            "    HL7:  .venv/bin/python -m devstack.hospital hl7 docs/samples/siu-s12.hl7   (add --port 2576: sandbox)\n"
            "    FHIR: .venv/bin/python -m devstack.hospital fhir docs/samples/appointment.json, or with curl:\n"
            f"          TOKEN=$(curl -s -u his-gateway:dev-his-gateway-secret -d grant_type=client_credentials"
            f" {oidc.issuer}/token | python3 -c 'import json,sys;print(json.load(sys.stdin)[\"access_token\"])')\n"
            f"          curl -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/fhir+json'"
            f" --data-binary @docs/samples/appointment.json {stack.url('hospital-gateway')}/fhir/Appointment\n"
            f"  Services: portal {stack.url('access-portal')}, issuer {stack.url('issuer')}, "
            f"mailer {stack.url('mailer')}, sms-gateway {stack.url('sms-gateway')},"
            f" secretariat {stack.url('secretariat')}, hospital-gateway {stack.url('hospital-gateway')},"
            f" key store {stack.url('key-store')} (/metrics, /readyz)\n"
            f"  Logs: {Path(stack.log_dir).relative_to(ROOT)}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        print("\nStopping…", file=sys.stderr)
        hospital.stop()
        if print_room is not None:
            print_room.stop()
        stack.stop()
        oidc.stop()
        inbox.stop()
    return 0


def sample_appointment(email: str, mobile: str, language: str) -> dict:
    """docs/samples/appointment.json for the given patient, two weeks from now, with its own identifier."""
    resource = json.loads((SAMPLES / "appointment.json").read_text(encoding="utf-8"))
    start = (datetime.now(timezone.utc) + timedelta(days=14)).replace(hour=8, minute=30, second=0, microsecond=0)
    resource["identifier"][0]["value"] = f"APT-{uuid.uuid4().hex[:8].upper()}"
    resource["start"], resource["end"] = start.isoformat(), (start + timedelta(minutes=30)).isoformat()
    patient = resource["contained"][0]
    patient["telecom"] = [{"system": "email", "value": email}, {"system": "phone", "use": "mobile", "value": mobile}]
    patient["communication"][0]["language"]["coding"][0]["code"] = language
    return resource


if __name__ == "__main__":
    raise SystemExit(main())
