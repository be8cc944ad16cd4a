"""Sending a status or a request back to a hospital system in its own format: FHIR (Communication, Task) to
its FHIR base URL, or HL7 v2 (ORU^R01) to its MLLP listener. A failure is transient (retry later) or
permanent (the system refuses what we send: retrying cannot help)."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx

from hospital_gateway import fhir, hl7v2, mllp
from hospital_gateway.settings import HospitalSystem, Outbound

# What each status means, in the words the hospital's staff will read.
STATUS_TEXT = {
    "sealed": "The letter is ready to be e-mailed",
    "e-mailed": "The e-mail with the secure link was sent",
    "bounced": "The e-mail could not be delivered",
    "downloaded": "The patient downloaded the letter",
    "postal": "The letter goes by post",
    "postal-fallback": "The letter goes by post (not read in time or e-mail failed)",
    "cancelled": "The letter was withdrawn (appointment cancelled)",
    "superseded": "The letter was replaced by a newer one",
    "expired": "The letter expired",
    "withdrawn": "The secretariat withdrew the letter",
    "printed": "The print room printed the letter",
    "posted": "The print room posted the letter",
    "returned": "The post returned the letter as undeliverable",
    "postal-cancelled": "The print room was told not to post the letter",
    "erased": "The patient's data was erased at their request: this letter and everything about it are gone",
}
REISSUE_TEXT = {
    "resend": "The secretariat asked for the e-mail again",
    "email-corrected": "The secretariat corrected the e-mail address",
    "email-instead": "The secretariat switched the letter from paper back to e-mail",
}


@dataclass
class DeliveryFailed(Exception):
    permanent: bool
    reason: str  # a code and short text, never content


@dataclass(frozen=True)
class Notice:
    """What to tell the system about one of its appointments."""

    kind: str  # 'status' or 'request'
    code: str  # the status, or the request's reason
    at: datetime
    event_id: uuid.UUID
    appointment_id: str
    sandbox: bool
    detail: str | None = None


def _context(out: Outbound) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=out.ca_file)
    if out.client_cert:
        context.load_cert_chain(out.client_cert, out.client_key)
    return context


async def deliver(system: HospitalSystem, notice: Notice) -> None:
    out = system.outbound
    assert out is not None
    if out.format == "fhir":
        await _fhir(system, out, notice)
    else:
        await _hl7(system, out, notice)


async def _fhir(system: HospitalSystem, out: Outbound, n: Notice) -> None:
    if n.kind == "status":
        resource = fhir.status_communication(
            system=system,
            appointment_id=n.appointment_id,
            event_id=str(n.event_id),
            status=n.code,
            display=STATUS_TEXT[n.code],
            at=n.at,
            detail=n.detail,
            sandbox=n.sandbox,
        )
    else:
        resource = fhir.reissue_task(
            system=system,
            appointment_id=n.appointment_id,
            action_id=str(n.event_id),
            reason=n.code,
            display=REISSUE_TEXT.get(n.code, n.code),
            requested_at=n.at,
            sandbox=n.sandbox,
        )
    url = f"{(out.url or '').rstrip('/')}/{resource['resourceType']}"
    verify: ssl.SSLContext | bool = _context(out) if url.startswith("https:") else True
    try:
        async with httpx.AsyncClient(timeout=out.timeout, verify=verify) as client:
            response = await client.post(
                url, json=resource, headers={"content-type": fhir.MEDIA_TYPE, "accept": fhir.MEDIA_TYPE}
            )
    except httpx.TimeoutException:
        raise DeliveryFailed(False, "timeout") from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(False, f"connection {type(exc).__name__}") from None
    if response.is_success:
        return
    status = response.status_code
    raise DeliveryFailed(not (status >= 500 or status in (401, 403, 408, 425, 429)), f"HTTP {status}")


async def _hl7(system: HospitalSystem, out: Outbound, n: Notice) -> None:
    display = STATUS_TEXT[n.code] if n.kind == "status" else REISSUE_TEXT.get(n.code, n.code)
    message = hl7v2.notification(
        system=system,
        appointment_id=n.appointment_id,
        kind=n.kind,
        code=n.code,
        display=display,
        at=n.at,
        detail=n.detail,
        sandbox=n.sandbox,
        control_id=n.event_id.hex[:20].upper(),
    )
    try:
        reply = await mllp.send(
            out.host or "", out.port or 0, message, seconds=out.timeout, context=_context(out) if out.tls else None
        )
    except (TimeoutError, OSError) as exc:
        raise DeliveryFailed(False, f"connection {type(exc).__name__}") from None
    except Exception as exc:  # an unframed or cut answer
        raise DeliveryFailed(False, f"no acknowledgement ({type(exc).__name__})") from None
    code, _ = hl7v2.ack_code(reply)
    if code in ("AA", "CA"):
        return
    # AE: the system says our message is wrong (retrying it unchanged cannot help); AR: it cannot take it now.
    raise DeliveryFailed(code in ("AE", "CE"), f"ACK {code or 'missing'}")
