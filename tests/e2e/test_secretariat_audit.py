"""The staff audit is append-only for the secretariat's role by privilege, not by a trigger its owner
could drop: schema, table and functions belong to secretariat_audit, which nobody logs in as. The role
may insert, prune what is past a year, and read through the export function; a supervisor's CSV export
still works; the rows kept before the move are carried over."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import asyncpg
import pytest
from secretariat.app import MIGRATIONS
from secretariat.settings import SecretariatSettings

from devstack.stack import ROOT
from shared.db import create_pool, migrate
from tests.conftest import ADMIN_DSN, DB_PORT
from tests.staff import StaffClient

pytestmark = pytest.mark.e2e


async def test_the_secretariats_own_role_can_only_append_to_the_staff_audit_and_prune_what_is_past_a_year(chain):
    assert SecretariatSettings().audit_retention_days >= 365
    with pytest.raises(ValueError, match="greater than or equal to 365"):
        SecretariatSettings(audit_retention_days=364)
    async with chain.db.transaction():  # rows a year old, as only the audit's owner could write them
        await chain.db.execute("set local role secretariat_audit")
        old, recent = await chain.db.fetch(
            "insert into secretariat_audit.staff_audit(at, subject, name, via, action, outcome) values"
            " (now() - interval '400 days', 't', 'Test', 'console', 'search', 'test-old'),"
            " (now() - interval '364 days', 't', 'Test', 'console', 'search', 'test-recent') returning id"
        )
    service = await asyncpg.connect(chain.stack.env_for("secretariat")["DATABASE_URL"])
    try:
        assert await service.fetchval("select current_user") == "secretariat"
        # It owns no audit table (an owner may drop any trigger, or the table) and may only insert.
        assert (
            await service.fetchval(
                "select count(*) from pg_tables where tablename = 'staff_audit' and tableowner = current_user"
            )
            == 0
        )
        await service.execute(
            "insert into secretariat_audit.staff_audit(subject, name, via, action, outcome)"
            " values ('t', 'Test', 'console', 'search', 'ok')"
        )
        # Issue 21: it could write any time and any name; the database now sets both (a row with no open
        # staff session is nobody's, one naming an unknown session is refused).
        marker = f"forged {uuid.uuid4()}"
        await service.execute(
            "insert into secretariat_audit.staff_audit(at, subject, name, via, action, outcome, detail) values"
            " (now() - interval '30 days', 'u-super-1', 'Sophie Rossi', 'console', 'action', 'requested', $1)",
            marker,
        )
        kept = await chain.db.fetchrow(
            "select at, subject, name from secretariat_audit.staff_audit where detail = $1", marker
        )
        assert (kept["subject"], kept["name"]) == ("", "")
        assert abs((kept["at"] - await chain.db.fetchval("select now()")).total_seconds()) < 60
        with pytest.raises(asyncpg.RaiseError, match="staff session named is not open"):
            await service.execute(
                "insert into secretariat_audit.staff_audit(subject, name, via, action, outcome,"
                " session_hash) values ('x', 'x', 'console', 'view', 'ok', 'k1:made-up')"
            )
        for attack in (
            "select * from secretariat_audit.staff_session",
            "insert into secretariat_audit.staff_session(token_hash, subject, name, via, roles, departments)"
            " values ('k1:x', 'u-super-1', 'Sophie Rossi', 'console', '{}', '{}')",
            "select secretariat_audit.carry_over()",
        ):  # once, at migration 0002: done
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError)):
                await service.execute(attack)
        for attack in (
            "update secretariat_audit.staff_audit set reason = 'rewritten'",
            "delete from secretariat_audit.staff_audit",
            "truncate secretariat_audit.staff_audit",
            "select count(*) from secretariat_audit.staff_audit",
            "drop table secretariat_audit.staff_audit",
            "alter table secretariat_audit.staff_audit disable trigger all",
            "create table secretariat_audit.shadow (id int)",
            "create or replace function secretariat_audit.prune(retention_days int, batch int default 1)"
            " returns bigint language sql as 'select 0::bigint'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute(attack)
        for too_short in (0, 30, 364):
            with pytest.raises(asyncpg.RaiseError, match="at least 365 days"):
                await service.fetchval("select secretariat_audit.prune($1)", too_short)
        # The service may prune (the old row may already have gone with its own retention sweep, every
        # RETENTION_SWEEP_SECONDS): below, the old row is gone and the recent one kept either way.
        assert await service.fetchval("select secretariat_audit.prune(365)") >= 0
        # Read only through the export function: whole rows, newest first.
        newest = await service.fetch("select * from secretariat_audit.read(latest => 2)")
        assert len(newest) == 2 and newest[0]["id"] > newest[1]["id"]
    finally:
        await service.close()
    kept = {
        r["id"]
        for r in await chain.db.fetch(
            "select id from secretariat_audit.staff_audit where id = any($1)", [old["id"], recent["id"]]
        )
    }
    assert kept == {recent["id"]}


async def test_a_supervisor_exports_the_staff_audit_as_csv_and_a_secretary_may_not(chain, stack):
    supervisor = StaffClient(stack.url("secretariat"))
    secretary = StaffClient(stack.url("secretariat"))
    try:
        supervisor.sign_in("sophie")
        secretary.sign_in("alice")
        missing = uuid.uuid4()
        assert secretary.request("GET", f"/c/{missing}").status_code == 404  # audited as not-found
        csv = supervisor.request("GET", "/audit.csv")
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv"), csv.text[:300]
        header, *lines = csv.text.splitlines()
        assert header == "id,at,subject,name,via,action,convocation_id,department,reason,outcome,detail"
        assert any(f",view,{missing},,,not-found," in line and "Alice Martin" in line for line in lines), lines[-5:]
        assert supervisor.request("GET", "/audit").status_code == 200
        assert secretary.request("GET", "/audit.csv").status_code == 404
        exported = await chain.db.fetchval(
            "select count(*) from secretariat_audit.staff_audit"
            " where action = 'audit-export' and outcome = 'ok' and name = 'Sophie Rossi'"
        )
        assert exported >= 1
    finally:
        supervisor.close()
        secretary.close()


async def test_the_rows_kept_before_the_move_are_carried_over_into_the_append_only_schema(tmp_path):
    """A database at migration 0001 (the audit in the service's own schema, guarded by a trigger) with
    rows in it, then the release that moves them: every row is in secretariat_audit, in order."""
    database = f"convocations_audit_move_{uuid.uuid4().hex[:8]}"
    subprocess.run([str(ROOT / "scripts/db-setup.sh"), database], check=True, capture_output=True)
    first = tmp_path / "migrations"
    first.mkdir()
    shutil.copy(MIGRATIONS / "0001_secretariat.sql", first)
    dsn = f"postgresql://secretariat:secretariat@127.0.0.1:{DB_PORT}/{database}"
    try:
        pool = await create_pool(dsn, "secretariat", min_size=1, max_size=1)
        try:
            await migrate(pool, "secretariat", first)
            async with pool.acquire() as conn:
                for n in range(3):
                    await conn.execute(
                        "insert into staff_audit(at, subject, name, via, action, outcome, reason)"
                        " values (now() - make_interval(days => $1), 'u-1', 'Alice', 'console', 'action',"
                        " 'requested', $2)",
                        30 - n,
                        f"reason {n}",
                    )
            assert (await migrate(pool, "secretariat", MIGRATIONS))[0] == "service/0002_append_only_staff_audit.sql"
            async with pool.acquire() as conn:
                assert await conn.fetchval("select to_regclass('secretariat.staff_audit')") is None
                moved = await conn.fetch("select * from secretariat_audit.read() order by id")
        finally:
            await pool.close()
        assert [r["reason"] for r in moved] == ["reason 0", "reason 1", "reason 2"]
        assert [r["at"] for r in moved] == sorted(r["at"] for r in moved)
        # With their own times and names, each saying it was carried over (the database stamps new rows).
        assert {r["name"] for r in moved} == {"Alice"} and all(r["carried_at"] > r["at"] for r in moved)
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'drop database if exists "{database}" with (force)')
        finally:
            await admin.close()
