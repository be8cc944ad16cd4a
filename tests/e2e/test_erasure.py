"""Issue 17: erasure on request. A patient with letters in every state (one the hospital sent as HL7 v2 through
the gateway and the patient downloaded, one e-mailed with a code asked, one on paper, one withdrawn by the
secretariat) asks to be erased: after the secretariat's API asks it, no table of any service, nor the audits,
holds anything about them (their convocation and message ids, patient refs, the hospital's appointment id), the
other patient's letter is intact and still opens, the hospital got the status 'erased' in its own format, and
the staff audit says who asked it and why."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.e2e.test_hospital_gateway import opened, siu, statuses
from tests.e2e.test_secretariat_api import Api, kinds, token
from tests.patient import PatientClient, find_link
from tests.staff import StaffClient
from tests.waiting import eventually

pytestmark = pytest.mark.e2e
REASON = "Asked in writing on 7 December, identity checked at the desk"


@pytest.fixture(scope="module")
def cardio(stack, devoidc) -> Api:
    return Api(stack, token(devoidc, "his-cardiology"))


async def identifiers(chain, convocation_ids: list[str]) -> set[str]:
    """What names a patient's letters anywhere: convocation and message ids, the patient refs."""
    rows = await chain.db.fetch(
        "select id, message_id, patient_ref from issuer.convocation where id = any($1::uuid[])", convocation_ids
    )
    assert len(rows) == len(convocation_ids)
    return {str(v) for r in rows for v in r.values()}


async def test_an_erased_patient_leaves_nothing_in_any_service_the_hospital_is_told_and_the_audit_says_who_and_why(
    chain, hospital, cardio
):
    patient_a, patient_b = f"PAT-{uuid.uuid4().hex[:8]}", f"PAT-{uuid.uuid4().hex[:8]}"
    e164, national = random_mobile()

    # 1. From the hospital as HL7 v2 through the gateway, opened and downloaded by the patient.
    email_1, apt = random_email(), f"APT-{uuid.uuid4().hex[:8]}"
    hospital.send_hl7(siu("siu-s12.hl7", appointment=apt, email=email_1, mobile=e164).replace("PAT-00042", patient_a))
    await opened(chain, email_1, e164, national)
    await statuses(hospital, apt, {"sealed", "e-mailed", "downloaded"}, "hl7")
    # 2. E-mailed, a code asked (its SMS sent) and not typed.
    email_2 = random_email()
    codes = chain.event(patient_id=patient_a, email=email_2, mobile=national)
    await chain.publish(codes)
    asking = PatientClient(find_link((await chain.email_to(email_2))["text"]))
    assert asking.request_code(None).status_code == 303  # the number verified with letter 1: straight to it
    code_of(await chain.sms_to(e164, nth=2))
    # 3. On paper. 4. Withdrawn by the secretariat.
    paper = chain.event(patient_id=patient_a, delivery="postal", mobile=national)
    withdrawn = chain.event(patient_id=patient_a, mobile=national)
    await chain.publish(paper)
    await chain.publish(withdrawn)
    await chain.postal(paper["data"]["convocation_id"])
    gone = withdrawn["data"]["convocation_id"]
    await cardio.wait(gone, lambda b: "withdraw" in b["available_actions"])
    asked = cardio.post(f"/convocations/{gone}/actions", {"action": "withdraw", "reason": "Patient moved abroad"})
    assert asked.status_code == 202, asked.text
    await chain.wait_status(gone, "withdrawn")
    # The other patient: downloaded.
    e164_b, national_b = random_mobile()
    email_b = random_email()
    other = chain.event(patient_id=patient_b, email=email_b, mobile=national_b)
    await chain.publish(other)
    patient_b_client = await opened(chain, email_b, e164_b, national_b)
    # Every report has reached the secretariat before the erasure (a late one would be a new line).
    await cardio.wait(codes["data"]["convocation_id"], lambda b: "code-sent" in kinds(b))

    a_ids = [
        r["id"]
        for r in await chain.db.fetch(
            "select convocation_id::text as id from hospital_gateway.appointment where appointment_id = $1", apt
        )
    ]
    a_ids += [codes["data"]["convocation_id"], paper["data"]["convocation_id"], gone]
    about_a = await identifiers(chain, a_ids) | {apt}
    about_b = await identifiers(chain, [other["data"]["convocation_id"]])
    before = await chain.dump_all_tables()
    assert all(v in before for v in about_a | about_b)  # the search below finds what is there
    bound = "select count(*) from access_portal.phone_binding where patient_ref = any($1::text[])"
    assert await chain.db.fetchval(bound, list(about_a)) == 1  # the number the patient verified

    # A patient id that is not the letter's patient's is refused; then the erasure, confirmed.
    wrong = {"convocation_id": a_ids[1], "reason": REASON, "patient_id": patient_b, "confirm": True}
    assert cardio.post("/erasures", wrong).json() == {"error": "patient-mismatch"}
    asked = cardio.post("/erasures", {**wrong, "patient_id": patient_a})
    assert asked.status_code == 202, asked.text
    erasure_id = asked.json()["erasure_id"]

    async def complete():
        body = cardio.get(f"/erasures/{erasure_id}").json()
        services = {c["service"] for c in body["confirmations"]}
        return body if body["complete"] and "hospital-gateway" in services else None

    done = await eventually(complete)
    by_service = {c["service"]: c for c in done["confirmations"]}
    assert by_service["issuer"]["convocations"] == 4 and by_service["hospital-gateway"]["convocations"] == 1
    assert all(c["rows"] > 0 for c in by_service.values()), by_service

    # The print room dropped the paper letter it had not printed.
    async def dropped():
        return chain.print_room.jobs[paper["data"]["convocation_id"]].state == "cancelled"

    await eventually(dropped)
    # The hospital got the status 'erased' of its letter, as HL7 v2; the systems speaking our JSON, of theirs.
    await statuses(hospital, apt, {"erased"}, "hl7")
    for cid in a_ids[1:]:
        await chain.upstream("convocation.status.v1", cid, lambda es: any(e["data"]["status"] == "erased" for e in es))

    # Nothing about the patient anywhere: no service's table, no outbox, no audit names them.
    await asyncio.sleep(1)  # the last confirmations' own transactions
    after = await chain.dump_all_tables()
    left = sorted(v for v in about_a if v in after)
    assert left == [], f"still stored after the erasure: {left}"
    assert all(v in after for v in about_b), "the other patient's data was touched"
    page = asking.open_link()
    assert page.status_code == 404  # the link opens nothing: the message is unknown now
    assert patient_b_client.download("pdf").content.startswith(b"%PDF")

    # The staff audit keeps who asked and why, under the erasure's id only.
    rows = await chain.db.fetch(
        "select name, via, reason, outcome, detail, convocation_id from secretariat_audit.staff_audit"
        " where action = 'erase' and detail = $1",
        f"erasure {erasure_id}",
    )
    assert [(r["via"], r["reason"], r["outcome"], r["convocation_id"]) for r in rows] == [
        ("api", REASON, "requested", None)
    ]
    assert rows[0]["name"]


