"""Who publishes and who consumes each event, from shared/topology.py ``BUS`` (the one table that the
services' subscriptions, their producer check and their broker permissions follow): the catalogue, the
AsyncAPI operations, the architecture's event table and the contract tests read it
(docs/architecture.md#events)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared import topology
from shared.contracts import CATALOGUE, EventPayload
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
EXCHANGE = ServiceSettings.model_fields["events_exchange"].default
UPSTREAM = topology.UPSTREAM


@dataclass(frozen=True)
class Party:
    name: str  # the service name; also the middle part of its queue names
    label: str
    publishes: tuple[type[EventPayload], ...]
    consumes: tuple[type[EventPayload], ...]
    internal: bool = True  # one of our services: its subscriptions are checked against its app.py


def _party(name: str, label: str | None = None) -> Party:
    return Party(
        name,
        label or name,
        publishes=tuple(CATALOGUE[key] for key in topology.published_by(name)),
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
    _party(topology.GATEWAY),
)


def producers_of(event: type[EventPayload]) -> list[Party]:
    return [p for p in PARTIES if event in p.publishes]


def producer_of(event: type[EventPayload]) -> Party:
    """The event's owner (shared/topology.py BUS); ``producers_of`` adds the parties that publish it too."""
    owner = topology.BUS[event.routing_key()][0]
    return next(p for p in PARTIES if p.name == owner)


def consumers_of(event: type[EventPayload]) -> list[Party]:
    return [p for p in PARTIES if event in p.consumes]


def events() -> list[type[EventPayload]]:
    return [CATALOGUE[key] for key in CATALOGUE]


def summary(event: type[EventPayload]) -> str:
    return " ".join((event.__doc__ or "").split())


def schema_file(event: type[EventPayload]) -> str:
    return f"{event.routing_key()}.json"
