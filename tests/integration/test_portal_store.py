"""The portal's message store on the real Postgres: a revocation is never undone by the message arriving late."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from access_portal import store
from access_portal.app import MIGRATIONS
from shared.db import migrate
from tests.integration.conftest import throwaway_schema


@pytest.fixture(scope="module")
async def pool(test_database):
    async with throwaway_schema(test_database, "portal_itest") as (name, _, pool):
        await migrate(pool, name, MIGRATIONS)
        yield pool


def sealed(message_id: uuid.UUID) -> dict:
    return dict(
        message_id=message_id,
        convocation_id=uuid.uuid4(),
        patient_ref="ref-1",
        language="fr",
        key_id="k1",
        document_nonce=b"n" * 12,
        document_ciphertext=b"sealed document",
        details_nonce=b"d" * 12,
        details_ciphertext=b"sealed details",
        expires_at=datetime.now(timezone.utc) + timedelta(days=3),
        secretariat_phone="+41 22 000 00 00",
        secretariat_email=None,
        phone_hash=None,
        phone_hint=None,
        phone_enc=None,
        public_phone=None,
        public_email=None,
        patient_refs=[],
    )


async def test_a_message_whose_revocation_came_first_is_stored_revoked_and_unreadable(pool):
    """message.sealed and message.revoked come through two queues (and a sealed message may wait for its
    batch): a superseded or cancelled letter must not become readable because its revocation won the race."""
    for reason, state in (("superseded", "revoked"), ("cancelled", "revoked"), ("expired", "expired")):
        mid = uuid.uuid4()
        async with pool.acquire() as conn:
            await store.revoke_message(conn, mid, reason)
            assert await store.insert_message(conn, **sealed(mid))
            row = await store.get_message(conn, mid)
            assert (row.state, row.revoked_reason) == (state, reason)
            assert (row.document_ciphertext, row.details_ciphertext) == (None, None)
            assert await conn.fetchval("select count(*) from revoked_early where message_id = $1", mid) == 0


async def test_a_message_stored_then_revoked_is_revoked_in_place_and_leaves_nothing_waiting(pool):
    mid = uuid.uuid4()
    async with pool.acquire() as conn:
        assert await store.insert_message(conn, **sealed(mid))
        assert (await store.get_message(conn, mid)).state == "active"
        await store.revoke_message(conn, mid, "superseded")
        row = await store.get_message(conn, mid)
        assert (row.state, row.document_ciphertext) == ("revoked", None)
        assert await conn.fetchval("select count(*) from revoked_early") == 0
        await store.revoke_message(conn, mid, "superseded")  # a redelivery changes nothing
        assert await conn.fetchval("select count(*) from revoked_early") == 0


async def test_a_revocation_and_its_message_handled_at_the_same_time_leave_the_message_revoked(pool):
    """Either order, each transaction still open when the other starts: the revocation must not miss the
    message (stored, not committed yet), and the message must not miss the revocation (the same)."""
    for first in ("message", "revocation"):
        mid = uuid.uuid4()
        async with pool.acquire() as a, pool.acquire() as b:
            await a.execute("begin")
            await b.execute("begin")
            if first == "message":
                await store.insert_message(a, **sealed(mid))
                second = asyncio.create_task(store.revoke_message(b, mid, "cancelled"))
            else:
                await store.revoke_message(a, mid, "cancelled")
                second = asyncio.create_task(store.insert_message(b, **sealed(mid)))
            await asyncio.sleep(0.3)
            assert not second.done(), "the second waits for the first"
            await a.execute("commit")
            await asyncio.wait_for(second, 10)
            await b.execute("commit")
            row = await store.get_message(a, mid)
            assert (first, row.state, row.document_ciphertext) == (first, "revoked", None)
            assert await a.fetchval("select count(*) from revoked_early where message_id = $1", mid) == 0


async def test_the_portal_learns_who_asked_for_paper_and_when_even_before_its_message_arrives(pool):
    """The secretariat's "send by post now" reaches the portal as postal.progress (issuer -> portal), on a queue
    of its own: the paper row records who asked and when, whichever comes first, and a drop forgets the
    request so that paper may be asked again."""
    from access_portal.handlers import PortalHandlers
    from access_portal.phones import Phones
    from access_portal.settings import PortalSettings
    from shared.consumer import Delivery
    from shared.contracts import PostalProgressV1, envelope

    settings = PortalSettings()
    handlers = PortalHandlers(settings, Phones(settings.portal_secret_key, settings.portal_field_key))
    mid, asked_at = uuid.uuid4(), datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)

    async def report(conn, step: str, at: datetime, reason: str | None = None) -> None:
        payload = PostalProgressV1(message_id=mid, convocation_id=uuid.uuid4(), step=step, reason=reason, at=at)
        await handlers.on_postal_progress(
            conn, Delivery(envelope(payload, producer="issuer", correlation_id=payload.convocation_id), 0, "q")
        )

    async with pool.acquire() as conn:
        await report(conn, "requested", asked_at, "secretariat")  # before message.sealed
        assert await store.insert_message(conn, **sealed(mid))
        paper = await store.paper_of(conn, mid)
        assert (paper["reason"], paper["requested_at"]) == ("secretariat", asked_at)
        await report(conn, "requested", asked_at + timedelta(minutes=5), "secretariat")  # redelivered
        await report(conn, "posted", asked_at + timedelta(hours=3))
        paper = await store.paper_of(conn, mid)
        assert (paper["reason"], paper["requested_at"], paper["posted_at"]) == (
            "secretariat",
            asked_at,
            asked_at + timedelta(hours=3),
        )
        other = uuid.uuid4()
        mid, kept = other, mid
        await report(conn, "requested", asked_at, "not-downloaded")
        await report(conn, "cancelled", asked_at + timedelta(minutes=1))
        assert (await store.paper_of(conn, other))["requested_at"] is None
        assert (await store.paper_of(conn, kept))["requested_at"] == asked_at
