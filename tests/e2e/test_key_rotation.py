"""Every key rotates with letters in flight and nothing is lost (deploy/README.md, "Rotating keys"):
a convocation sealed and encrypted under key 1 still reaches the patient, who gets the code and
downloads, after the services restart with key 2 current and key 1 still accepted; once drained,
key 1 is removed and new letters go through under key 2 alone."""

from __future__ import annotations

import base64
import os

import pytest

from devstack.hospital import republished
from shared.crypto import b64e, recipient_public_key
from shared.settings import _decode_key, dev_key
from tests.e2e.conftest import random_email
from tests.e2e.test_portal_helpers import Letter, find_link, letter
from tests.e2e.test_secretariat_api import Api, kinds, token
from tests.patient import PatientClient
from tests.staff import StaffClient
from tests.waiting import eventually

pytestmark = pytest.mark.e2e
RINGS = {  # setting: development key name (key 1, what the stack started with)
    "SEAL_KEYS": "seal-k1",
    "PATIENT_REF_KEY": "patient-ref",
    "MAILER_FIELD_KEY": "mailer-field",
    "PORTAL_FIELD_KEY": "portal-field",
    "SMS_FIELD_KEY": "sms-field",
    "PORTAL_SECRET_KEY": "portal-secret",
    "SECRETARIAT_FIELD_KEY": "secretariat-field",
    "STAFF_FIELD_KEY": "staff-field",
    "ISSUER_FIELD_KEY": "issuer-field",
    "SECRETARIAT_SECRET_KEY": "secretariat-secret",
}


def _restart(stack, env: dict[str, str]) -> None:
    stack.stop()
    stack.extra_env.setdefault("*", {}).update(env)
    stack.start()


