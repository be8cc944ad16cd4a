"""Bus authorisation on the real RabbitMQ: each service and the hospital's system with its own broker
user holding exactly the permissions of shared/topology.py (as in deploy/k8s/infra), created in the
tests' vhost. A user publishes only its own routing keys; a forged producer is dead-lettered; a service
deletes the queues of its retired subscriptions, left by an earlier release, and keeps their dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import aio_pika
import aiormq
import pytest
from secretariat.app import create_app as secretariat_app
from secretariat.settings import SecretariatSettings

from access_portal.app import create_app as portal_app
from access_portal.settings import PortalSettings
from devstack.brokerusers import create_broker_users, delete_broker_users
from hospital_gateway.app import create_app as gateway_app
from hospital_gateway.settings import GatewaySettings
from issuer.app import create_app as issuer_app
from issuer.settings import IssuerSettings
from mailer.app import create_app as mailer_app
from mailer.settings import MailerSettings
from shared import runtime as runtime_module
from shared import topology
from shared.contracts import (
    Appointment,
    ConvocationCreatedV1,
    Department,
    EmailSentV1,
    Patient,
    Place,
    envelope,
)
from sms_gateway.app import create_app as sms_app
from sms_gateway.settings import SmsSettings
from tests.conftest import AMQP_URL, BROKER, RABBITMQCTL, VHOST
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.skipif(not RABBITMQCTL, reason="needs rabbitmqctl to create broker users")
APPS = {
    "issuer": (issuer_app, IssuerSettings),
    "mailer": (mailer_app, MailerSettings),
    "sms-gateway": (sms_app, SmsSettings),
    "access-portal": (portal_app, PortalSettings),
    "secretariat": (secretariat_app, SecretariatSettings),
    "hospital-gateway": (gateway_app, GatewaySettings),
}


@pytest.fixture(scope="module")
def exchange(exchange_name) -> str:
    return f"{exchange_name}.authz"


@pytest.fixture(scope="module")
def users(exchange):
    """{party: AMQP URL} of each party's own user, named <vhost>.<party> (users are broker-wide)."""
    prefix = f"{VHOST}."
    broker = urlsplit(AMQP_URL)
    urls = create_broker_users(
        VHOST, exchange, prefix=prefix, host=broker.hostname or "127.0.0.1", port=broker.port or 5672
    )
    yield urls
    if BROKER is None:  # the tests' own node goes at exit with its users (each rabbitmqctl call boots a VM)
        delete_broker_users(exchange, prefix=prefix)


async def _purge(exchange: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for key, (_, consumers) in topology.BUS.items():
            for consumer in consumers:
                name = topology.queue_name(exchange, consumer, key)
                for queue in (name, f"{name}.dlq"):
                    await (await channel.declare_queue(queue, passive=True)).purge()


def created() -> ConvocationCreatedV1:
    return ConvocationCreatedV1(
        convocation_id=uuid.uuid4(),
        patient=Patient(id="P-1", name="Marie Dupont", email="marie@example.ch", mobile="+41791234567"),
        appointment=Appointment(
            starts_at=datetime.now(timezone.utc) + timedelta(days=10),
            place=Place(name="Bâtiment A", address="Rue 4, 1205 Genève"),
            department=Department(name="Cardiologie", secretariat_phone="+41 22 372 33 11"),
        ),
    )


async def _publish(url: str, exchange: str, routing_key: str, body: bytes, *, to: str | None = None) -> None:
    """Publish with publisher confirms as the user of ``url``; raises what the broker answers."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(to or exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                body,
                message_id=str(uuid.uuid4()),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            timeout=10,
        )


def test_the_test_starts_every_service_of_the_bus_table():
    parties = {owner for owner, _ in topology.BUS.values()} | {c for _, cs in topology.BUS.values() for c in cs}
    assert set(APPS) == parties - topology.OUTSIDE


async def test_each_service_runs_as_its_own_user_and_dead_letters_an_event_with_a_forged_producer(users, exchange):
    """The services' own wiring (queues, DLQs, retry queues, the hospital's queues) declares and
    consumes under exactly the derived permissions; the issuer parks a convocation.created whose
    envelope names another producer, with the reason, even though the hospital's user sent it."""
    runtimes = []
    try:
        for service, (create_app, settings_cls) in APPS.items():
            runtime = create_app(settings_cls(amqp_url=users[service], events_exchange=exchange)).state.runtime
            runtimes.append(runtime)
            await runtime.connect_bus()  # raises ACCESS_REFUSED on anything the user may not do
            await runtime.broker.start()
        forged = envelope(created(), producer="access-portal", correlation_id=uuid.uuid4())
        await _publish(
            users[topology.UPSTREAM_PRODUCER], exchange, "convocation.created.v1", forged.model_dump_json().encode()
        )
        dlq = topology.queue_name(exchange, "issuer", "convocation.created.v1") + ".dlq"
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            queue = await (await connection.channel()).declare_queue(dlq, passive=True)
            parked = await eventually(
                lambda: queue.get(no_ack=True, fail=False, timeout=PATIENCE), what="the forged event's dead-lettering"
            )
        assert parked.headers["x-rejected-reason"] == "wrong-producer"
        assert "hospital-his" in parked.headers["x-rejected-detail"]
        assert json.loads(parked.body)["event_id"] == str(forged.event_id)
    finally:
        for runtime in runtimes:
            await runtime.broker.stop()
        await _purge(exchange)


