"""The AsyncAPI 3.0 document and one JSON Schema per event, generated from the pydantic models of
shared/contracts.py and the producer/consumer table of shared/topology.py."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from devstack.contracts.examples import example_message, example_properties
from devstack.contracts.parties import EXCHANGE, PARTIES, consumers_of, events, producers_of, schema_file, summary
from shared import topology
from shared.contracts import Envelope, EventPayload

# Where the schema files are meant to be published; $id must be an absolute URI.
SCHEMA_BASE_URI = "https://convocations.hug.example/contracts/schemas/"
# Bump the minor version when an event or a field is added. A breaking change is a new routing key
# (``.v2``) published beside the old one, never a new major version of this document.
DOCUMENT_VERSION = "1.0.0"
AMQP_BINDING_VERSION = "0.3.0"


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
        return {
            k: (prefix + v.removeprefix("#/$defs/") if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, prefix))
            for k, v in node.items()
        }
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
            "message_id": {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's event_id (the consumers' idempotency key).",
            },
            "correlation_id": {
                "type": "string",
                "format": "uuid",
                "description": "The convocation id: the envelope's correlation_id.",
            },
            "type": {"type": "string", "const": event.EVENT_TYPE, "description": "The event name."},
            "content_type": {"type": "string", "const": "application/json"},
            "delivery_mode": {"type": "integer", "const": 2, "description": "Persistent."},
            "x-producer": {
                "type": "string",
                "description": "Header set by this system's services: the producing service.",
            },
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
            "examples": [
                {
                    "name": f"{event.EVENT_TYPE.replace('.', '-')}-example",
                    "summary": "A realistic message (ciphertexts are illustrative bytes).",
                    "headers": example_properties(event),
                    "payload": example_message(event),
                }
            ],
        }
        consumers = consumers_of(event)
        channels[key] = {
            "address": key,
            "title": f"{event.EVENT_TYPE} v{event.VERSION}",
            "summary": summary(event),
            "description": (
                f"Routing key '{key}' on the topic exchange '{EXCHANGE}'."
                f" Producer: {' or '.join(p.label for p in producers_of(event))}."
                f" Consumers: {', '.join(c.label for c in consumers) or 'none yet'}."
            ),
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        channel_ref = {"$ref": f"#/channels/{key}"}
        message_ref = [{"$ref": f"#/channels/{key}/messages/{name}"}]
        for producer in producers_of(event):
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
                "Events exchanged by the hospital's systems and the Convocations services"
                f" ({', '.join(p.name for p in PARTIES if p.internal)}), which deliver appointment letters by"
                " e-mailed link and SMS code."
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
                "variables": {
                    "host": {
                        "default": "localhost:5672",
                        "description": "host:port of the broker; localhost:5672 for development.",
                    }
                },
                "security": [{"$ref": "#/components/securitySchemes/brokerUser"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "brokerUser": {
                    "type": "userPassword",
                    "description": "One broker user per service and per upstream system.",
                },
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
