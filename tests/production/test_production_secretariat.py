"""Issue 9: the secretariat started as the production overlay ships it (its settings, Secret keys, broker
user and database role), signing staff in through the hospital's provider over HTTPS: a secretary finds
the test's convocation, sends it by post, the issuer carries it out and the timeline shows it."""

from __future__ import annotations

import re

import asyncpg
import pytest

from devstack.sample import convocation_event, publish, sample_pdf
from shared.topology import UPSTREAM_PRODUCER
from tests.e2e.conftest import random_email
from tests.staff import StaffClient
from tests.waiting import eventually

pytestmark = pytest.mark.production


async def _page_until(staff: StaffClient, path: str, pattern: str, what: str):
    def shown():
        page = staff.request("GET", path)
        return page if page.status_code == 200 and re.search(pattern, page.text) else None

    return await eventually(shown, what=what)


async def test_a_secretary_signs_in_through_the_hospitals_provider_and_sends_a_convocation_by_post(
    production, broker, relay, pki, sso
):
    exchange = production.settings["issuer"]["EVENTS_EXCHANGE"]
    email = random_email()
    event = convocation_event(email=email, mobile=None, pdf=sample_pdf("Convocation secretariat"))
    cid = event["data"]["convocation_id"]
    await publish(broker.url(UPSTREAM_PRODUCER), exchange, event)

    base = production.url("secretariat")
    assert base.startswith("https://") and production.settings["secretariat"]["OIDC_ISSUER"] == sso.issuer
    staff = StaffClient(base, verify=pki.client_context())
    try:
        staff.sign_in("alice")  # authorization code + PKCE at the provider, over HTTPS both ways
        session = [c for c in staff.cookies[base.removeprefix("https://")] if c.startswith("__Host-")]
        assert session, staff.cookies  # Secure, host-only cookies over HTTPS

        await _page_until(staff, f"/search?convocation_id={cid}", rf'href="/c/{cid}"', "the convocation in the search")
        page = await _page_until(staff, f"/c/{cid}", r'data-action="post"', "the post action (the letter e-mailed)")
        done = staff.request(
            "POST",
            f"/c/{cid}/actions",
            data={"csrf": staff.csrf(page), "action": "post", "reason": "Patient asked for paper at the desk"},
        )
        assert done.status_code == 303 and done.headers["location"].endswith("?done=post"), done.text[:300]
        await _page_until(staff, f"/c/{cid}", r'data-kind="postal"', "the issuer's postal step in the timeline")
    finally:
        staff.close()

    # The service's role appends to the staff audit but cannot rewrite or empty it (the cluster's bootstrap).
    conn = await asyncpg.connect(production.settings["secretariat"]["DATABASE_URL"])
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("truncate secretariat_audit.staff_audit")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("delete from secretariat_audit.staff_audit")
        actions = await conn.fetch(
            "select action, outcome, reason from secretariat_audit.read(latest => 50)"
            " where convocation_id = $1::uuid and action = 'action'",
            cid,
        )
        assert [(a["outcome"], a["reason"]) for a in actions] == [("requested", "Patient asked for paper at the desk")]
    finally:
        await conn.close()
