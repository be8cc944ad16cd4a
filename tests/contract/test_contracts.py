"""The published contracts hold together: docs/contracts/ is what the models generate, every schema
accepts its own example and what an upstream system really sends, the producer/consumer matrix
matches the services' code, and the AsyncAPI document names a channel per event.

Offline and without a broker: what an integrator would check before wiring a system to the bus.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
from datetime import datetime, timedelta
from functools import cache

import jsonschema
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from devstack import contracts
from devstack.sample import convocation_event, sample_pdf
from shared import rejections, topology
from shared.contracts import CATALOGUE, ConvocationCreatedV1, Envelope

ROOT = contracts.ROOT
DOCS = ROOT / "docs" / "contracts"
SERVICES = ROOT / "services"
EVENTS = list(CATALOGUE.values())
EVENT_IDS = list(CATALOGUE)
SUBSCRIBE = re.compile(r"runtime\.consumer\.subscribe\(\s*(\w+)")
CONSTRUCTED = re.compile(r"\b(\w+V\d+)\(")  # a payload built in a service's code


@cache
def schema(routing_key: str) -> dict:
    return json.loads((DOCS / "schemas" / f"{routing_key}.json").read_text(encoding="utf-8"))


@cache
def asyncapi() -> dict:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))


def validator(routing_key: str) -> Draft202012Validator:
    return Draft202012Validator(schema(routing_key), format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(routing_key: str, message: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path)) or 'body'}: {e.message}" for e in validator(routing_key).iter_errors(message)]


# Services with no place on the bus: the key store answers the issuer and the portal over HTTP only.
OFF_THE_BUS = {"key-store"}


def service_subscriptions() -> dict[str, set[str]]:
    """Service directory -> routing keys it subscribes to, read from its app.py (services on the bus)."""
    by_name = {cls.__name__: key for key, cls in CATALOGUE.items()}
    found: dict[str, set[str]] = {}
    for app in sorted(SERVICES.glob("*/*/app.py")):
        if app.parts[-3] in OFF_THE_BUS:
            assert not SUBSCRIBE.findall(app.read_text(encoding="utf-8")), f"{app} subscribes: it is on the bus"
            continue
        names = SUBSCRIBE.findall(app.read_text(encoding="utf-8"))
        found[app.parts[-3]] = {by_name.get(name, f"<{name}: not in the catalogue>") for name in names}
    return found


# --- the files are generated, never edited ----------------------------------------------------------


def test_checked_in_contracts_equal_a_fresh_generation():
    drift = contracts.differences(DOCS)
    assert not drift, f"docs/contracts is out of date ({', '.join(drift)}): run `make contracts`"


def test_the_drift_check_catches_an_edited_catalogue_and_an_edited_event_table(tmp_path):
    shutil.copytree(DOCS, tmp_path / "contracts")
    architecture = tmp_path / "architecture.md"
    architecture.write_text((ROOT / "docs" / "architecture.md").read_text("utf-8"), "utf-8")
    assert contracts.differences(tmp_path / "contracts", architecture) == []
    readme = tmp_path / "contracts" / "README.md"
    readme.write_text(readme.read_text("utf-8").replace("every consumer", "some consumers", 1), "utf-8")
    architecture.write_text(
        architecture.read_text("utf-8").replace("| `email.sent.v1` | mailer |", "| `email.sent.v1` | postman |"),
        "utf-8",
    )
    assert contracts.differences(tmp_path / "contracts", architecture) == [
        "README.md",
        "../architecture.md (its event table)",
    ]


def test_every_rejection_reason_is_raised_where_its_registry_entry_says():
    """Each service's handlers raise exactly the reasons the registry (shared/rejections.py) gives them, and
    the shared consumer those it gives every consumer: the catalogue's "raised by" column is the code's."""
    raised: dict[str, set[str]] = {}
    for path in [ROOT / "shared" / "consumer.py", *sorted(SERVICES.glob("*/*/*.py"))]:
        where = rejections.EVERY_CONSUMER if path.parent.name == "shared" else path.parts[-3]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Rejected":
                reason = node.args[0]
                assert isinstance(reason, ast.Attribute), f"{path}: Rejected takes a reason of shared/rejections.py"
                raised.setdefault(getattr(rejections, reason.attr).code, set()).add(where)
    assert raised == {r.code: set(r.raised_by) for r in rejections.REASONS}


def test_there_is_one_schema_file_per_catalogue_entry():
    assert sorted(p.name for p in (DOCS / "schemas").glob("*.json")) == sorted(f"{key}.json" for key in CATALOGUE)


# --- JSON Schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("routing_key", EVENT_IDS)
def test_each_schema_is_a_draft_2020_12_schema_with_an_id_title_and_description(routing_key):
    s = schema(routing_key)
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith(f"/{routing_key}.json")
    assert s["title"] and s["description"]
    event = CATALOGUE[routing_key]
    assert s["properties"]["type"]["const"] == event.EVENT_TYPE
    assert s["properties"]["version"]["const"] == event.VERSION


@pytest.mark.parametrize("routing_key", EVENT_IDS)
def test_each_schema_validates_its_own_example_and_so_does_the_model(routing_key):
    examples = schema(routing_key)["examples"]
    assert examples, "every schema carries an example message"
    for example in examples:
        assert errors(routing_key, example) == []
        Envelope[CATALOGUE[routing_key]].model_validate(example)


@pytest.mark.parametrize("routing_key", EVENT_IDS)
def test_field_descriptions_from_the_models_reach_the_schema(routing_key):
    s = schema(routing_key)
    payload = s["$defs"][CATALOGUE[routing_key].__name__]
    for name, field in CATALOGUE[routing_key].model_fields.items():
        if field.description:
            assert payload["properties"][name].get("description") == field.description, name
    assert s["properties"]["correlation_id"]["description"]


def test_the_sample_upstream_event_validates_against_convocation_created():
    assert errors("convocation.created.v1", convocation_event()) == []


def test_a_sample_with_its_own_pdf_and_a_national_mobile_number_validates():
    event = convocation_event(pdf=sample_pdf("Convocation"), mobile="079 123 45 67", language="de")
    assert errors("convocation.created.v1", event) == []


def test_unknown_fields_are_accepted_as_the_versioning_rules_promise():
    event = convocation_event()
    event["added_later"] = "ignored"
    event["data"]["patient"]["preferred_name"] = "Marie"
    assert errors("convocation.created.v1", event) == []


def test_a_convocation_without_an_appointment_is_invalid():
    event = convocation_event()
    del event["data"]["appointment"]
    assert any("appointment" in e for e in errors("convocation.created.v1", event))


def test_a_convocation_in_an_unsupported_language_is_invalid():
    event = convocation_event(language="es")
    assert any("language" in e for e in errors("convocation.created.v1", event))


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda e: e.update(type="convocation.cancelled"), id="wrong-type"),
        pytest.param(lambda e: e.update(version=2), id="wrong-version"),
        pytest.param(lambda e: e.pop("event_id"), id="no-event-id"),
        pytest.param(lambda e: e.update(correlation_id="not-a-uuid"), id="bad-correlation-id"),
        pytest.param(lambda e: e["data"]["appointment"].pop("place"), id="no-place"),
        pytest.param(lambda e: e["data"].update(delivery="pigeon"), id="bad-delivery"),
        pytest.param(lambda e: e["data"]["patient"].update(name=""), id="empty-name"),
    ],
)
def test_other_broken_convocations_are_invalid(broken):
    event = convocation_event()
    broken(event)
    assert errors("convocation.created.v1", event)


def test_the_readme_example_is_the_schema_example():
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    example = schema("convocation.created.v1")["examples"][0]
    assert json.dumps(example, indent=2, ensure_ascii=False) in readme


# --- the producer/consumer matrix -------------------------------------------------------------------


@pytest.mark.parametrize("routing_key", EVENT_IDS)
def test_every_event_has_exactly_one_producer_but_those_a_second_party_publishes_too(routing_key):
    """The hospitals' events, which the gateway publishes too, and an erasure's confirmation, which each service
    that erased says of itself: their other producers are listed in ALSO_PUBLISHED_BY, never found by chance."""
    producers = [p.name for p in contracts.producers_of(CATALOGUE[routing_key])]
    if routing_key in topology.ALSO_PUBLISHED_BY:
        expected = {topology.BUS[routing_key][0], *topology.ALSO_PUBLISHED_BY[routing_key]}
        assert set(producers) == expected, routing_key
    else:
        assert len(producers) == 1, f"{routing_key} is published by {producers or 'nobody'}"


def test_the_matrix_names_only_catalogue_events():
    listed = {e for p in contracts.PARTIES for e in (*p.publishes, *p.consumes)}
    assert listed <= set(EVENTS)


def test_every_subscription_in_the_services_is_a_catalogue_event():
    for service, keys in service_subscriptions().items():
        assert keys <= set(CATALOGUE), f"{service} subscribes to {sorted(keys - set(CATALOGUE))}"


def test_the_services_subscribe_to_exactly_what_the_catalogue_says_they_consume():
    found = service_subscriptions()
    internal = {p.name: {e.routing_key() for e in p.consumes} for p in contracts.PARTIES if p.internal}
    assert set(found) == set(internal), "every service directory has an app.py and a row in the matrix"
    for service, documented in internal.items():
        assert found[service] == documented, (
            f"{service}: subscribes to {sorted(found[service])}, the catalogue says {sorted(documented)};"
            " change shared/topology.py BUS with the code, then run `make contracts`"
        )


def test_a_retired_subscription_is_a_service_s_and_no_longer_in_the_bus_table():
    services = {p.name for p in contracts.PARTIES if p.internal}
    for service, keys in topology.RETIRED.items():
        assert service in services, f"RETIRED names {service}, which is no service"
        assert not set(keys) & set(topology.consumed_by(service)), f"{service} both consumes and retired {keys}"


def test_a_service_builds_only_the_events_it_is_the_documented_producer_of():
    by_name = {cls.__name__: cls for cls in EVENTS}
    for party in (p for p in contracts.PARTIES if p.internal):
        package = next((SERVICES / party.name).glob("*/__init__.py")).parent
        built = {
            by_name[name]
            for path in package.glob("*.py")
            for name in CONSTRUCTED.findall(path.read_text(encoding="utf-8"))
            if name in by_name
        }
        assert built <= set(party.publishes), (
            f"{party.name} builds {sorted(e.routing_key() for e in built - set(party.publishes))},"
            " which another party produces"
        )


# --- AsyncAPI ---------------------------------------------------------------------------------------


def test_the_asyncapi_document_is_version_3_with_an_amqp_server():
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert {s["protocol"] for s in doc["servers"].values()} == {"amqp"}


def test_the_asyncapi_document_has_one_channel_per_catalogue_entry_on_the_topic_exchange():
    channels = asyncapi()["channels"]
    assert set(channels) == set(CATALOGUE)
    for key, channel in channels.items():
        assert channel["address"] == key
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] == "routingKey"
        assert amqp["exchange"] == {
            "name": contracts.EXCHANGE,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "/",
        }


def test_asyncapi_operations_follow_the_matrix_and_messages_are_persistent():
    operations = asyncapi()["operations"].values()
    for key, event in CATALOGUE.items():
        on_channel = [op for op in operations if op["channel"]["$ref"] == f"#/channels/{key}"]
        senders = [op for op in on_channel if op["action"] == "send"]
        receivers = [op for op in on_channel if op["action"] == "receive"]
        assert len(senders) == len(contracts.producers_of(event)) >= 1, key
        assert all(op["bindings"]["amqp"]["deliveryMode"] == 2 for op in senders)
        assert len(receivers) == len(contracts.consumers_of(event)), key
        assert all(op["bindings"]["amqp"]["ack"] for op in receivers)
        assert {op["x-queue"] for op in receivers} == {
            f"{contracts.EXCHANGE}.{c.name}.{key}" for c in contracts.consumers_of(event)
        }


def test_asyncapi_messages_carry_message_id_and_correlation_id():
    for message in asyncapi()["components"]["messages"].values():
        headers = message["headers"]
        assert {"message_id", "correlation_id"} <= set(headers["required"])
        assert message["correlationId"]["location"] == "$message.header#/correlation_id"
        example = message["examples"][0]
        assert example["headers"]["message_id"] == example["payload"]["event_id"]
        assert example["headers"]["correlation_id"] == example["payload"]["correlation_id"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_asyncapi_reference_resolves_inside_the_document():
    doc = asyncapi()
    for ref in set(_refs(doc)):
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


@pytest.mark.parametrize("routing_key", EVENT_IDS)
def test_asyncapi_payload_schemas_are_the_json_schemas_and_accept_the_examples(routing_key):
    doc = asyncapi()
    message = doc["components"]["messages"][CATALOGUE[routing_key].__name__]
    registry = Registry().with_resource("urn:asyncapi", Resource.from_contents(doc, default_specification=DRAFT7))
    payload = jsonschema.Draft7Validator({"$ref": "urn:asyncapi" + message["payload"]["$ref"]}, registry=registry)
    example = message["examples"][0]["payload"]
    assert list(payload.iter_errors(example)) == []
    assert example == schema(routing_key)["examples"][0]
    broken = copy.deepcopy(example)
    del broken["data"]
    assert list(payload.iter_errors(broken))


def test_examples_are_deterministic():
    assert contracts.render() == contracts.render()


def test_example_appointment_is_after_its_creation():
    example = schema("convocation.created.v1")["examples"][0]
    created = datetime.fromisoformat(example["occurred_at"])
    starts = datetime.fromisoformat(example["data"]["appointment"]["starts_at"])
    assert starts - created > timedelta(days=7)
    assert ConvocationCreatedV1.model_validate(example["data"]).patient.mobile == "+41791234567"


def test_readme_lists_every_event_and_every_dead_letter_reason():
    readme = (DOCS / "README.md").read_text(encoding="utf-8")
    for key in CATALOGUE:
        assert f"`{key}`" in readme
    for reason in contracts.rejection_reasons():
        assert f"| `{reason}` |" in readme
    for header in ("x-rejected-reason", "x-rejected-detail", "x-rejected-by", "x-original-routing-key"):
        assert header in readme
