"""Issue 9: the secretariat's resend and e-mail correction on the running chain. The issuer keeps no
letter, so it asks the hospital system (convocation.reissue.requested); the hospital publishes the
convocation again with the same id, and the new link goes out (to the corrected address), the old one
says it was replaced."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from devstack.hospital import republished
from devstack.stack import http
from hospital_gateway.booking import convocation_id
from issuer.settings import IssuerSettings
from shared import crypto
from shared.contracts import StaffActionRequestedV1
from tests.e2e import test_secretariat_api as api_tests
from tests.e2e.conftest import random_email, random_mobile
from tests.e2e.test_hospital_gateway import appointment as gateway_appointment
from tests.e2e.test_portal_helpers import publish_as_service, state_of
from tests.e2e.test_secretariat_api import kinds
from tests.patient import PatientClient, find_link
from tests.waiting import eventually

pytestmark = pytest.mark.e2e
REISSUE_KEY = "convocation.reissue.requested.v1"
REPLACES = "remplace celui"  # "This message replaces the one we sent you on …" in French, the letters' language
# The test stack runs the issuer with its development keys: the tests seal with them as the secretariat would.
ISSUER_FIELD_KEY = IssuerSettings().issuer_field_key


# The API tests' tokens: a cardiology and a neurology hospital system (client credentials from devoidc).
cardio, neuro = api_tests.cardio, api_tests.neuro


async def reissues_waiting(chain) -> bool:
    """The issuer's gauges say at least one request waits for the hospital system, for a while already."""
    metrics = http("GET", f"{chain.stack.url('issuer')}/metrics", timeout=10).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("convocations_reissue_")
    }
    return (
        values.get("convocations_reissue_waiting", 0) >= 1
        and values.get("convocations_reissue_oldest_waiting_seconds", 0) > 0
    )


