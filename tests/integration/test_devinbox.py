"""End-to-end tests of devinbox: real SMTP and HTTP servers, real clients (aiosmtplib, httpx),
and a real HTTP server standing in for the service that receives SMS status callbacks."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import aiosmtplib
import httpx
import pytest

from devinbox import DevInbox, SmsFault, generic_signature, valid_twilio_signature

TO = "+41791234567"
LINK = "https://portal.example.ch/c/9f8e7d6c5b4a?lang=de"


@pytest.fixture
def box() -> Iterator[DevInbox]:
    with DevInbox(callback_delay=0.05) as dev:
        yield dev


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as client:
        yield client


class Receiver(ThreadingHTTPServer):
    """Records every POST as (path, headers, body) and answers 204, like a service's callback route."""

    calls: queue.Queue[tuple[str, Message, bytes]]
    url: str

    def next_call(self, timeout: float = 5) -> tuple[str, Message, bytes]:
        return self.calls.get(timeout=timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server.calls.put((self.path, self.headers, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = Receiver(("127.0.0.1", 0), Handler)
    server.calls, server.url = queue.Queue(), f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def letter(*to: str, subject: str = "Ihr Aufgebot <Radiologie>") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "noreply@spital.example.ch", ", ".join(to), subject
    msg.set_content(f"Grüezi,\nIhr Aufgebot: {LINK}\nDer Code kommt per SMS.\n")
    msg.add_alternative(
        f'<p>Grüezi,</p><p><a href="{LINK}">Aufgebot öffnen</a></p><script>alert("x")</script>', subtype="html"
    )
    return msg


async def send(box: DevInbox, msg: EmailMessage) -> tuple[dict, str]:
    return await aiosmtplib.send(msg, hostname="127.0.0.1", port=box.smtp_port, start_tls=False, timeout=5)


# ------------------------------------------------------------------------------------------ SMTP
@pytest.mark.asyncio
async def test_multipart_email_is_caught_with_its_link_and_shown(box: DevInbox, http: httpx.Client) -> None:
    await send(box, letter("patient@example.ch"))
    mail = await box.inbox.await_email(to="patient@example.ch", timeout=5)
    assert mail["mail_from"] == "noreply@spital.example.ch"
    assert mail["subject"] == "Ihr Aufgebot <Radiologie>"
    assert "Der Code kommt per SMS." in mail["text"] and "Aufgebot öffnen" in mail["html"]
    assert mail["links"] == [LINK]
    assert b"multipart/alternative" in mail["raw"]

    [api_mail] = http.get(f"{box.base_url}/api/emails").json()
    assert api_mail["id"] == mail["id"] and "raw" not in api_mail and api_mail["links"] == [LINK]

    page = http.get(f"{box.base_url}/")
    assert page.status_code == 200 and '<meta http-equiv="refresh" content="3">' in page.text
    assert "Ihr Aufgebot &lt;Radiologie&gt;" in page.text and f'href="{LINK.replace("&", "&amp;")}"' in page.text
    detail = http.get(f"{box.base_url}/emails/{mail['id']}").text
    # The HTML body is only ever inside a sandboxed srcdoc, escaped: its <script> cannot run in the page.
    assert "<iframe sandbox srcdoc=" in detail and "&lt;script&gt;" in detail and "<script>" not in detail
    assert http.get(f"{box.base_url}/emails/nope").status_code == 404


@pytest.mark.asyncio
async def test_scripted_451_then_250(box: DevInbox) -> None:
    box.inbox.smtp_script(["451 4.3.0 Try again later"])
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(box, letter("patient@example.ch"))
    assert refused.value.recipients[0].code == 451
    assert box.inbox.emails() == []
    errors, _ = await send(box, letter("patient@example.ch"))  # the retry gets the normal 250
    assert errors == {}
    assert (await box.inbox.await_email(timeout=5))["rcpt_tos"] == ["patient@example.ch"]


@pytest.mark.asyncio
async def test_permanent_550_refuses_only_the_scripted_recipient(box: DevInbox) -> None:
    box.inbox.smtp_script(["550 5.1.1 No such user"])
    errors, _ = await send(box, letter("gone@example.ch", "patient@example.ch"))
    assert errors["gone@example.ch"].code == 550
    assert (await box.inbox.await_email(timeout=5))["rcpt_tos"] == ["patient@example.ch"]


@pytest.mark.asyncio
async def test_scripted_data_reply_rejects_the_message(box: DevInbox) -> None:
    box.inbox.smtp_script(["554 5.6.0 Message rejected"], at="DATA")
    with pytest.raises(aiosmtplib.SMTPDataError) as rejected:
        await send(box, letter("patient@example.ch"))
    assert rejected.value.code == 554 and box.inbox.emails() == []


# ------------------------------------------------------------------------------------------ Twilio
def twilio_post(box: DevInbox, http: httpx.Client, password: str | None = None, **form: str) -> httpx.Response:
    data = {"To": TO, "From": "SPITAL", "Body": "Ihr Code: 482913", **form}
    return http.post(box.twilio_messages_url, data=data, auth=(box.account_sid, password or box.auth_token))


def test_twilio_send_returns_resource_and_signed_status_callbacks(
    box: DevInbox, http: httpx.Client, receiver: Receiver
) -> None:
    callback_url = f"{receiver.url}/sms/status?provider=twilio"
    r = twilio_post(box, http, StatusCallback=callback_url)
    assert r.status_code == 201, r.text
    res = r.json()
    assert re.fullmatch(r"SM[0-9a-f]{32}", res["sid"])
    assert (res["account_sid"], res["to"], res["from"], res["body"]) == (
        box.account_sid,
        TO,
        "SPITAL",
        "Ihr Code: 482913",
    )
    assert (res["status"], res["num_segments"], res["error_code"], res["error_message"]) == ("queued", "1", None, None)
    assert parsedate_to_datetime(res["date_created"]).tzinfo is not None
    assert res["uri"] == f"/2010-04-01/Accounts/{box.account_sid}/Messages/{res['sid']}.json"
    sms = box.inbox.wait_for_sms(to=TO, timeout=1)
    assert (sms["id"], sms["provider"], sms["body"], sms["status_callback"]) == (
        res["sid"],
        "twilio",
        "Ihr Code: 482913",
        callback_url,
    )

    statuses = []
    for _ in range(2):
        path, headers, body = receiver.next_call()
        params = dict(parse_qsl(body.decode()))
        assert path == "/sms/status?provider=twilio"
        assert valid_twilio_signature(box.auth_token, callback_url, params, headers["X-Twilio-Signature"])
        assert (params["MessageSid"], params["AccountSid"], params["To"]) == (res["sid"], box.account_sid, TO)
        statuses.append(params["MessageStatus"])
    assert statuses == ["sent", "delivered"]

    delivered = box.inbox.wait_for_sms(lambda s: len(s["callbacks"]) == 2, timeout=2)
    assert delivered["status"] == "delivered" and [c["http_status"] for c in delivered["callbacks"]] == [204, 204]
    fetched = http.get(f"{box.base_url}{res['uri']}", auth=(box.account_sid, box.auth_token))
    assert fetched.status_code == 200 and fetched.json()["status"] == "delivered"


def test_twilio_auth_and_validation_errors(box: DevInbox, http: httpx.Client) -> None:
    wrong = twilio_post(box, http, password="wrong")
    assert wrong.status_code == 401 and wrong.json()["code"] == 20003
    assert http.post(box.twilio_messages_url, data={"To": TO}).status_code == 401  # no credentials at all
    other = http.post(
        box.twilio_messages_url.replace(box.account_sid, "AC" + "0" * 32),
        data={"To": TO, "From": "SPITAL", "Body": "x"},
        auth=(box.account_sid, box.auth_token),
    )
    assert other.status_code == 404 and other.json()["code"] == 20404
    bad_to = twilio_post(box, http, To="079 123 45 67")
    assert bad_to.status_code == 400
    assert bad_to.json() == {
        "code": 21211,
        "message": "The 'To' number 079 123 45 67 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    assert twilio_post(box, http, Body="").json()["code"] == 21602
    assert box.inbox.sms() == []


def test_twilio_scripted_503_then_success(box: DevInbox, http: httpx.Client) -> None:
    box.inbox.sms_script("twilio", [503, 503])
    first, second, third = (twilio_post(box, http) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 201)
    assert first.json()["code"] == 20503
    assert [s["id"] for s in box.inbox.sms()] == [third.json()["sid"]]


def test_twilio_hanging_request_times_out_client_but_may_still_be_sent(box: DevInbox, http: httpx.Client) -> None:
    box.inbox.sms_script("twilio", [SmsFault(delay=0.6)])
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            box.twilio_messages_url,
            data={"To": TO, "From": "SPITAL", "Body": "first"},
            auth=(box.account_sid, box.auth_token),
            timeout=0.2,
        )
    assert twilio_post(box, http, Body="second").status_code == 201  # only one request was scripted
    # Like a real provider, the request the client gave up on is still processed once the delay ends.
    box.inbox.wait_for_sms(lambda s: s["body"] == "first", timeout=2)


def test_twilio_delivery_failure_is_reported(box: DevInbox, http: httpx.Client, receiver: Receiver) -> None:
    box.inbox.sms_fail_delivery(30003)
    sid = twilio_post(box, http, StatusCallback=f"{receiver.url}/cb").json()["sid"]
    calls = [dict(parse_qsl(receiver.next_call()[2].decode())) for _ in range(2)]
    assert [(c["MessageStatus"], c.get("ErrorCode")) for c in calls] == [("sent", None), ("undelivered", "30003")]
    res = http.get(
        f"{box.twilio_base_url}/2010-04-01/Accounts/{box.account_sid}/Messages/{sid}.json",
        auth=(box.account_sid, box.auth_token),
    ).json()
    assert (res["status"], res["error_code"]) == ("undelivered", 30003)


# ------------------------------------------------------------------------------------------ generic
def test_generic_provider_accepts_and_calls_back_signed(box: DevInbox, http: httpx.Client, receiver: Receiver) -> None:
    auth = {"Authorization": f"Bearer {box.generic_token}"}
    payload = {"to": TO, "text": "Code 111222", "reference": "otp-42", "callback_url": f"{receiver.url}/generic"}
    r = http.post(box.generic_messages_url, json=payload, headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    path, headers, body = receiver.next_call()
    assert path == "/generic" and headers["X-Signature"] == generic_signature(box.generic_token, body)
    assert json.loads(body) == {"id": r.json()["id"], "reference": "otp-42", "status": "delivered", "error_code": None}
    sms = box.inbox.wait_for_sms(lambda s: s["status"] == "delivered", timeout=2)
    assert (sms["provider"], sms["to"], sms["body"], sms["reference"]) == ("generic", TO, "Code 111222", "otp-42")

    wrong_token = http.post(box.generic_messages_url, json=payload, headers={"Authorization": "Bearer nope"})
    assert wrong_token.status_code == 401
    bad = http.post(box.generic_messages_url, json={"to": "0791234567", "text": "x"}, headers=auth)
    assert bad.status_code == 422 and {e["loc"][-1] for e in bad.json()["detail"]} == {"to", "reference"}
    box.inbox.sms_script("generic", [503])
    assert http.post(box.generic_messages_url, json=payload, headers=auth).status_code == 503
    assert len(box.inbox.sms()) == 1


# ------------------------------------------------------------------------------------------ API, lifecycle, CLI
@pytest.mark.asyncio
async def test_json_api_lists_and_clears(box: DevInbox) -> None:
    await send(box, letter("patient@example.ch"))
    await box.inbox.await_email(timeout=5)
    async with httpx.AsyncClient(base_url=box.base_url, trust_env=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert len((await client.get("/api/emails")).json()) == 1
        assert (await client.delete("/api/messages")).status_code == 204
        assert (await client.get("/api/emails")).json() == [] and (await client.get("/api/sms")).json() == []


def test_start_and_stop_are_repeatable() -> None:
    dev = DevInbox()
    for _ in range(3):
        dev.start()
        assert httpx.get(f"{dev.base_url}/healthz", trust_env=False).status_code == 200
        socket.create_connection(("127.0.0.1", dev.smtp_port), timeout=1).close()
        dev.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{dev.base_url}/healthz", trust_env=False)


def test_cli_prints_where_to_look_and_stops_on_sigterm() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "tools" / "devinbox"),
        "DEVINBOX_AUTH_TOKEN": "tok-from-env",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "devinbox", "--smtp-port", "0", "--http-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        page = re.search(r"page (http://\S+)/ ", line)
        assert page and "SMTP 127.0.0.1:" in line and "auth_token=tok-from-env" in line, line
        assert re.search(r"account_sid=AC[0-9a-f]{32}", line)
        assert httpx.get(f"{page.group(1)}/healthz", trust_env=False).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
