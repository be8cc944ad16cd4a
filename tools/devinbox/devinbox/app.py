"""HTTP side: Twilio-compatible and generic SMS APIs, the inbox web page, and a JSON API.

Provider requests are handled in this order: authentication, reading the body, scripted fault
(``Inbox.sms_script``), validation, then the SMS is stored and a background task plays its delivery (status changes and
signed callbacks) ``callback_delay`` seconds apart.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment
from pydantic import ValidationError

from .generic import GenericMessage, generic_signature
from .inbox import DeliveryFailure, Inbox, Item, Provider
from .twilio import (
    API_VERSION,
    E164_RE,
    SENDER_RE,
    message_resource,
    new_sid,
    rfc2822_now,
    twilio_error,
    twilio_signature,
)

_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem auto;max-width:64rem;padding:0 1rem;color:#222}
article{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:.6rem 0}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}.meta{color:#666;margin:0}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}
iframe{width:100%;height:60vh;border:1px solid #ddd}code{background:#f0f0f0}"""

_INDEX = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>devinbox</title><style>{{ style }}</style></head><body>
<h1>devinbox</h1><p class="meta">SMTP port <code>{{ smtp_port }}</code> · Twilio base URL <code>{{ public_url }}</code>
· account <code>{{ account_sid }}</code> · generic API <code>{{ public_url }}/generic/v1/messages</code></p>
<form method="post" action="/clear"><button>Clear all</button></form>
<h2>E-mails ({{ emails|length }})</h2>
{% for m in emails %}<article><h3><a href="/emails/{{ m.id }}">{{ m.subject or "(no subject)" }}</a></h3>
<p class="meta">{{ m.received_at }} · to {{ m.rcpt_tos|join(", ") }} · from {{ m.mail_from }}</p>
<pre>{{ m.text }}</pre>{% for link in m.links %}<p><a href="{{ link }}">{{ link }}</a></p>{% endfor %}</article>
{% else %}<p>No e-mail yet.</p>{% endfor %}
<h2>SMS ({{ sms|length }})</h2>
{% if sms %}<table><tr><th>time</th><th>to</th><th>body</th><th>provider</th><th>status</th></tr>
{% for s in sms %}<tr><td>{{ s.received_at }}</td><td>{{ s.to }}</td><td>{{ s.body }}</td><td>{{ s.provider }}</td>
<td>{{ s.status }}{% if s.error_code %} ({{ s.error_code }}){% endif %}</td></tr>{% endfor %}</table>
{% else %}<p>No SMS yet.</p>{% endif %}</body></html>"""

_EMAIL = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ m.subject }}</title>
<style>{{ style }}</style></head><body><p><a href="/">&larr; inbox</a> · <a href="/emails/{{ m.id }}/raw">raw</a></p>
<h1>{{ m.subject or "(no subject)" }}</h1>
<p class="meta">{{ m.received_at }} · to {{ m.rcpt_tos|join(", ") }} · from {{ m.mail_from }}
{% if m.message_id %} · {{ m.message_id }}{% endif %}</p>
{% if m.html is not none %}<h2>HTML</h2><iframe sandbox srcdoc="{{ m.html }}" title="HTML body"></iframe>{% endif %}
<h2>Text</h2><pre>{{ m.text }}</pre>{% for link in m.links %}<p><a href="{{ link }}">{{ link }}</a></p>{% endfor %}
</body></html>"""

_jinja = Environment(autoescape=True)  # every value is escaped, including the HTML body in srcdoc
_index, _email_page = _jinja.from_string(_INDEX), _jinja.from_string(_EMAIL)


def _public(item: Item) -> Item:
    return {k: v for k, v in item.items() if k != "raw"}


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return user, password