async def test_every_key_rotates_with_a_letter_in_flight_and_the_old_key_goes_after_the_drain(chain, stack, devoidc):
    new = {name: b64e(os.urandom(32)) for name in RINGS}
    print_room_new = os.urandom(32)
    old_print_public = b64e(recipient_public_key(_decode_key(dev_key("print-room"))))
    rotated = {name: f"k1:{dev_key(dev)},k2:{new[name]}" for name, dev in RINGS.items()}
    rotated["PRINT_ROOM_PUBLIC_KEY"] = f"k1:{old_print_public},k2:{b64e(recipient_public_key(print_room_new))}"
    drained = {name: f"k2:{new[name]}" for name in RINGS}
    drained["SEAL_KEYS"] = rotated["SEAL_KEYS"]  # kept until every message sealed under k1 has expired
    drained["PRINT_ROOM_PUBLIC_KEY"] = f"k2:{b64e(recipient_public_key(print_room_new))}"
    before = {name: value for name, value in stack.extra_env.get("*", {}).items()}
    try:
        # A patient whose number is proven under the key-1 ref (her secretariat resets it after the rotation).
        reset_id, reset_mobile = f"P-reset-{os.urandom(4).hex()}", "079 555 04 56"
        surname = "Rotation" + "".join(chr(97 + b % 26) for b in os.urandom(6))
        proven = await letter(
            chain, mobile=reset_mobile, patient_id=reset_id, name=f"Anna {surname}", birth_date="1944-02-29"
        )
        await proven.log_in()
        cid = proven.convocation_id
        kept = await eventually(
            lambda: chain.db.fetchrow(
                "select patient_enc, birth_index from secretariat.convocation where id = $1::uuid and patient_enc"
                " is not null",
                cid,
            )
        )
        assert kept["patient_enc"].startswith("fe2.k1.") and kept["birth_index"].startswith("k1:")
        # Issue 18, item 6: the secretariat's keys too. A corrected address sealed for the issuer under key 1
        # waits for the hospital to publish the letter again; a staff member is signed in to the console.
        cardio = Api(stack, token(devoidc, "his-cardiology"))
        readdressed, new_address = await letter(chain), random_email()
        await cardio.wait(readdressed.convocation_id, lambda b: "e-mailed" in kinds(b))
        r = cardio.post(
            f"/convocations/{readdressed.convocation_id}/actions",
            {"action": "correct-email", "reason": "typo at the desk", "email": new_address},
        )
        assert r.status_code == 202, r.text
        await cardio.wait(readdressed.convocation_id, lambda b: "reissue-requested" in kinds(b))
        staff = StaffClient(stack.url("secretariat"))
        staff.sign_in("alice")
        renumbered = await letter(chain)
        await cardio.wait(renumbered.convocation_id, lambda b: "e-mailed" in kinds(b))
        # In flight: sealed under key 1, the e-mail not yet sent (the mailer is down).
        stack.stop(["mailer"])
        patient_id = f"P-rotation-{os.urandom(4).hex()}"
        event = chain.event(email="rotation@example.ch", mobile="079 555 01 23", patient_id=patient_id)
        await chain.publish(event)
        sealed = await eventually(
            lambda: chain.db.fetchrow(
                "select * from access_portal.message where convocation_id = $1::uuid", event["data"]["convocation_id"]
            )
        )
        assert sealed["key_id"].startswith("k1.") and sealed["phone_hash"].startswith("k1:")  # k1, the period's key
        # And a corrected number sealed for the portal under key 1, waiting in its queue (the portal is down).
        stack.stop(["access-portal"])
        r = cardio.post(
            f"/convocations/{renumbered.convocation_id}/actions",
            {"action": "correct-mobile", "reason": "new phone", "mobile": "079 555 06 54"},
        )
        assert r.status_code == 202, r.text

        _restart(stack, rotated)  # key 2 current everywhere, key 1 still accepted
        await cardio.wait(renumbered.convocation_id, lambda b: "mobile-corrected" in kinds(b))  # STAFF_FIELD_KEY k1
        assert (await renumbered.message_row())["phone_hint"].endswith("54")
        await chain.publish(republished(readdressed.event))  # the issuer opens the k1 address (ISSUER_FIELD_KEY)
        await chain.email_to(new_address)
        ended = staff.request("GET", "/search")  # SECRETARIAT_SECRET_KEY: sessions end at once (the runbook)
        assert (ended.status_code, ended.headers.get("location")) == (303, "/?expired=1"), ended.text[:300]
        staff.sign_in("alice")
        mail = await chain.email_to("rotation@example.ch")
        old = Letter(chain, event, find_link(mail["text"]), "+41795550123", "079 555 01 23")
        await old.log_in()
        assert old.patient.download("pdf").content == base64.b64decode(event["data"]["document_pdf_base64"])
        challenge = (await old.challenges())[-1]
        assert challenge["code_hash"].startswith("k2:")

        fresh = await letter(chain)  # a letter issued under key 2
        row = await fresh.message_row()
        assert (
            row["key_id"].startswith("k2.")
            and row["phone_hash"].startswith("k2:")
            and row["patient_ref"].startswith("k2:")
        )
        await fresh.log_in()
        assert fresh.patient.download("pdf").status_code == 200

        # The same patient's next letter, under key 2: the number proven under the key-1 ref carries over.
        again = await letter(chain, mobile="079 555 01 23", patient_id=patient_id)
        assert 'name="phone"' not in again.patient.open_link().text  # bound: the code goes to it, nothing typed

        # Issue 9: the secretariat resets a binding proven under the key-1 ref, through a letter under key 2:
        # it ends under every ref, so that letter, the key-1 one and the next all ask for the number again.
        carried = await letter(chain, mobile=reset_mobile, patient_id=reset_id)
        assert 'name="phone"' not in carried.patient.open_link().text  # bound: a code goes to it, nothing typed
        await cardio.wait(carried.convocation_id, lambda b: "e-mailed" in kinds(b))
        r = cardio.post(
            f"/convocations/{carried.convocation_id}/actions",
            {"action": "reset-binding", "reason": "patient lost the phone"},
        )
        assert r.status_code == 202, r.text
        await cardio.wait(carried.convocation_id, lambda b: "binding-reset" in kinds(b))
        after = await letter(chain, mobile=reset_mobile, patient_id=reset_id)
        for link in (proven.link, carried.link, after.link):  # the number field again, no bound number
            assert 'name="phone"' in PatientClient(link).open_link().text, link
        # A corrected number reaches the patient's open letters under either ref, each sealed in its own.
        r = cardio.post(
            f"/convocations/{after.convocation_id}/actions",
            {"action": "correct-mobile", "reason": "patient gave a new number", "mobile": "079 555 07 89"},
        )
        assert r.status_code == 202, r.text
        await cardio.wait(after.convocation_id, lambda b: "mobile-corrected" in kinds(b))
        assert [(await m.message_row())["phone_hint"][-2:] for m in (proven, carried, after)] == ["89"] * 3
        corrected = Letter(chain, proven.event, proven.link, "+41795550789", "079 555 07 89")
        await corrected.log_in()  # the key-1 letter texts the corrected number, opened in its own context

        # The secretariat sealed and indexed the patient's details again under key 2 as it started.
        kept = await chain.db.fetchrow(
            "select patient_enc, birth_index, name_index from secretariat.convocation where id = $1::uuid", cid
        )
        assert kept["patient_enc"].startswith("fe2.k2.") and kept["birth_index"].startswith("k2:")
        assert all(h.startswith("k2:") for h in kept["name_index"])

        _restart(stack, drained)  # the drain is over: key 1 removed (the seal key waits for expiry)
        assert staff.request("GET", "/search").status_code == 200  # signed in under key 2: still signed in
        cardio = Api(stack, token(devoidc, "his-cardiology"))
        found = cardio.post("/convocations/search", {"name": surname.lower(), "birth_date": "1944-02-29"}).json()
        assert [(f["convocation_id"], f["patient"]["name"]) for f in found] == [(cid, f"Anna {surname}")]
        assert old.patient.download("pdf").status_code == 200  # its session, its document: nothing lost
        third = await letter(chain, mobile="079 555 01 23", patient_id=patient_id)
        assert 'name="phone"' not in third.patient.open_link().text  # still bound, asked for nothing
        await third.log_in(phone=None, nth=2)  # the second code texted to this number
        assert third.patient.download("pdf").status_code == 200
        last = await letter(chain)
        await last.log_in()
        assert last.patient.download("pdf").status_code == 200
    finally:
        stack.extra_env["*"] = before
        stack.stop()
        stack.start()
