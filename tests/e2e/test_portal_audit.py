"""Issue #4, point 7: the access audit — its own table, every access recorded, kept for the retention."""

from __future__ import annotations

import hashlib

import pytest

from access_portal.settings import PortalSettings
from shared import crypto
from tests.e2e.test_portal_helpers import PORTAL_KEY, letter, neighbour, random_mobile, wait_for

pytestmark = pytest.mark.e2e


async def test_the_audit_lives_apart_from_business_data_with_no_link_to_it(chain):
    columns = {r["column_name"] for r in await chain.db.fetch(
        "select column_name from information_schema.columns"
        " where table_schema = 'access_portal' and table_name = 'access_audit'")}
    assert {"at", "message_id", "action", "outcome", "client_hash"} <= columns
    constraints = await chain.db.fetch(
        "select conname from pg_constraint where contype = 'f' and (conrelid = 'access_portal.access_audit'::regclass"
        " or confrelid = 'access_portal.access_audit'::regclass)")
    assert constraints == []  # the audit outlives the messages it describes


async def test_every_access_is_audited_with_time_message_outcome_and_a_keyed_hash_of_the_client(chain):
    mail = await letter(chain, mobile=None)  # no number on file: the binding is audited too
    e164, national = random_mobile()
    mail.patient.open_link()
    mail.patient.client.head(mail.patient.page_url)
    assert mail.patient.request_code(national).status_code == 303
    code = await mail.code(to=e164)
    mail.guess(neighbour(code))
    mail.patient.enter_code(code)
    mail.patient.download("pdf")
    mail.patient.download("pdf", secret="")

    rows = await chain.db.fetch("select * from access_portal.access_audit where message_id = $1 order by id",
                                mail.message_id)
    trail = [(r["action"], r["outcome"]) for r in rows]
    for entry in [("view", "ok"), ("code-request", "sent"), ("code-view", "ok"), ("code-check", "wrong"),
                  ("code-check", "right"), ("binding", "first-use"), ("document-view", "ok"), ("download", "ok"),
                  ("download", "link-incomplete")]:
        assert entry in trail, entry
    assert trail.count(("view", "ok")) >= 2  # GET and HEAD
    assert all(r["at"] is not None for r in rows)
    # One client, recorded as a keyed hash of its address (not a plain hash anyone could recompute).
    assert {r["client_hash"] for r in rows} == {crypto.keyed_hash(PORTAL_KEY, "client", "127.0.0.1")}
    assert hashlib.sha256(b"127.0.0.1").hexdigest() not in {r["client_hash"] for r in rows}
    assert not any("127.0.0.1" in str(dict(r)) for r in rows)

    locked = await letter(chain)
    locked.patient.request_code(locked.national)
    code = await locked.code()
    for _ in range(5):
        locked.guess(neighbour(code))
    assert [e for e in await locked.audit() if e[0] != "view"] == [("code-request", "sent")] + [
        ("code-check", "wrong")] * 5 + [("lock", "60s")]


async def test_audit_rows_older_than_the_retention_are_pruned_by_the_running_portal(chain):
    assert PortalSettings().audit_retention_days == 365  # the default: one year
    ids = await chain.db.fetch(
        "insert into access_portal.access_audit(at, message_id, action, outcome) values"
        " (now() - interval '366 days', null, 'view', 'test-old'),"
        " (now() - interval '364 days', null, 'view', 'test-recent') returning id, outcome")
    by_outcome = {r["outcome"]: r["id"] for r in ids}
    await wait_for(lambda: chain.db.fetchval(
        "select count(*) = 0 from access_portal.access_audit where id = $1", by_outcome["test-old"]), timeout=10)
    assert await chain.db.fetchval("select count(*) from access_portal.access_audit where id = $1",
                                   by_outcome["test-recent"]) == 1
