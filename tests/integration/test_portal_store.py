"""The portal's message store on the real Postgres: a revocation is never undone by the message arriving late."""

from __future__ import annotations

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
    return dict(message_id=message_id, convocation_id=uuid.uuid4(), patient_ref="ref-1", language="fr", key_id="k1",
                document_nonce=b"n" * 12, document_ciphertext=b"sealed document", details_nonce=b"d" * 12,
                details_ciphertext=b"sealed details", expires_at=datetime.now(timezone.utc) + timedelta(days=3),
                secretariat_phone="+41 22 000 00 00", secretariat_email=None, phone_hash=None, phone_hint=None,
                phone_enc=None, public_phone=None, public_email=None, patient_refs=[])


async def test_a_message_whose_revocation_came_first_is_stored_revoked_and_unreadable(pool):
    """message.sealed and message.revoked come through two queues (and a sealed message may wait for its
    batch): a superseded or cancelled letter must not become readable because its revocation won the race."""
    for reason, state in (("superseded", "revoked"), ("cancelled", "revoked"), ("expired", "expired")):
        mid = uuid.uuid4()
        async with pool.acquire() as conn:
            await store.revoke_message(conn, mid, reason)
            assert await store.insert_message(conn, **sealed(mid))
            row = await store.get_message(conn, mid)
            assert (row["state"], row["revoked_reason"]) == (state, reason)
            assert (row["document_ciphertext"], row["details_ciphertext"]) == (None, None)
            assert await conn.fetchval("select count(*) from revoked_early where message_id = $1", mid) == 0


async def test_a_message_stored_then_revoked_is_revoked_in_place_and_leaves_nothing_waiting(pool):
    mid = uuid.uuid4()
    async with pool.acquire() as conn:
        assert await store.insert_message(conn, **sealed(mid))
        assert (await store.get_message(conn, mid))["state"] == "active"
        await store.revoke_message(conn, mid, "superseded")
        row = await store.get_message(conn, mid)
        assert (row["state"], row["document_ciphertext"]) == ("revoked", None)
        assert await conn.fetchval("select count(*) from revoked_early") == 0
        await store.revoke_message(conn, mid, "superseded")  # a redelivery changes nothing
        assert await conn.fetchval("select count(*) from revoked_early") == 0
