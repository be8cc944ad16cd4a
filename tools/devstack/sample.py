"""A sample convocation.created event, as an upstream hospital system would publish it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

import aio_pika


def sample_pdf(text: str = "Convocation") -> bytes:
    """A small, valid one-page PDF (built by hand so the sample needs no PDF library)."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def convocation_event(
    *,
    email: str = "marie.dupont@example.ch",
    mobile: str | None = "+41 79 123 45 67",
    language: str = "fr",
    pdf: bytes | None = None,
    patient_id: str | None = None,
    delivery: str = "email",
    starts_at: datetime | None = None,
    convocation_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    department: tuple[str, str] = ("cardiology", "Cardiologie"),
    name: str = "Marie Dupont",
    birth_date: str | None = "1957-03-21",
    instructions: str = "Venez à jeun. Apportez la liste de vos médicaments.",
) -> dict:
    """The whole event: envelope and payload, ready to serialise as JSON."""
    convocation_id = convocation_id or uuid.uuid4()
    starts_at = starts_at or (datetime.now(timezone.utc) + timedelta(days=14)).replace(
        hour=8, minute=30, second=0, microsecond=0
    )
    data = {
        "convocation_id": str(convocation_id),
        "patient": {
            "id": patient_id or f"P-{uuid.uuid4().hex[:10]}",
            "name": name,
            "email": email,
            "mobile": mobile,
            "language": language,
            "birth_date": birth_date,
        },
        "appointment": {
            "starts_at": starts_at.isoformat(),
            "place": {
                "name": "Bâtiment Gustave Julliard, 2e étage",
                "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
            },
            "department": {
                "code": department[0],
                "name": department[1],
                "secretariat_phone": "+41 22 372 33 11",
                "secretariat_email": "cardiologie@hug.example",
            },
            "instructions": instructions,
        },
        "delivery": delivery,
        # What the e-mail and the portal show before the code: never the department's own address.
        "public_contact": {"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
        "document_pdf_base64": base64.b64encode(pdf).decode() if pdf is not None else None,
    }
    return {
        "event_id": str(event_id or uuid.uuid4()),
        "type": "convocation.created",
        "version": 1,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "producer": "hospital-his",
        "correlation_id": str(convocation_id),
        "causation_id": None,
        "data": data,
    }


async def publish(
    amqp_url: str, exchange: str, event: dict | bytes, *, routing_key: str | None = None, message_id: str | None = None
) -> None:
    """Publish like an upstream system: persistent, with publisher confirms, mandatory routing."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        ex = await channel.get_exchange(exchange, ensure=True)
        rk = routing_key or (f"{event['type']}.v{event['version']}" if isinstance(event, dict) else "")
        await ex.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id or (event["event_id"] if isinstance(event, dict) else None),
                correlation_id=event["correlation_id"] if isinstance(event, dict) else None,
            ),
            routing_key=rk,
            mandatory=True,
        )
