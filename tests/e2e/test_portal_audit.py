"""Issue #4, point 7: the access audit — its own table, every access recorded, kept for the retention."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid

import asyncpg
import httpx
import pytest

from access_portal.settings import PortalSettings
from devstack.stack import http
from shared import crypto
from tests.e2e.test_portal_helpers import PORTAL_KEY, letter, neighbour, random_mobile
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_the_audit_lives_apart_from_business_data_with_no_link_to_it(chain):
    columns = {
        r["column_name"]
        for r in await chain.db.fetch(
            "select column_name from information_schema.columns"
            " where table_schema = 'portal_audit' and table_name = 'access_audit'"
        )
    }
    assert {"at", "message_id", "action", "outcome", "client_hash"} <= columns
    constraints = await chain.db.fetch(
        "select conname from pg_constraint where contype = 'f' and (conrelid = 'portal_audit.access_audit'::regclass"
        " or confrelid = 'portal_audit.access_audit'::regclass)"
    )
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

    rows = await chain.db.fetch(
        "select * from portal_audit.access_audit where message_id = $1 order by id", mail.message_id
    )
    trail = [(r["action"], r["outcome"]) for r in rows]
    for entry in [
        ("view", "ok"),
        ("code-request", "sent"),
        ("code-view", "ok"),
        ("code-check", "wrong"),
        ("code-check", "right"),
        ("binding", "first-use"),
        ("document-view", "ok"),
        ("download", "ok"),
        ("download", "link-incomplete"),
    ]:
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
        ("code-check", "wrong")
    ] * 5 + [("lock", "60s")]


async def test_audit_rows_older_than_the_retention_are_pruned_by_the_running_portal(chain):
    assert PortalSettings().audit_retention_days == 365  # the default: one year
    ids = await chain.db.fetch(
        "insert into portal_audit.access_audit(at, message_id, action, outcome) values"
        " (now() - interval '366 days', null, 'view', 'test-old'),"
        " (now() - interval '364 days', null, 'view', 'test-recent') returning id, outcome"
    )
    by_outcome = {r["outcome"]: r["id"] for r in ids}
    await eventually(
        lambda: chain.db.fetchval(
            "select count(*) = 0 from portal_audit.access_audit where id = $1", by_outcome["test-old"]
        )
    )
    assert (
        await chain.db.fetchval(
            "select count(*) from portal_audit.access_audit where id = $1", by_outcome["test-recent"]
        )
        == 1
    )


async def test_the_portals_own_role_can_only_append_to_the_audit_and_prune_what_is_past_the_retention(chain):
    """Issue 7, item 14: the role the portal runs as cannot rewrite, delete, empty or drop the audit,
    nor read it; the one delete it may run spares everything younger than a year."""
    mail = await letter(chain)
    mail.patient.open_link()
    assert ("view", "ok") in await mail.audit()  # the running portal appends
    old = await chain.db.fetchval(
        "insert into portal_audit.access_audit(at, action, outcome)"
        " values (now() - interval '400 days', 'view', 'test-very-old') returning id"
    )
    portal = await asyncpg.connect(chain.stack.env_for("access-portal")["DATABASE_URL"])
    try:
        assert await portal.fetchval("select current_user") == "access_portal"
        for attack in (
            "update portal_audit.access_audit set outcome = 'forged'",
            "delete from portal_audit.access_audit",
            "truncate portal_audit.access_audit",
            "select count(*) from portal_audit.access_audit",
            "drop table portal_audit.access_audit",
            "alter table portal_audit.access_audit disable trigger all",
            "create or replace function portal_audit.prune(retention_days int, batch int default 1)"
            " returns bigint language sql as 'select 0::bigint'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await portal.execute(attack)
        for too_short in (0, 30, 364):
            with pytest.raises(asyncpg.RaiseError, match="at least 365 days"):
                await portal.fetchval("select portal_audit.prune($1)", too_short)
        await portal.execute("insert into portal_audit.access_audit(action, outcome) values ('view', 'test-append')")
        assert await portal.fetchval("select portal_audit.prune(365)") >= 0
    finally:
        await portal.close()
    assert await chain.db.fetchval("select count(*) from portal_audit.access_audit where id = $1", old) == 0
    assert ("view", "ok") in await mail.audit()  # nothing younger than the retention went
    assert await chain.db.fetchval("select count(*) from portal_audit.access_audit where outcome = 'forged'") == 0
    assert await chain.db.fetchval(
        "select has_table_privilege('portal_audit_reader', 'portal_audit.access_audit',"
        " 'select') and not has_table_privilege('portal_audit_reader',"
        " 'portal_audit.access_audit', 'update')"
    )


def unknown_links_counted(base: str) -> float:
    text = http("GET", base + "/metrics", timeout=5).text
    match = re.search(r"^convocations_portal_unknown_links_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_requests_for_unknown_ids_write_no_audit_row_and_are_only_counted(chain):
    """Issue 7, item 12: 500 requests for random ids must not add 500 rows kept a year."""
    mail = await letter(chain)
    base = mail.patient.base
    started = await chain.db.fetchval("select now()")
    counted = unknown_links_counted(base)
    ids = [uuid.uuid4() for _ in range(500)]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for n, message_id in enumerate(ids):
            route = ("", "/code", "/document", "/not-my-number")[n % 4]
            assert (await client.get(f"/m/{message_id}{route}")).status_code == 404
            for post in ("/code", "/verify", "/download/pdf", "/logout"):
                if n % 50 == 0:  # every route once in a while, forms included
                    posted = await client.post(f"/m/{message_id}{post}", data={"csrf": "x"})
                    assert posted.status_code == 303 and posted.headers["location"].startswith(f"/m/{message_id}")
                    assert (await client.get(posted.headers["location"])).status_code == 404
        assert (await client.get("/m/not-an-id")).status_code == 404
    assert (
        await chain.db.fetchval(
            "select count(*) from portal_audit.access_audit where at >= $1 and (message_id = any($2::uuid[])"
            " or message_id is null)",
            started,
            ids,
        )
        == 0
    )
    assert unknown_links_counted(base) - counted >= 500
    mail.patient.open_link()  # a message that exists is audited as before
    assert ("view", "ok") in await mail.audit()


async def test_the_audited_client_is_the_address_the_trusted_proxy_saw_not_a_spoofed_forwarded_for(chain):
    """Issue 7, item 8: the portal believes X-Forwarded-For only from its proxies (FORWARDED_ALLOW_IPS,
    here the loopback network the tests play the ingress from) and takes the right-most other hop."""
    mail = await letter(chain)
    spoofed, real = "198.51.100.66", "203.0.113.7"
    # What a client sent ("198.51.100.66"), then what the ingress saw ("203.0.113.7"), then an inner proxy.
    seen = http("GET", mail.patient.page_url, headers={"X-Forwarded-For": f"{spoofed}, {real}, 127.0.0.9"})
    assert seen.status_code == 200
    rows = await chain.db.fetch(
        "select client_hash from portal_audit.access_audit where message_id = $1 and action = 'view'", mail.message_id
    )
    assert [r["client_hash"] for r in rows] == [crypto.keyed_hash(PORTAL_KEY, "client", real)]
    assert crypto.keyed_hash(PORTAL_KEY, "client", spoofed) not in await chain.dump_all_tables()


def test_a_portal_told_to_believe_every_forwarded_for_refuses_to_start(chain, tmp_path):
    """Issue 7, item 8: the Kubernetes config had FORWARDED_ALLOW_IPS=*, with which the audited client
    address was whatever the client put first in X-Forwarded-For. A portal so configured now stops at
    start and names the setting."""
    believer = dataclasses.replace(
        chain.stack, log_dir=tmp_path, ports={}, processes={}, extra_env={"access-portal": {"FORWARDED_ALLOW_IPS": "*"}}
    )
    try:
        with pytest.raises(RuntimeError, match="exited at start") as refused:
            believer.start(["access-portal"])
    finally:
        believer.stop()
    assert "FORWARDED_ALLOW_IPS" in str(refused.value)