async def test_a_secretary_erases_a_patient_from_the_console_only_after_confirming_with_a_reason(chain, stack, cardio):
    """The console's erasure: offered on the letter's page, asked on a page of its own (a POST without the
    confirmation goes there), refused without the form's token or a reason, then followed on its own page until
    every service confirmed, in the staff member's language; another department sees none of it."""
    event = chain.event(patient_id=f"PAT-{uuid.uuid4().hex[:8]}")
    await chain.publish(event)
    cid = event["data"]["convocation_id"]
    await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    outsider = StaffClient(stack.url("secretariat"))
    staff = StaffClient(stack.url("secretariat"))
    try:
        outsider.sign_in("bruno")  # neurology's secretary
        assert outsider.request("GET", f"/c/{cid}/erase").status_code == 404
        refused = outsider.request(
            "POST",
            f"/c/{cid}/erase",
            data={"csrf": outsider.csrf(outsider.request("GET", "/search")), "reason": REASON, "confirmed": "yes"},
        )
        assert refused.status_code == 404
        staff.sign_in("alice")
        letter = staff.request("GET", f"/c/{cid}?lang=en")
        assert f'href="/c/{cid}/erase"' in letter.text and "Erase everything about this patient…" in letter.text
        confirm = staff.request("GET", f"/c/{cid}/erase?lang=de")
        assert confirm.status_code == 200
        assert "Alles über diese Patientin oder diesen Patienten löschen?" in confirm.text
        csrf = staff.csrf(confirm)
        assert staff.request("POST", f"/c/{cid}/erase", data={"reason": REASON, "confirmed": "yes"}).status_code == 403
        unconfirmed = staff.request("POST", f"/c/{cid}/erase", data={"csrf": csrf, "reason": REASON})
        assert (unconfirmed.status_code, unconfirmed.headers["location"]) == (303, f"/c/{cid}/erase")
        short = staff.request(
            "POST", f"/c/{cid}/erase?lang=en", data={"csrf": csrf, "reason": "no", "confirmed": "yes"}
        )
        assert short.status_code == 400 and "Give a reason (at least 5 characters)." in short.text
        assert await chain.status(cid) == "e-mailed"  # nothing was asked
        asked = staff.request("POST", f"/c/{cid}/erase", data={"csrf": csrf, "reason": REASON, "confirmed": "yes"})
        assert asked.status_code == 303 and asked.headers["location"].startswith("/erasures/")

        async def complete():
            page = staff.request("GET", asked.headers["location"] + "?lang=fr")
            return page if 'data-erasure="complete"' in page.text else None

        page = await eventually(complete)
        assert "Terminé : chaque service a confirmé" in page.text
        assert cid not in page.text and "Marie Dupont" not in page.text
        assert staff.request("GET", f"/c/{cid}").status_code == 404  # the letter is gone from the console too
    finally:
        for client in (staff, outsider):
            client.close()
    assert await chain.status(cid) is None
    rows = await chain.db.fetch(
        "select name, via, reason, convocation_id from secretariat_audit.staff_audit where action = 'erase'"
        " and detail = $1",
        asked.headers["location"].replace("/erasures/", "erasure "),
    )
    assert [(r["via"], r["reason"], r["convocation_id"]) for r in rows] == [("console", REASON, None)]
    assert rows[0]["name"]