@pytest.mark.parametrize("party", [*APPS, topology.UPSTREAM_PRODUCER, topology.PRINT_ROOM])
async def test_a_user_may_publish_its_own_routing_keys_and_the_broker_refuses_every_other(users, exchange, party):
    try:
        for routing_key in topology.BUS:
            body = (
                envelope(
                    EmailSentV1(
                        message_id=uuid.uuid4(),
                        convocation_id=uuid.uuid4(),
                        smtp_message_id="<x>",
                        accepted_at=datetime.now(timezone.utc),
                    ),
                    producer=party,
                    correlation_id=uuid.uuid4(),
                )
                .model_dump_json()
                .encode()
            )
            if party in topology.producers(routing_key):  # the owner, or the gateway for the hospital's two
                await _publish(users[party], exchange, routing_key, body)  # confirmed
            else:
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await _publish(users[party], exchange, routing_key, body)
    finally:
        await _purge(exchange)


@pytest.mark.parametrize("party", [*APPS, topology.UPSTREAM_PRODUCER, topology.PRINT_ROOM])
async def test_a_user_can_neither_read_nor_declare_nor_dead_letter_into_another_partys_queues(users, exchange, party):
    others = [
        (c, k)
        for k, (_, consumers) in topology.BUS.items()
        for c in consumers
        if topology.producer_name(c) != party and not (c in topology.OUTSIDE and party == "issuer")
    ]
    for consumer, key in others[:3]:
        name = topology.queue_name(exchange, consumer, key)
        connection = await aio_pika.connect(users[party])
        async with connection:
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                queue = await (await connection.channel()).declare_queue(name, passive=True)
                await queue.get(no_ack=False, fail=False)
        connection = await aio_pika.connect(users[party])
        async with connection:
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await (await connection.channel()).declare_queue(f"{name}.intruder", durable=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _publish(users[party], exchange, name, b"{}", to=topology.dead_letter_exchange(exchange).name)


async def _old_release_queue(exchange: str, service: str, routing_key: str) -> str:
    """The consumer queue an earlier release declared, bound, with an event waiting in it and a dead
    letter in its DLQ (declared as the administrator, as that release's user is not at hand)."""
    name = topology.queue_name(exchange, service, routing_key)
    queue = topology.consumer_queue(exchange, service, routing_key)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(
            topology.dead_letter_exchange(exchange).name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        declared = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum", **queue.arguments}
        )
        await declared.bind(events, routing_key=routing_key)
        dlq = await channel.declare_queue(f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
        await dlq.bind(dlx, routing_key=name)
        await events.publish(aio_pika.Message(b"{}"), routing_key=routing_key, mandatory=True)
        await dlx.publish(aio_pika.Message(b"{}"), routing_key=name, mandatory=True)
    return name


async def _depth(name: str) -> int | None:
    """Ready messages of a queue, or None if there is no such queue."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        try:
            declared = await (await connection.channel()).declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return declared.declaration_result.message_count


async def _start_bus(url: str, exchange: str):
    runtime = portal_app(PortalSettings(amqp_url=url, events_exchange=exchange)).state.runtime
    await runtime.connect_bus()  # as its own user: ACCESS_REFUSED if it may not delete its retired queues
    return runtime


async def test_a_retired_queue_is_deleted_at_startup_and_its_dlq_only_once_emptied(users, exchange):
    assert "email.sent.v1" in topology.RETIRED["access-portal"]
    assert "access-portal" not in topology.BUS["email.sent.v1"][1]
    name = await _old_release_queue(exchange, "access-portal", "email.sent.v1")
    assert await _depth(name) == 1 and await _depth(f"{name}.dlq") == 1
    runtime = await _start_bus(users["access-portal"], exchange)
    try:
        assert not runtime.retired_queues_left
        assert await _depth(name) is None, "the retired queue is still there"
        assert await _depth(f"{name}.dlq") == 1, "the DLQ's dead letter must wait for an operator"
    finally:
        await runtime.broker.stop()

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:  # the operator purges it (convocations-admin dlq purge)
        await (await (await connection.channel()).get_queue(f"{name}.dlq", ensure=False)).purge()
    runtime = await _start_bus(users["access-portal"], exchange)
    try:
        assert await _depth(f"{name}.dlq") is None, "an empty retired DLQ is deleted at the next start"
    finally:
        await runtime.broker.stop()


async def test_a_retired_queue_still_consumed_by_the_previous_release_is_deleted_once_it_is_not(
    users, exchange, monkeypatch
):
    """Deleted under a replica of the previous release (a rolling update), it would come back as that
    replica recovers; the service leaves it and looks again until nobody consumes it."""
    monkeypatch.setattr(runtime_module, "RETIRED_QUEUES_RETRY_SECONDS", 0.2)
    name = await _old_release_queue(exchange, "access-portal", "email.sent.v1")
    old_release = await aio_pika.connect(AMQP_URL)
    try:
        queue = await (await old_release.channel()).get_queue(name, ensure=False)

        async def handled(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()

        await queue.consume(handled)
        runtime = await _start_bus(users["access-portal"], exchange)
        try:
            assert runtime.retired_queues_left
            assert await _depth(name) is not None and await _depth(f"{name}.dlq") == 1
            await old_release.close()  # its replicas are gone
            await asyncio.wait_for(runtime._delete_retired_queues_later(), 10)  # started by runtime.start()
            assert not runtime.retired_queues_left
            assert await _depth(name) is None
            assert await _depth(f"{name}.dlq") == 1
        finally:
            await runtime.broker.stop()
    finally:
        if not old_release.is_closed:
            await old_release.close()
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).queue_delete(f"{name}.dlq")


async def test_retired_queue_housekeeping_never_stops_a_start_and_keeps_the_queue_gone(users, exchange, monkeypatch):
    """A failed deletion is housekeeping, not a reason for the patients' portal not to start; and a pod of
    the previous release that reconnects after the deletion declares its queue again: it goes again."""
    monkeypatch.setattr(runtime_module, "RETIRED_QUEUES_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(runtime_module, "RETIRED_QUEUES_RECHECK_SECONDS", 0.2)
    delete = topology.delete_retired_queues

    async def refused(*args, **kwargs) -> bool:
        raise aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED")

    monkeypatch.setattr(topology, "delete_retired_queues", refused)
    name = await _old_release_queue(exchange, "access-portal", "email.sent.v1")
    runtime = await _start_bus(users["access-portal"], exchange)
    keeper = None
    try:
        assert runtime.retired_queues_left and await _depth(name) == 1
        monkeypatch.setattr(topology, "delete_retired_queues", delete)
        keeper = asyncio.create_task(runtime._keep_retired_queues_deleted())  # started by runtime.start()

        async def gone() -> bool:
            return await _depth(name) is None

        for round_ in ("after the failure", "after an old pod declared it again"):
            await eventually(gone, what=f"the retired queue's deletion {round_}")
            if round_ == "after the failure":
                await _old_release_queue(exchange, "access-portal", "email.sent.v1")
        assert not keeper.done(), "the look-out lasts as long as the service"
    finally:
        if keeper is not None:
            keeper.cancel()
        await runtime.broker.stop()
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            await (await connection.channel()).queue_delete(f"{name}.dlq")


async def test_retired_queue_housekeeping_leaves_no_channel_open(users, exchange):
    """Looking up a missing queue closes its channel; on the service's robust connection such channels
    were reopened and kept, two per look every ten minutes until the connection ran out of channels."""
    import subprocess

    runtime = await _start_bus(users["access-portal"], exchange)
    try:

        def portal_channels() -> int:
            # rabbitmqctl boots an Erlang VM: seconds alone, over a minute on two cores under load.
            out = subprocess.run(
                [RABBITMQCTL, "list_channels", "user"], capture_output=True, text=True, timeout=180, check=True
            ).stdout
            return sum(1 for line in out.splitlines() if line.strip() == f"{VHOST}.access-portal")

        await asyncio.sleep(1)  # the start's own look-ups settle
        before = portal_channels()
        for _ in range(3):
            assert await runtime._delete_retired_queues()  # nothing left to delete: two look-ups each
        await asyncio.sleep(1)  # a robust channel reopens a round trip after the broker closed it
        assert portal_channels() == before
    finally:
        await runtime.broker.stop()
