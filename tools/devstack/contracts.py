"""Writes the published event contracts (JSON Schemas, AsyncAPI 3.0 document, catalogue README) from
the pydantic models in shared/contracts.py: ``python -m devstack.contracts`` (``make contracts``).

Nothing in docs/contracts/ is written by hand. The output is deterministic (fixed example ids and
dates, stable key order), so the contract tests can compare the checked-in files with a fresh run.
``--check`` exits non-zero instead of writing when the files differ.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from shared import topology
from shared.consumer import CONTRACT_REASONS
from shared.contracts import (
    CATALOGUE,
    AccessChangedV1,
    ConvocationCancelledV1,
    ConvocationCreatedV1,
    ConvocationReissueRequestedV1,
    ConvocationStatusV1,
    DocumentReleasedV1,
    EmailFailedV1,
    EmailSentV1,
    Envelope,
    EventPayload,
    MessageRevokedV1,
    MessageSealedV1,
    OtpRequestedV1,
    PostalChosenV1,
    PostalRequestedV1,
    ReminderRequestedV1,
    SmsFailedV1,
    SmsSentV1,
    StaffActionRequestedV1,
)
from shared.crypto import b64e
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "contracts"
EXCHANGE = ServiceSettings.model_fields["events_exchange"].default
# Where the schema files are meant to be published; $id must be an absolute URI.
SCHEMA_BASE_URI = "https://convocations.hug.example/contracts/schemas/"
# Bump the minor version when an event or a field is added. A breaking change is a new routing key
# (``.v2``) published beside the old one, never a new major version of this document.
DOCUMENT_VERSION = "1.0.0"
AMQP_BINDING_VERSION = "0.3.0"
UPSTREAM = topology.UPSTREAM


# --- the producer/consumer matrix, from shared/topology.py BUS (the one table the services'
# subscriptions, their producer check and their broker permissions follow): the catalogue, the
# AsyncAPI operations and the contract tests read it (docs/architecture.md#events).


@dataclass(frozen=True)
class Party:
    name: str  # the service name; also the middle part of its queue names
    label: str
    publishes: tuple[type[EventPayload], ...]
    consumes: tuple[type[EventPayload], ...]
    internal: bool = True  # one of our services: its subscriptions are checked against its app.py


def _party(name: str, label: str | None = None) -> Party:
    return Party(
        name, label or name,
        publishes=tuple(CATALOGUE[key] for key, (owner, _) in topology.BUS.items() if owner == name),
        consumes=tuple(CATALOGUE[key] for key, (_, consumers) in topology.BUS.items() if name in consumers),
        internal=name != UPSTREAM,
    )


PARTIES: tuple[Party, ...] = (
    _party(UPSTREAM, "hospital systems (upstream)"),
    _party("issuer"),
    _party("mailer"),
    _party("sms-gateway"),
    _party("access-portal"),
    _party("secretariat"),
)


def producers_of(event: type[EventPayload]) -> list[Party]:
    return [p for p in PARTIES if event in p.publishes]


def producer_of(event: type[EventPayload]) -> Party:
    producers = producers_of(event)
    if len(producers) != 1:
        raise ValueError(f"{event.routing_key()} has {len(producers)} producers; every event has exactly one")
    return producers[0]


def consumers_of(event: type[EventPayload]) -> list[Party]:
    return [p for p in PARTIES if event in p.consumes]


def events() -> list[type[EventPayload]]:
    return [CATALOGUE[key] for key in CATALOGUE]


# --- examples: built with the models, fixed ids and dates ------------------------------------------

EXAMPLE_NS = uuid.UUID("5b0f7d0e-6a43-4f0c-9a3e-2f1c8f6f1a00")
CONVOCATION_ID = uuid.UUID("3f2a9c4e-8b1d-4e6f-a2c7-5d9e0b1f4a68")
MESSAGE_ID = uuid.UUID("b7e4c1d2-5a6f-4b3c-9d8e-1f2a3b4c5d6e")
CHALLENGE_ID = uuid.UUID("e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9")
GENEVA = timezone(timedelta(hours=1))  # CET: the example appointment is in January
CREATED_AT = datetime(2026, 12, 1, 8, 0, 0, tzinfo=timezone.utc)
APPOINTMENT_AT = datetime(2027, 1, 14, 8, 30, tzinfo=GENEVA)
PATIENT_ID = "HUG-20481137"
# What caused each example event, for a realistic causation chain.
CAUSED_BY: dict[type[EventPayload], type[EventPayload] | None] = {
    ConvocationCreatedV1: None,
    ConvocationCancelledV1: None,
    MessageSealedV1: ConvocationCreatedV1,
    ConvocationStatusV1: ConvocationCreatedV1,
    EmailSentV1: MessageSealedV1,
    EmailFailedV1: MessageSealedV1,
    PostalRequestedV1: EmailFailedV1,
    MessageRevokedV1: ConvocationCancelledV1,
    ReminderRequestedV1: None,  # the issuer's clock
    OtpRequestedV1: None,  # a patient's request on the portal
    SmsSentV1: OtpRequestedV1,
    SmsFailedV1: OtpRequestedV1,
    DocumentReleasedV1: None,  # a patient's download
    StaffActionRequestedV1: None,  # a secretary's act
    AccessChangedV1: StaffActionRequestedV1,
    PostalChosenV1: None,  # a patient's request on the portal
    ConvocationReissueRequestedV1: StaffActionRequestedV1,
}
OCCURRED_AFTER = {  # seconds after CREATED_AT
    ConvocationCreatedV1: 0, MessageSealedV1: 1, ConvocationStatusV1: 1, EmailSentV1: 3, EmailFailedV1: 3,
    PostalRequestedV1: 4, OtpRequestedV1: 38530, SmsSentV1: 38531, SmsFailedV1: 38531, DocumentReleasedV1: 38595,
    PostalChosenV1: 38600,
    ConvocationCancelledV1: 86400, MessageRevokedV1: 86401, StaffActionRequestedV1: 40000, AccessChangedV1: 40001,
    ReminderRequestedV1: 3110400, ConvocationReissueRequestedV1: 40001,
}
ACTION_ID = uuid.UUID("a0c1d2e3-f405-4617-8829-3a4b5c6d7e8f")


def _illustrative(label: str, size: int) -> bytes:
    """Fixed stand-in bytes for ciphertexts and nonces: examples must not change from run to run."""
    return hashlib.shake_256(f"convocations example {label}".encode()).digest(size)


def _token(prefix: str, label: str, size: int) -> str:
    return prefix + base64.urlsafe_b64encode(_illustrative(label, size)).rstrip(b"=").decode()


def _at(event: type[EventPayload]) -> datetime:
    return CREATED_AT + timedelta(seconds=OCCURRED_AFTER[event])


def example_payload(event: type[EventPayload]) -> EventPayload:
    """A realistic payload for each event of the catalogue (ciphertexts are illustrative bytes)."""
    ids = dict(convocation_id=CONVOCATION_ID)
    message = dict(ids, message_id=MESSAGE_ID)
    challenge = dict(message, challenge_id=CHALLENGE_ID)
    builders = {
        ConvocationCreatedV1: lambda: ConvocationCreatedV1.model_validate({
            **ids,
            "patient": {
                "id": PATIENT_ID,
                "name": "Marie Dupont",
                "email": "marie.dupont@example.ch",
                "mobile": "+41 79 123 45 67",
                "language": "fr",
            },
            "appointment": {
                "starts_at": APPOINTMENT_AT,
                "place": {"name": "Bâtiment Gustave Julliard, 2e étage",
                          "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genève"},
                "department": {"code": "cardiology", "name": "Cardiologie", "secretariat_phone": "+41 22 372 33 11",
                               "secretariat_email": "cardiologie@hug.example"},
                "instructions": "Venez à jeun. Apportez la liste de vos médicaments.",
            },
            "delivery": "email",
            "public_contact": {"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
            "document_pdf_base64": None,
        }),
        ConvocationCancelledV1: lambda: ConvocationCancelledV1(**ids, reason="Rendez-vous annulé par le service"),
        MessageSealedV1: lambda: MessageSealedV1(
            **message,
            patient_ref="k1:" + _illustrative("patient_ref", 32).hex(),
            patient_refs=["k1:" + _illustrative("patient_ref", 32).hex()],
            language="fr",
            key_id="k1",
            document_nonce=b64e(_illustrative("document nonce", 12)),
            document_ciphertext=b64e(_illustrative("document ciphertext", 64)),
            details_nonce=b64e(_illustrative("details nonce", 12)),
            details_ciphertext=b64e(_illustrative("details ciphertext", 48)),
            expires_at=APPOINTMENT_AT + timedelta(days=30),
            secretariat_phone="+41 22 372 33 11",
            secretariat_email="cardiologie@hug.example",
            send_email=True,
            public_contact={"phone": "+41 22 372 33 11", "email": "patients@hug.example"},
            for_mailer=_token("fe2.k1.", "for_mailer", 12 + 112 + 16),
            for_portal=_token("fe2.k1.", "for_portal", 12 + 25 + 16),
        ),
        MessageRevokedV1: lambda: MessageRevokedV1(**message, reason="cancelled"),
        ReminderRequestedV1: lambda: ReminderRequestedV1(
            **message, paper_deadline=APPOINTMENT_AT - timedelta(hours=48)),
        PostalRequestedV1: lambda: PostalRequestedV1(
            **ids, reason="email-failed", language="fr", for_print_room=_token("rs2.k1.", "for_print_room", 32 + 12 + 96 + 16),
        ),
        ConvocationStatusV1: lambda: ConvocationStatusV1(
            **message, status="sealed", at=_at(ConvocationStatusV1), department="cardiology",
            appointment_at=APPOINTMENT_AT, delivery="email", patient_ref=_illustrative("patient_ref", 32).hex(),
        ),
        EmailSentV1: lambda: EmailSentV1(
            **message, smtp_message_id=f"<{MESSAGE_ID}@hug.example>", accepted_at=_at(EmailSentV1),
        ),
        EmailFailedV1: lambda: EmailFailedV1(
            **message, smtp_code=550, reason="5.1.1 The e-mail account that you tried to reach does not exist",
            failed_at=_at(EmailFailedV1),
        ),
        OtpRequestedV1: lambda: OtpRequestedV1(
            **challenge, language="fr", portal_host="convocations.hug.example",
            for_sms=_token("fe2.k1.", "for_sms", 12 + 38 + 16), expires_at=_at(OtpRequestedV1) + timedelta(minutes=10),
            phone_hint="+41 79 *** ** 67",
        ),
        StaffActionRequestedV1: lambda: StaffActionRequestedV1(
            **message, action_id=ACTION_ID, action="unlock", department="cardiology",
            requested_by="3b9f2c1a-secretary-subject",
        ),
        AccessChangedV1: lambda: AccessChangedV1(
            **message, change="unlocked", at=_at(AccessChangedV1), action_id=ACTION_ID,
        ),
        ConvocationReissueRequestedV1: lambda: ConvocationReissueRequestedV1(
            **ids, reason="email-corrected", requested_at=_at(ConvocationReissueRequestedV1), action_id=ACTION_ID,
        ),
        DocumentReleasedV1: lambda: DocumentReleasedV1(**message, kind="pdf", released_at=_at(DocumentReleasedV1)),
        PostalChosenV1: lambda: PostalChosenV1(**message, chosen_at=_at(PostalChosenV1)),
        SmsSentV1: lambda: SmsSentV1(
            **challenge, provider="twilio", provider_message_id="SM" + _illustrative("sms sid", 16).hex(),
            sent_at=_at(SmsSentV1),
        ),
        SmsFailedV1: lambda: SmsFailedV1(
            **challenge, provider="twilio", provider_code="30003", reason="Unreachable destination handset",
            failed_at=_at(SmsFailedV1),
        ),
    }
    return builders[event]()


def example_event_id(event: type[EventPayload]) -> uuid.UUID:
    return uuid.uuid5(EXAMPLE_NS, event.routing_key())


def example_envelope(event: type[EventPayload]) -> Envelope:
    cause = CAUSED_BY[event]
    producer = producer_of(event).name
    return Envelope[event](  # type: ignore[valid-type]
        event_id=example_event_id(event),
        type=event.EVENT_TYPE,
        version=event.VERSION,
        occurred_at=_at(event),
        producer=topology.producer_name(producer),
        correlation_id=CONVOCATION_ID,
        causation_id=example_event_id(cause) if cause else None,
        data=example_payload(event),
    )


def example_message(event: type[EventPayload]) -> dict:
    """The example as it travels: the JSON body."""
    return example_envelope(event).model_dump(mode="json")


def example_properties(event: type[EventPayload]) -> dict:
    """The AMQP properties the example travels with."""
    return {
        "message_id": str(example_event_id(event)),
        "correlation_id": str(CONVOCATION_ID),
        "type": event.EVENT_TYPE,
        "content_type": "application/json",
        "delivery_mode": 2,
    }


# --- JSON Schema per event (the whole message body) -------------------------------------------------


def schema_file(event: type[EventPayload]) -> str:
    return f"{event.routing_key()}.json"


def summary(event: type[EventPayload]) -> str:
    return " ".join((event.__doc__ or "").split())


def event_schema(event: type[EventPayload]) -> dict:
    """JSON Schema (draft 2020-12) of the message body: the envelope with this payload as ``data``."""
    generated = Envelope[event].model_json_schema(mode="validation")  # type: ignore[valid-type]
    properties = copy.deepcopy(generated["properties"])
    properties["type"]["const"] = event.EVENT_TYPE
    properties["version"]["const"] = event.VERSION
    properties["data"]["description"] = f"The {event.EVENT_TYPE} v{event.VERSION} payload."
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE_URI + schema_file(event),
        "title": f"{event.EVENT_TYPE} v{event.VERSION}",
        "description": (
            f"{summary(event)} Message body on routing key '{event.routing_key()}' of the topic exchange"
            f" '{EXCHANGE}': the common envelope with the payload in 'data'. Unknown fields are ignored"
            " by consumers, so producers may add fields within a major version."
        ),
        "type": "object",
        "properties": properties,
        "required": generated["required"],
        "$defs": generated["$defs"],
        "examples": [example_message(event)],
    }
    return schema


# --- AsyncAPI 3.0.0 ---------------------------------------------------------------------------------


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        return {k: (prefix + v.removeprefix("#/$defs/") if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, prefix))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def envelope_schema_name(event: type[EventPayload]) -> str:
    return f"{event.__name__}Message"


def headers_schema(event: type[EventPayload]) -> dict:
    return {
        "type": "object",
        "description": "AMQP message properties (and the x-producer header) every producer sets.",
        "properties": {
            "message_id": {"type": "string", "format": "uuid",
                           "description": "The envelope's event_id (the consumers' idempotency key)."},
            "correlation_id": {"type": "string", "format": "uuid",
                               "description": "The convocation id: the envelope's correlation_id."},
            "type": {"type": "string", "const": event.EVENT_TYPE, "description": "The event name."},
            "content_type": {"type": "string", "const": "application/json"},
            "delivery_mode": {"type": "integer", "const": 2, "description": "Persistent."},
            "x-producer": {"type": "string",
                           "description": "Header set by this system's services: the producing service."},
        },
        "required": ["message_id", "correlation_id", "content_type", "delivery_mode"],
    }


def asyncapi() -> dict:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event in events():
        key, name = event.routing_key(), event.__name__
        generated = event_schema(event)
        for def_name, definition in generated["$defs"].items():
            definition = _rewrite_refs(definition, "#/components/schemas/")
            if schemas.setdefault(def_name, definition) != definition:
                raise ValueError(f"two different models are both named {def_name}")
        body = {k: v for k, v in generated.items() if k not in ("$schema", "$id", "$defs", "examples")}
        schemas[envelope_schema_name(event)] = _rewrite_refs(body, "#/components/schemas/")
        messages[name] = {
            "name": event.EVENT_TYPE,
            "title": f"{event.EVENT_TYPE} v{event.VERSION}",
            "summary": summary(event),
            "contentType": "application/json",
            "headers": headers_schema(event),
            "correlationId": {
                "description": "The convocation id, carried through the whole chain.",
                "location": "$message.header#/correlation_id",
            },
            "payload": {"$ref": f"#/components/schemas/{envelope_schema_name(event)}"},
            "bindings": {"amqp": {"messageType": event.EVENT_TYPE, "bindingVersion": AMQP_BINDING_VERSION}},
            "examples": [{
                "name": f"{event.EVENT_TYPE.replace('.', '-')}-example",
                "summary": "A realistic message (ciphertexts are illustrative bytes).",
                "headers": example_properties(event),
                "payload": example_message(event),
            }],
        }
        producer, consumers = producer_of(event), consumers_of(event)
        channels[key] = {
            "address": key,
            "title": f"{event.EVENT_TYPE} v{event.VERSION}",
            "summary": summary(event),
            "description": (
                f"Routing key '{key}' on the topic exchange '{EXCHANGE}'. Producer: {producer.label}."
                f" Consumers: {', '.join(c.label for c in consumers) or 'none yet'}."
            ),
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
        }
        channel_ref = {"$ref": f"#/channels/{key}"}
        message_ref = [{"$ref": f"#/channels/{key}/messages/{name}"}]
        operations[f"{producer.name}.send.{key}"] = {
            "action": "send",
            "channel": channel_ref,
            "title": f"{producer.label} publishes {event.EVENT_TYPE}",
            "summary": summary(event),
            "description": "Persistent, with publisher confirms and mandatory routing (an unroutable event fails"
                           " the publish instead of vanishing).",
            "messages": message_ref,
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for consumer in consumers:
            queue = topology.queue_name(EXCHANGE, consumer.name, key)
            operations[f"{consumer.name}.receive.{key}"] = {
                "action": "receive",
                "channel": channel_ref,
                "title": f"{consumer.label} consumes {event.EVENT_TYPE}",
                "description": (
                    f"From the durable quorum queue '{queue}' (delivery limit {topology.DELIVERY_LIMIT}),"
                    f" acknowledged after the consumer's transaction commits. Rejected messages go to"
                    f" '{topology.dead_letter_queue(queue).name}' with the reason in their headers."
                ),
                "messages": message_ref,
                "bindings": {"amqp": {"deliveryMode": 2, "ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
                "x-queue": queue,
                "x-dead-letter-queue": topology.dead_letter_queue(queue).name,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Convocations events",
            "version": DOCUMENT_VERSION,
            "description": (
                "Events exchanged by the hospital's systems and the Convocations services (issuer, mailer,"
                " sms-gateway, access-portal), which deliver appointment letters by e-mailed link and SMS code."
                f" Every event travels on the durable topic exchange '{EXCHANGE}' with routing key"
                " '<event>.v<major>'; the body is the common JSON envelope with the payload in 'data'."
                " Generated from shared/contracts.py by `make contracts`; see README.md beside this file."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "{host}",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "pathname": "/",
                "title": "RabbitMQ",
                "description": "The hospital's RabbitMQ (3.10 or later: quorum queues with delivery limits).",
                "variables": {"host": {"default": "localhost:5672",
                                       "description": "host:port of the broker; localhost:5672 for development."}},
                "security": [{"$ref": "#/components/securitySchemes/brokerUser"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "brokerUser": {"type": "userPassword",
                               "description": "One broker user per service and per upstream system."},
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, so the document reads top to bottom."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(document: dict) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def to_json(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- README: the catalogue for integrators ----------------------------------------------------------

REJECTION_MEANINGS = {
    "malformed-json": "The body is not UTF-8 JSON.",
    "invalid-event": "The body does not match the schema of the routing key's event; the detail names the fields"
                     " (a control character such as CR or LF in a one-line field is named by its code point).",
    "wrong-type": "The envelope's type or version is not the routing key's event.",
    "wrong-producer": "The envelope's `producer` is not the one party that publishes this event.",
    "too-large": "The message body is larger than its event may be (convocation.created: the 10 MB letter in"
                 " base64 and 256 KiB more); refused on its size, before it is read.",
    "appointment-in-past": "A convocation.created whose appointment has already started.",
    "unknown-convocation": "The event names a convocation this service does not know.",
    "unreadable-secret": "An encrypted field does not open with this service's key (wrong key or forged field).",
    "pdf-active-content": "The PDF carries JavaScript, a launch or other action, an embedded file or XFA; the detail"
                          " says which.",
    "pdf-unreadable": "The PDF cannot be inspected (damaged, or encrypted with a password).",
    "email-invalid": "A secretariat's correct-email whose address (sealed for the issuer) is missing or is not one"
                     " e-mail address; the address itself is never in the detail.",
    "unsafe-header": "A value meant for an e-mail header holds a control character or is no plain address.",
}
_REJECTED = re.compile(r"""Rejected\(\s*["']([a-z0-9-]+)["']""")


def rejection_reasons() -> dict[str, list[str]]:
    """Reason code -> services that raise it: the contract reasons, plus every ``Rejected("...")`` in
    the services' code, so the catalogue lists each reason an integrator can find on a DLQ."""
    reasons: dict[str, set[str]] = {reason: {"every consumer"} for reason in sorted(CONTRACT_REASONS)}
    for path in sorted((ROOT / "services").glob("*/*/*.py")):
        for reason in _REJECTED.findall(path.read_text(encoding="utf-8")):
            reasons.setdefault(reason, set()).add(path.parts[-3])
    return {r: sorted(s) for r, s in reasons.items()}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type(node: dict) -> str:
    if "anyOf" in node:
        kinds = [_type(n) for n in node["anyOf"] if n.get("type") != "null"]
        nullable = any(n.get("type") == "null" for n in node["anyOf"])
        return " or ".join(kinds) + (" or null" if nullable else "")
    if "$ref" in node:
        return "object"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    notes = []
    if "format" in node:
        notes.append(node["format"])
    if "pattern" in node:
        notes.append(f"`{node['pattern']}`")
    if "minimum" in node:
        notes.append(f"≥ {node['minimum']}")
    if "maxLength" in node:
        notes.append(f"≤ {node['maxLength']} chars")
    return kind + (f" ({', '.join(notes)})" if notes else "")


def _ref_target(node: dict, defs: dict) -> dict | None:
    for candidate in [node, *node.get("anyOf", [])]:
        if "$ref" in candidate:
            return defs[candidate["$ref"].removeprefix("#/$defs/")]
    return None


def field_rows(schema: dict, defs: dict, prefix: str = "") -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, node in schema.get("properties", {}).items():
        if name in required:
            need = "yes"
        elif "default" in node:
            need = f"no (default `{json.dumps(node['default'])}`)"
        else:
            need = "no"
        rows.append(f"| `{prefix}{name}` | {_type(node)} | {need} | {_md(node.get('description', ''))} |")
        target = _ref_target(node, defs)
        if target is not None:
            rows.extend(field_rows(target, defs, f"{prefix}{name}."))
    return rows


def readme() -> str:
    lines: list[str] = []
    add = lines.append
    add("# Convocations event contracts")
    add("")
    add("<!-- Generated by `make contracts` (tools/devstack/contracts.py) from shared/contracts.py."
        " Do not edit: tests/contract/test_contracts.py fails when this folder differs from a fresh run. -->")
    add("")
    add("The events that the hospital's systems and the four Convocations services exchange, for integrators."
        " Machine-readable forms beside this file:")
    add("")
    add("- [`asyncapi.yaml`](asyncapi.yaml): AsyncAPI 3.0.0 — server, one channel per routing key,"
        " who sends and who receives, message properties and payload schemas.")
    add("- [`schemas/`](schemas/): one JSON Schema (draft 2020-12) per event, of the whole message body"
        " (envelope and payload), each with an example.")
    add("")
    add("## Connecting")
    add("")
    add(f"- Broker: RabbitMQ (AMQP 0-9-1), one durable **topic** exchange, `{EXCHANGE}`.")
    add("- Routing key: the event name plus its major version, `<event>.v<N>` (e.g. `convocation.created.v1`).")
    add("- Body: UTF-8 JSON, the [envelope](#envelope) with the payload in `data`.")
    add("- Publishing: persistent messages (delivery mode 2), publisher confirms, `mandatory` set so that an"
        " unroutable message comes back instead of vanishing; AMQP properties `message_id` = `event_id`,"
        " `correlation_id` = the convocation id, `type` = the event name, `content_type` = `application/json`.")
    upstream_queues = ", ".join(f"`{topology.queue_name(EXCHANGE, UPSTREAM, e.routing_key())}`"
                                for e in events() if UPSTREAM in (c.name for c in consumers_of(e)))
    add(f"- Consuming: the events meant for the hospital's systems wait in durable queues ({upstream_queues}),"
        " each with its dead-letter queue, declared before the first publish so that nothing is lost.")
    add("")
    add("## Event catalogue")
    add("")
    add("| event | routing key | producer | consumers | what it means |")
    add("|---|---|---|---|---|")
    for event in events():
        consumers = ", ".join(c.label for c in consumers_of(event)) or "—"
        add(f"| [{event.EVENT_TYPE}](#{event.routing_key().replace('.', '')}) | `{event.routing_key()}` |"
            f" {producer_of(event).label} | {consumers} | {_md(summary(event))} |")
    add("")
    add("The main chain: `convocation.created → message.sealed → email.sent → otp.requested → document.released`,"
        " with `convocation.status` reporting each step back to the hospital. Every event has exactly one producer.")
    add("")
    add("## Envelope")
    add("")
    envelope_schema = Envelope[EventPayload].model_json_schema(mode="validation")
    add(" ".join((Envelope.__doc__ or "").replace("``", "`").split()))
    add("")
    add("| field | type | required | meaning |")
    add("|---|---|---|---|")
    envelope_fields = {k: v for k, v in envelope_schema["properties"].items() if k != "data"}
    lines.extend(field_rows({"properties": envelope_fields, "required": envelope_schema["required"]}, {}))
    add("| `data` | object | yes | The event's payload (below). |")
    add("")
    add("AMQP message properties set by every producer:")
    add("")
    add("| property | value |")
    add("|---|---|")
    add("| `message_id` | the envelope's `event_id` |")
    add("| `correlation_id` | the envelope's `correlation_id` (the convocation id) |")
    add("| `type` | the event name, e.g. `convocation.created` |")
    add("| `content_type` | `application/json` |")
    add("| `delivery_mode` | `2` (persistent) |")
    add("| header `x-producer` | the producing service (set by this system's services) |")
    add("")
    add("Consumers read the body: the idempotency key is the envelope's `event_id`; a redelivered event"
        " with an id already seen is acknowledged and skipped.")
    add("")
    add("## Versioning")
    add("")
    add("- Consumers ignore fields they do not know, so a producer may **add** an optional field within a"
        " major version.")
    add("- Producers never remove, rename or retype a field, and never narrow what a field accepts, within a"
        " major version.")
    add("- A breaking change is a new major version with its own routing key (`convocation.created.v2`),"
        " published side by side with the old one until every consumer has moved; then the old one is retired"
        " (`RETIRED` in `shared/topology.py`: each former consumer among the services deletes its queue at"
        " startup; the hospital's systems delete theirs, or ask the operators to).")
    add("- The envelope's `type` and `version` must match the routing key; a mismatch is dead-lettered"
        " (`wrong-type`).")
    add("- Each event has one producer (the catalogue's producer column): the broker lets only that party's user publish its"
        f" routing key, and an envelope whose `producer` names anyone else (`{topology.UPSTREAM_PRODUCER}` for"
        " the hospital's systems) is dead-lettered (`wrong-producer`).")
    add("")
    add("## Queues and dead letters")
    add("")
    sample_queue = topology.queue_name(EXCHANGE, "issuer", ConvocationCreatedV1.routing_key())
    add(f"- Each consumer has its own durable quorum queue per event, named `<exchange>.<service>.<routing key>`,"
        f" e.g. `{sample_queue}`.")
    add(f"- Beside it, a dead-letter queue `<queue>.dlq` (`{topology.dead_letter_queue(sample_queue).name}`),"
        f" bound to the exchange `{topology.dead_letter_exchange(EXCHANGE).name}` with the queue name as"
        " routing key.")
    add("- An event that fails its contract, or that the consumer refuses, is copied unchanged to the DLQ with"
        " these headers, acknowledged, counted, and never blocks the events behind it:")
    add("")
    add("| header | value |")
    add("|---|---|")
    add("| `x-rejected-reason` | a reason code (below) |")
    add("| `x-rejected-detail` | a human-readable detail (for `invalid-event`, the failing fields) |")
    add("| `x-rejected-by` | the consuming service |")
    add("| `x-original-routing-key` | the routing key the event arrived with |")
    add("")
    add("| reason | raised by | meaning |")
    add("|---|---|---|")
    for reason, raised_by in rejection_reasons().items():
        meaning = REJECTION_MEANINGS.get(reason, "See `x-rejected-detail`.")
        add(f"| `{reason}` | {', '.join(raised_by)} | {_md(meaning)} |")
    add("")
    add(f"- A consumer that fails for another reason (database down, a bug) requeues the event; after"
        f" {topology.DELIVERY_LIMIT} deliveries RabbitMQ dead-letters it to the same DLQ with its own `x-death`"
        " header (reason `delivery_limit`) and no `x-rejected-*` headers.")
    add(f"- Transient failures of an outside provider (SMTP, SMS) are retried through holding queues"
        f" `<queue>.retry.<delay>s` on the exchange `{topology.retry_exchange(EXCHANGE).name}`, with a header"
        " `x-attempt`: the same event id, so they are not mistaken for duplicates.")
    add("")
    add("## Encrypted fields")
    add("")
    add("No field on the bus carries a document, a link secret, an OTP or a phone number in clear.")
    add("")
    add("- **`fe2.`** (`for_mailer`, `for_portal` in message.sealed; `for_sms` in otp.requested): `fe2.`, the"
        " id of the key in the ring (e.g. `k1`) and a dot, then unpadded base64url of a 12-byte nonce followed by the AES-256-GCM ciphertext and tag of a small JSON"
        " object. The additional data binds it to its place: `<event type>|<id>|<consumer>` (the message id,"
        " or the challenge id for otp.requested). Only the producer and its one consumer hold the key ring;"
        " the consumer opens with the key the token names, so keys rotate with events in flight (`fe1.` tokens,"
        " from before key ids, open with any key of the ring):")
    add("")
    add("  | field | plaintext | opened by | key |")
    add("  |---|---|---|---|")
    add("  | `message.sealed` `for_mailer` | `{email, name, link_secret}` | mailer | `MAILER_FIELD_KEY`"
        " (issuer, mailer) |")
    add("  | `message.sealed` `for_portal` | `{mobile}` (the number on file, or null) | access-portal |"
        " `PORTAL_FIELD_KEY` (issuer, access-portal) |")
    add("  | `otp.requested` `for_sms` | `{phone, code}` | sms-gateway | `SMS_FIELD_KEY` (access-portal,"
        " sms-gateway) |")
    add("  | `staff.action.requested` `for_portal` | `{mobile}` (correct-mobile; bound to the action id) |"
        " access-portal | `STAFF_FIELD_KEY` (secretariat, access-portal) |")
    add("  | `staff.action.requested` `for_issuer` | `{email}` (correct-email; bound to the action id) | issuer |"
        " `ISSUER_FIELD_KEY` (secretariat, issuer) |")
    add("")
    add("- **`rs2.`** (`for_print_room` in postal.requested): sealed to the print room's current X25519 public"
        " key. `rs2.`, the key's id in `PRINT_ROOM_PUBLIC_KEY` and a dot, then unpadded base64url of the 32-byte ephemeral public key, a 12-byte nonce and the"
        " AES-256-GCM ciphertext; key = HKDF-SHA256(X25519 shared secret, salt = ephemeral public key ‖ print"
        " room public key, info = `convocations/v1/recipient/<context>`), additional data = the context"
        " `postal.requested|<convocation id>|print-room`. Only the print room's private key opens it; no"
        " service holds that key. Plaintext: JSON `{patient_id, patient_name, document_pdf_base64}`.")
    add("- **The document** (`document_*`, `details_*` in message.sealed, standard base64): AES-256-GCM under"
        " HKDF-SHA256(link secret, salt = the server key named by `key_id`, info ="
        " `convocations/v1/<purpose>/` ‖ message id bytes), additional data"
        " `<message id>|<key id>|<purpose>` (purpose `document` or `details`). The link secret travels only"
        " inside `for_mailer` and the e-mailed link's fragment: no database or server key alone opens a"
        " document. Server keys rotate: the newest seals, older ones still open older messages.")
    add("")
    add("## Events")
    for event in events():
        schema = event_schema(event)
        defs = schema["$defs"]
        payload = defs[event.__name__]
        consumers = ", ".join(c.label for c in consumers_of(event)) or "none yet"
        add("")
        add(f"### {event.routing_key()}")
        add("")
        add(summary(event))
        add("")
        add(f"Producer: {producer_of(event).label}. Consumers: {consumers}."
            f" Schema: [`schemas/{schema_file(event)}`](schemas/{schema_file(event)}).")
        add("")
        add("| field | type | required | meaning |")
        add("|---|---|---|---|")
        lines.extend(field_rows(payload, defs, "data."))
    add("")
    add("## Example: convocation.created")
    add("")
    add("The body (the same as the example in"
        f" [`schemas/{schema_file(ConvocationCreatedV1)}`](schemas/{schema_file(ConvocationCreatedV1)})):")
    add("")
    add("```json")
    add(to_json(example_message(ConvocationCreatedV1)).rstrip("\n"))
    add("```")
    add("")
    add(f"published to the exchange `{EXCHANGE}` with routing key `{ConvocationCreatedV1.routing_key()}`"
        " and these properties:")
    add("")
    add("```json")
    add(to_json(example_properties(ConvocationCreatedV1)).rstrip("\n"))
    add("```")
    add("")
    add("`document_pdf_base64` is null here, so the issuer renders the letter; to send your own, put the PDF"
        " (at most 10 MB) in it as standard base64. `patient.mobile` may be given in any usual form; national"
        " numbers are read as Swiss and the number is used as E.164 (`+41791234567`).")
    add("")
    add("## Sending a letter again (convocation.reissue.requested)")
    add("")
    add("The issuer keeps no letter: nothing at rest opens a document without the patient's link. When a"
        " department's secretariat asks for the e-mail again (`resend`) or corrects the e-mail address"
        f" (`email-corrected`), the issuer publishes `{ConvocationReissueRequestedV1.routing_key()}` on the"
        f" hospital's queue `{topology.queue_name(EXCHANGE, UPSTREAM, ConvocationReissueRequestedV1.routing_key())}`."
        " It carries the convocation id and the reason, no patient data. The hospital system answers by"
        f" publishing `{ConvocationCreatedV1.routing_key()}` again with the **same `convocation_id`** (a new"
        " `event_id`), the letter and the appointment as they stand now. The issuer seals a new message, the"
        " old link then says the letter was replaced, and for `email-corrected` the new e-mail goes to the"
        " corrected address whatever address the republished event carries (the correction is used once)."
        " Until the hospital answers, the secretariat's timeline shows the request as waiting.")
    return "\n".join(lines) + "\n"


# --- writing ----------------------------------------------------------------------------------------


def render() -> dict[str, str]:
    """Every generated file: path relative to docs/contracts/ -> content."""
    files = {f"schemas/{schema_file(event)}": to_json(event_schema(event)) for event in events()}
    files["asyncapi.yaml"] = to_yaml(asyncapi())
    files["README.md"] = readme()
    return files


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """Files under ``out`` that a fresh generation would not write (a removed or renamed event)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and str(p.relative_to(out)) not in files)


def differences(out: Path = OUT) -> list[str]:
    files = render()
    changed = [name for name, text in files.items()
               if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text]
    return changed + [f"{name} (not generated any more)" for name in stale(out, files)]


def write(out: Path = OUT) -> list[str]:
    files = render()
    for name in stale(out, files) if out.exists() else []:
        (out / name).unlink()
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.contracts", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/contracts/ is not up to date")
    args = parser.parse_args(argv)
    if args.check:
        drift = differences()
        for name in drift:
            print(f"out of date: docs/contracts/{name}")
        if drift:
            print("run `make contracts`")
        return 1 if drift else 0
    written = write()
    print(f"docs/contracts: {len(written)} file(s) written" + (f": {', '.join(written)}" if written else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