async def e_mailed_letter(chain, cardio, **kw) -> tuple[dict, PatientClient]:
    event = chain.event(patient_id=f"P-{uuid.uuid4().hex[:8]}", **kw)
    await chain.publish(event)
    patient = PatientClient(find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"]))
    await cardio.wait(event["data"]["convocation_id"], lambda b: "e-mailed" in kinds(b))
    return event, patient


async def test_a_corrected_address_gets_the_letter_again_with_a_new_link_and_the_old_link_says_replaced(
    chain, cardio, neuro
):
    event, old_patient = await e_mailed_letter(chain, cardio)
    cid, old_address, corrected = event["data"]["convocation_id"], event["data"]["patient"]["email"], random_email()
    reason = "patient gave a typo at the desk"

    # Another department cannot guess its way to the action; a wrong address is refused and nothing is asked.
    for action in ("correct-email", "resend"):
        r = neuro.post(f"/convocations/{cid}/actions", {"action": action, "reason": reason, "email": corrected})
        assert r.status_code == 404, (action, r.text)
    for bad in (None, "marie at example.ch", "a@example.ch\r\nBcc: b@example.ch"):
        r = cardio.post(f"/convocations/{cid}/actions", {"action": "correct-email", "reason": reason, "email": bad})
        assert (r.status_code, r.json()) == (400, {"error": "email-invalid"}), bad

    r = cardio.post(f"/convocations/{cid}/actions", {"action": "correct-email", "reason": reason, "email": corrected})
    assert r.status_code == 202, r.text
    action_id = r.json()["action_id"]
    # The hospital system is asked for the letter again: the id and why, nothing about the patient.
    [request] = await chain.upstream(REISSUE_KEY, cid, lambda es: len(es) >= 1)
    assert request["data"] == {
        "convocation_id": cid,
        "reason": "email-corrected",
        "action_id": action_id,
        "requested_at": request["data"]["requested_at"],
    }
    body = await cardio.wait(cid, lambda b: "reissue-requested" in kinds(b))
    waiting = next(t for t in body["timeline"] if t["kind"] == "reissue-requested")
    assert waiting["action_id"] == action_id
    again = cardio.post(f"/convocations/{cid}/actions", {"action": "resend", "reason": "asked twice by mistake"})
    assert (again.status_code, again.json()) == (409, {"error": "reissue-pending"})
    # Until the hospital answers, the issuer keeps the address only sealed for itself.
    stored = await chain.db.fetchval(
        "select email_sealed from issuer.reissue_request where action_id = $1", uuid.UUID(action_id)
    )
    assert stored.startswith("fe2.") and corrected not in stored
    assert corrected not in await chain.dump_all_tables()
    # What the unanswered-request alert reads: the issuer's sweeper counts it while it waits.
    await eventually(lambda: reissues_waiting(chain))

    # The hospital publishes the same convocation again, still with the old address on file.
    await chain.publish(republished(event))
    mail = await chain.email_to(corrected)
    new_patient = PatientClient(find_link(mail["text"]))
    assert new_patient.page_url != old_patient.page_url
    assert REPLACES not in mail["text"]  # this address never got the first one
    body = await cardio.wait(
        cid, lambda b: any(t["kind"] == "e-mailed" and t["action_id"] == action_id for t in b["timeline"])
    )
    # (superseded and the new sealed share one time: their order in the timeline is not fixed)
    assert kinds(body)[-1] == "e-mailed" and kinds(body).count("sealed") == 2 and "superseded" in kinds(body)
    old_page = old_patient.open_link()
    assert (old_page.status_code, state_of(old_page.text)) == (410, "superseded")
    new_page = new_patient.open_link()
    assert new_page.status_code == 200 and state_of(new_page.text) is None
    assert len(chain.emails_to(old_address)) == 1  # nothing more to the old, wrong address
    done = await chain.db.fetchval("select done_at from secretariat.action where id = $1", uuid.UUID(action_id))
    assert done is not None

    # Audited once with the reason; the address used once and kept nowhere in clear.
    audit = await chain.db.fetch(
        "select outcome, reason, via from secretariat_audit.staff_audit where convocation_id = $1"
        " and action = 'action' and outcome = 'requested'",
        uuid.UUID(cid),
    )
    assert [tuple(a) for a in audit] == [("requested", reason, "api")]
    assert (
        await chain.db.fetchval(
            "select email_sealed from issuer.reissue_request where action_id = $1", uuid.UUID(action_id)
        )
        is None
    )
    dump = await chain.dump_all_tables()
    assert corrected not in dump and corrected.split("@")[0] not in dump
    assert corrected.split("@")[0] not in chain.stack.logs()  # nor in any service's log

    metrics = http("GET", f"{chain.stack.url('issuer')}/metrics", timeout=10).text
    assert 'convocations_reissue_requests_total{reason="email-corrected"}' in metrics

    # A later republication (the appointment moved) does not use the correction a second time.
    await chain.publish(republished(event))
    await eventually(
        lambda: chain.db.fetchval("select superseded_count = 2 from issuer.convocation where id = $1", uuid.UUID(cid))
    )
    await chain.email_to(old_address)
    assert len(chain.emails_to(corrected)) == 1


async def test_resend_through_the_development_hospital_once_even_when_the_action_event_is_replayed(
    chain, cardio, hospital
):
    # The development hospital sends its letter as FHIR through the hospital gateway, gets the secretariat's
    # request back from the gateway as a FHIR Task, and answers by sending the Appointment again.
    address, ident = random_email(), f"APT-{uuid.uuid4().hex[:8]}"
    assert (
        hospital.send_fhir(gateway_appointment(ident=ident, email=address, mobile=random_mobile()[1])).status_code
        == 201
    )
    cid = str(convocation_id("dev-his-fhir", ident))
    old_patient = PatientClient(find_link((await chain.email_to(address))["text"]))
    await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    answered = hospital.answered
    r = cardio.post(f"/convocations/{cid}/actions", {"action": "resend", "reason": "patient deleted the e-mail"})
    assert r.status_code == 202, r.text
    action_id = r.json()["action_id"]
    body = await cardio.wait(
        cid, lambda b: any(t["kind"] == "e-mailed" and t["action_id"] == action_id for t in b["timeline"]), timeout=30
    )
    assert [t["kind"] for t in body["timeline"] if t["action_id"] == action_id] == ["reissue-requested", "e-mailed"]
    mails = chain.emails_to(address)
    assert len(mails) == 2 and REPLACES in mails[-1]["text"]  # the same address: it says what it replaces
    # ... and why: sent again at the secretariat's request, not changed (issue 20, item 9).
    assert "À la demande du secrétariat" in mails[-1]["text"] and "a changé" not in mails[-1]["text"]
    assert (old_patient.open_link().status_code, hospital.answered) == (410, answered + 1)

    # The action event again, as a redelivery would (same action, first message) and even naming the
    # current message: the hospital is asked once only.
    current = await chain.db.fetchval("select message_id from issuer.convocation where id = $1", uuid.UUID(cid))
    for message_id in (await first_message_id(chain, cid), current):
        await publish_as_service(
            chain,
            StaffActionRequestedV1(
                action_id=uuid.UUID(action_id),
                convocation_id=uuid.UUID(cid),
                message_id=message_id,
                action="resend",
                department="cardiology",
                requested_by="replay",
            ),
            producer="secretariat",
        )
    await asyncio.sleep(2)
    assert hospital.answered == answered + 1
    assert (
        await chain.db.fetchval("select count(*) from issuer.reissue_request where convocation_id = $1", uuid.UUID(cid))
        == 1
    )
    assert len(chain.emails_to(address)) == 2
    assert kinds(cardio.get(f"/convocations/{cid}").json()).count("reissue-requested") == 1


async def first_message_id(chain, cid: str) -> uuid.UUID:
    return await chain.db.fetchval(
        "select message_id from mailer.email where convocation_id = $1 order by sent_at nulls last limit 1",
        uuid.UUID(cid),
    )


async def test_a_correction_whose_address_is_not_one_address_is_dead_lettered_with_its_reason(chain, cardio):
    event, _ = await e_mailed_letter(chain, cardio)
    cid = uuid.UUID(event["data"]["convocation_id"])
    action_id = uuid.uuid4()
    sealed = crypto.seal_field(
        ISSUER_FIELD_KEY,
        {"email": "bcc-me@example.ch\r\nBcc: stranger@example.ch"},
        context=crypto.field_context(StaffActionRequestedV1.EVENT_TYPE, action_id, "issuer"),
    )
    payload = StaffActionRequestedV1(
        action_id=action_id,
        convocation_id=cid,
        message_id=await first_message_id(chain, str(cid)),
        action="correct-email",
        department="cardiology",
        requested_by="a-forged-secretariat",
        for_issuer=sealed,
    )
    await publish_as_service(chain, payload, producer="secretariat")
    queue = f"{chain.exchange}.issuer.staff.action.requested.v1"
    parked = await eventually(lambda: dead_lettered(chain, queue, action_id))
    assert parked.headers["x-rejected-reason"] == "email-invalid"
    assert "stranger" not in json.dumps({k: str(v) for k, v in parked.headers.items()})
    assert await chain.db.fetchval("select count(*) from issuer.reissue_request where convocation_id = $1", cid) == 0


async def dead_lettered(chain, queue: str, action_id: uuid.UUID):
    found = await chain.dead_letters(queue, set())
    return next((m for m in found.values() if json.loads(m.body)["data"]["action_id"] == str(action_id)), None)
