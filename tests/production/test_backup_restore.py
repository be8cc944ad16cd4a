"""Issue 18, item 3: backups that restore. The tier's PostgreSQL archives its WAL to an S3-compatible object
store from its first minute, with the barman-cloud tools and the bucket, server name and compression of
deploy/k8s/infra (what CloudNativePG's Barman Cloud plugin runs); the drill takes a base backup, lets more
letters through, restores a new cluster to a point in time between them, and starts a portal on it: the
letters from before that point open with their links and the one after it is not there."""

from __future__ import annotations

import dataclasses

import pytest

from devstack.stack import Stack, free_port
from tests.production.conftest import (
    HTTPS,
    archive_everything,
    base_backup,
    open_letter,
    patient_client,
    restore,
    send_letter,
)
from tests.waiting import eventually

pytestmark = pytest.mark.production


async def _stored(postgres, letter) -> None:
    """Wait until the portal has stored the letter's message (its own transaction, after the e-mail's)."""
    admin = await postgres.admin()
    try:
        await eventually(
            lambda: admin.fetchval(
                "select true from access_portal.message where convocation_id = $1::uuid", letter.convocation_id
            ),
            what="the portal's message",
        )
    finally:
        await admin.close()


async def test_a_point_in_time_restore_brings_back_the_letters_before_it_and_not_the_one_after(
    production, settings, postgres, object_store, broker, relay, sms_provider, pki, work_dir, tmp_path
):
    before_backup = await send_letter(production, broker, relay, "Convocation before the backup")
    await _stored(postgres, before_backup)
    backup_id = base_backup(object_store, postgres)
    after_backup = await send_letter(production, broker, relay, "Convocation in the WAL only")
    await _stored(postgres, after_backup)
    admin = await postgres.admin()
    try:
        target = await admin.fetchval("select clock_timestamp()")
    finally:
        await admin.close()
    too_late = await send_letter(production, broker, relay, "Convocation after the restore point")
    await _stored(postgres, too_late)
    await archive_everything(postgres)

    restored = await restore(object_store, postgres, backup_id, target, work_dir / "restored")
    portal = Stack(
        database=restored.database,
        exchange="",
        smtp_port=relay.port,
        sms_provider_url="",
        sms_account_sid="",
        sms_auth_token="",
        log_dir=tmp_path / "logs",
        ports={"access-portal": free_port()},
        tls={"access-portal": production.tls["access-portal"]},
        ca_file=str(pki.ca_file),
    )
    portal.settings = {
        "access-portal": {
            **production.settings["access-portal"],
            "DATABASE_URL": settings.database_url(production.settings["access-portal"]["DATABASE_URL"], restored.port),
        }
    }
    assert "access-portal" in HTTPS
    try:
        portal.start(["access-portal"], timeout=60)
        moved = production.url("access-portal")
        for letter in (before_backup, after_backup):
            link = letter.link.replace(moved, portal.url("access-portal"))
            pdf = await open_letter(patient_client(link, pki), dataclasses.replace(letter, link=link), sms_provider)
            assert pdf.status_code == 200 and pdf.content == letter.pdf, pdf.text[:300]
        gone = patient_client(too_late.link.replace(moved, portal.url("access-portal")), pki).open_link()
        assert gone.status_code == 404, gone.text[:300]
        admin = await restored.admin()
        try:
            found = await admin.fetch(
                "select id from issuer.convocation where id = $1::uuid union all"
                " select convocation_id from access_portal.message where convocation_id = $1::uuid",
                too_late.convocation_id,
            )
        finally:
            await admin.close()
        assert found == [], "the letter after the restore point came back"
    finally:
        portal.stop()
        restored.stop()