def create_app(
    inbox: Inbox,
    *,
    account_sid: str,
    auth_token: str,
    generic_token: str,
    public_url: str,
    smtp_port: int | None = None,
    callback_delay: float = 0.2,
) -> FastAPI:
    """The devinbox HTTP app. ``public_url`` is how clients reach it (shown on the page)."""
    tasks: set[asyncio.Task[None]] = set()
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for task in tasks:  # pending deliveries would otherwise outlive the server
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()

    app = FastAPI(title="devinbox", lifespan=lifespan, docs_url=None, redoc_url=None)

    def http() -> httpx.AsyncClient:
        # trust_env=False: callbacks go to local services, never through a proxy from the environment.
        if not clients:
            clients.append(httpx.AsyncClient(timeout=5.0, trust_env=False))
        return clients[0]

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def terr(status: int, code: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse(twilio_error(status, code, message), status, headers=headers or None)

    async def scripted_fault(provider: Provider) -> JSONResponse | None:
        fault = inbox.next_sms_fault(provider)
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return None
        try:
            reason = HTTPStatus(fault.status).phrase
        except ValueError:
            reason = "Scripted error"
        if provider == "twilio":  # Twilio's codes for HTTP errors are 20000 + status (20429, 20503...)
            return terr(fault.status, 20000 + fault.status, reason)
        return JSONResponse({"error": reason}, fault.status)

    async def callback(sms_id: str, url: str, status: str, **kwargs: Any) -> None:
        try:
            outcome: Item = {"http_status": (await http().post(url, **kwargs)).status_code}
        except httpx.HTTPError as exc:  # recorded, not raised: a dead callback must not stop delivery
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        inbox.update_sms(sms_id, callback={"url": url, "status": status, **outcome})

    async def deliver_twilio(sms: Item, failure: DeliveryFailure | None) -> None:
        steps = (
            ["sent", "delivered"]
            if failure is None
            else (["failed"] if failure.status == "failed" else ["sent", failure.status])
        )
        for status in steps:
            await asyncio.sleep(callback_delay)
            code = failure.error_code if failure and status == steps[-1] else None
            changes: Item = {"status": status, "error_code": code, "date_updated": rfc2822_now()}
            if status == "sent":
                changes["date_sent"] = changes["date_updated"]
            inbox.update_sms(sms["id"], **changes)
            if url := sms["status_callback"]:
                params = {
                    "AccountSid": account_sid,
                    "ApiVersion": API_VERSION,
                    "MessageSid": sms["id"],
                    "SmsSid": sms["id"],
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "To": sms["to"],
                }
                if sms["from_"]:
                    params["From"] = sms["from_"]
                if code is not None:
                    params["ErrorCode"] = str(code)
                await callback(
                    sms["id"],
                    url,
                    status,
                    data=params,
                    headers={"X-Twilio-Signature": twilio_signature(auth_token, url, params)},
                )

    async def deliver_generic(sms: Item, failure: DeliveryFailure | None) -> None:
        await asyncio.sleep(callback_delay)
        status, code = ("failed", failure.error_code) if failure else ("delivered", None)
        inbox.update_sms(sms["id"], status=status, error_code=code)
        if url := sms["status_callback"]:
            body = json.dumps(
                {"id": sms["id"], "reference": sms["reference"], "status": status, "error_code": code}
            ).encode()
            await callback(
                sms["id"],
                url,
                status,
                content=body,
                headers={"Content-Type": "application/json", "X-Signature": generic_signature(generic_token, body)},
            )

    def twilio_auth(request: Request, sid: str) -> JSONResponse | None:
        creds = _basic_auth(request)
        if creds is None or not (_same(creds[0], account_sid) and _same(creds[1], auth_token)):
            return terr(401, 20003, "Authenticate", **{"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if sid != account_sid:
            return terr(404, 20404, f"The requested resource {request.url.path} was not found")
        return None

    @app.post("/2010-04-01/Accounts/{sid}/Messages.json")
    async def twilio_create(sid: str, request: Request) -> JSONResponse:
        if (denied := twilio_auth(request, sid)) is not None:
            return denied
        # Read the body before a scripted delay: a client that gives up during the delay must not
        # prevent the send, exactly like a slow real provider.
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if (faulted := await scripted_fault("twilio")) is not None:
            return faulted
        to, from_, service = form.get("To", ""), form.get("From", ""), form.get("MessagingServiceSid", "")
        body, status_cb = form.get("Body", ""), form.get("StatusCallback") or None
        if not to:
            return terr(400, 21604, "A 'To' phone number is required.")
        if not E164_RE.match(to):
            return terr(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service:
            return terr(400, 21603, "A 'From' phone number is required.")
        if from_ and not SENDER_RE.match(from_):
            return terr(
                400,
                21212,
                f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
            )
        if not body.strip():
            return terr(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return terr(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if status_cb and not status_cb.startswith(("http://", "https://")):
            return terr(400, 21609, f"The StatusCallback URL {status_cb} is not a valid URL.")
        now = rfc2822_now()
        sms = inbox.add_sms(
            id=new_sid("SM"),
            provider="twilio",
            to=to,
            from_=from_ or None,
            body=body,
            status="queued",
            status_callback=status_cb,
            account_sid=account_sid,
            messaging_service_sid=service or None,
            date_created=now,
            date_updated=now,
        )
        spawn(deliver_twilio(sms, inbox.next_delivery_failure()))
        return JSONResponse(message_resource(sms), 201)

    @app.get("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json")
    async def twilio_get(sid: str, message_sid: str, request: Request) -> JSONResponse:
        if (denied := twilio_auth(request, sid)) is not None:
            return denied
        sms = inbox.get_sms(message_sid)
        if sms is None or sms["provider"] != "twilio":
            return terr(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse(message_resource(sms))

    @app.post("/generic/v1/messages")
    async def generic_create(request: Request) -> JSONResponse:
        if not _same(request.headers.get("authorization", ""), f"Bearer {generic_token}"):
            return JSONResponse({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"})
        raw = await request.body()
        if (faulted := await scripted_fault("generic")) is not None:
            return faulted
        try:
            msg = GenericMessage.model_validate_json(raw)
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid request", "detail": exc.errors(include_url=False, include_context=False)}, 422
            )
        sms = inbox.add_sms(
            id="gm" + new_sid("")[:30],
            provider="generic",
            to=msg.to,
            from_=None,
            body=msg.text,
            status="accepted",
            status_callback=msg.callback_url,
            reference=msg.reference,
        )
        spawn(deliver_generic(sms, inbox.next_delivery_failure()))
        return JSONResponse({"id": sms["id"], "status": "accepted"}, 202)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(
            _index.render(
                style=_STYLE,
                emails=inbox.emails()[::-1],
                sms=inbox.sms()[::-1],
                smtp_port=smtp_port,
                public_url=public_url,
                account_sid=account_sid,
            )
        )

    @app.get("/emails/{email_id}", response_class=HTMLResponse)
    async def email_page(email_id: str) -> Response:
        if (m := inbox.get_email(email_id)) is None:
            return HTMLResponse("<!doctype html><p>No such e-mail. <a href='/'>Inbox</a></p>", 404)
        return HTMLResponse(_email_page.render(style=_STYLE, m=m))

    @app.get("/emails/{email_id}/raw")
    async def email_raw(email_id: str) -> Response:
        if (m := inbox.get_email(email_id)) is None:
            return Response("no such e-mail", 404)
        return Response(m["raw"], media_type="text/plain; charset=utf-8")

    @app.post("/clear")
    async def clear_form() -> RedirectResponse:
        inbox.clear()
        return RedirectResponse("/", 303)

    @app.get("/api/emails")
    async def api_emails() -> list[Item]:
        return [_public(m) for m in inbox.emails()]

    @app.get("/api/sms")
    async def api_sms() -> list[Item]:
        return inbox.sms()

    @app.delete("/api/messages", status_code=204)
    async def api_clear() -> Response:
        inbox.clear()
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
