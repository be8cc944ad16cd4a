"""Issue 22: hospital systems speak HL7 v2 and FHIR to the hospital gateway. An SIU^S12 over MLLP and a FHIR
Appointment posted with a client-credentials token each reach the patient as a letter they open; a
cancellation in either format revokes it; the development hospital receives the statuses in its own format;
a sandbox test reaches only the sandbox inbox; a batch gives one letter per accepted entry."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest

from devstack.sample import sample_pdf
from devstack.stack import http
from hospital_gateway.booking import convocation_id
from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.e2e.test_portal_helpers import state_of
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "samples"


def siu(name: str, *, appointment: str, email: str, mobile: str, pdf: bytes | None = None) -> str:
    """A sample SIU message of docs/samples for another appointment and patient."""
    text = (SAMPLES / name).read_text(encoding="utf-8").replace("APT-4711", appointment)
    text = text.replace("zoe.muller@example.ch", email).replace("^PRN^CP^^41^79^1234567", f"^PRN^CP^^^^^^^^^{mobile}")
    if pdf is not None:
        lines = [line.split("|") for line in text.split("\n")]
        for fields in lines:
            if fields[0] == "OBX":
                fields[5] = "^AP^PDF^Base64^" + base64.b64encode(pdf).decode()
        text = "\n".join("|".join(fields) for fields in lines)
    return text


def appointment(*, ident: str, email: str, mobile: str, status: str = "booked") -> dict:
    resource = json.loads((SAMPLES / "appointment.json").read_text(encoding="utf-8"))
    resource["identifier"][0]["value"], resource["status"] = ident, status
    patient = resource["contained"][0]
    patient["telecom"] = [{"system": "email", "value": email}, {"system": "phone", "use": "mobile", "value": mobile}]
    return resource


async def opened(chain, email: str, e164: str, national: str) -> PatientClient:
    """The patient follows the e-mailed link, types the number, the code, and downloads the letter."""
    patient = PatientClient(find_link((await chain.email_to(email))["text"]))
    assert patient.request_code(national).status_code == 303
    assert patient.enter_code(code_of(await chain.sms_to(e164))).status_code == 303
    download = patient.download("pdf")
    assert download.status_code == 200 and download.content.startswith(b"%PDF")
    patient.pdf = download.content  # type: ignore[attr-defined]
    return patient


async def statuses(hospital, appointment_id: str, expected: set[str], fmt: str) -> list[dict]:
    async def seen():
        got = [n for n in hospital.received if n["appointment_id"] == appointment_id and n["kind"] == "status"]
        return got if expected <= {n["code"] for n in got} else None

    found = await eventually(seen)
    assert {n["format"] for n in found} == {fmt}
    return found


async def test_an_hl7_siu_s12_reaches_the_patient_a_repeat_does_nothing_an_s15_revokes_it_and_statuses_go_back_as_hl7(
    chain, hospital
):
    e164, national = random_mobile()
    email, apt = random_email(), f"APT-{uuid.uuid4().hex[:8]}"
    pdf = sample_pdf(f"Convocation {apt}")
    message = siu("siu-s12.hl7", appointment=apt, email=email, mobile=e164, pdf=pdf)
    control = f"MSG-{uuid.uuid4().hex[:10]}"
    ack = hospital.send_hl7(message, control_id=control)
    assert "MSA|AA|" + control in ack, ack

    patient = await opened(chain, email, e164, national)
    assert patient.pdf == pdf  # type: ignore[attr-defined]
    again = hospital.send_hl7(message, control_id=control)  # the same MSH-10: a retry, never a second letter
    assert "MSA|AA|" + control in again and "duplicate" in again
    await statuses(hospital, apt, {"sealed", "e-mailed", "downloaded"}, "hl7")

    cancel = hospital.send_hl7(siu("siu-s15.hl7", appointment=apt, email=email, mobile=e164))
    assert "MSA|AA|" in cancel, cancel
    await statuses(hospital, apt, {"cancelled"}, "hl7")
    # The portal hears of the cancellation by its own event, beside the status going back to the hospital.
    page = await eventually(
        lambda: (p := patient.open_link()).status_code == 410 and p, what="the link's page telling the cancellation"
    )
    assert state_of(page.text) == "cancelled"
    assert len([m for m in chain.emails_to(email) if "/m/" in m["text"]]) == 1
    received = [
        r
        for r in await chain.db.fetch(
            "select via, action from hospital_gateway.received where convocation_id = $1",
            convocation_id("dev-his", apt),
        )
    ]
    assert sorted(tuple(r) for r in received) == [("hl7", "cancelled"), ("hl7", "created")]


async def test_a_fhir_appointment_with_a_token_reaches_the_patient_cancelled_revokes_it_statuses_go_back_as_fhir(
    chain, hospital, devoidc
):
    e164, national = random_mobile()
    email, ident = random_email(), f"APT-{uuid.uuid4().hex[:8]}"
    resource = appointment(ident=ident, email=email, mobile=national)
    url = f"{chain.stack.url('hospital-gateway')}/fhir/Appointment"
    # No token, or a token for another audience (the secretariat's API): 401 with an OperationOutcome.
    assert http("POST", url, json=resource, timeout=10).status_code == 401
    other = http(
        "POST",
        f"{devoidc.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=("his-cardiology", "dev-his-cardiology-secret"),
        timeout=10,
    ).json()["access_token"]
    refused = http("POST", url, json=resource, headers={"authorization": f"Bearer {other}"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["resourceType"] == "OperationOutcome"

    request_id = str(uuid.uuid4())
    created = hospital.send_fhir(resource, request_id=request_id)
    assert created.status_code == 201, created.text
    assert created.json()["issue"][0]["severity"] == "information"
    repeat = hospital.send_fhir(resource, request_id=request_id)  # a retry with the same request id
    assert repeat.status_code == 200 and "already accepted" in repeat.text

    patient = await opened(chain, email, e164, national)
    await statuses(hospital, ident, {"sealed", "e-mailed", "downloaded"}, "fhir")
    gone = hospital.send_fhir(appointment(ident=ident, email=email, mobile=national, status="cancelled"))
    assert gone.status_code == 200 and "withdrawn" in gone.text
    await statuses(hospital, ident, {"cancelled"}, "fhir")
    page = patient.open_link()
    assert page.status_code == 410 and state_of(page.text) == "cancelled"
    assert len([m for m in chain.emails_to(email) if "/m/" in m["text"]]) == 1


async def test_a_sandbox_test_runs_the_chain_but_reaches_only_the_sandbox_inbox_and_says_test_everywhere(
    chain, hospital, sandbox_inbox
):
    e164, national = random_mobile()
    email, apt = random_email(), f"SBX-{uuid.uuid4().hex[:8]}"
    message = siu("siu-s12.hl7", appointment=apt, email=email, mobile=e164).replace("|P|2.5.1|", "|T|2.5.1|", 1)
    ack = hospital._run(_to_port(hospital, chain.stack.ports["gateway-sandbox"], message))
    assert "MSA|AA|" in ack, ack
    mail = await sandbox_inbox.inbox.await_email(lambda m: email in m["rcpt_tos"], timeout=PATIENCE)
    patient = PatientClient(find_link(mail["text"]))
    assert patient.request_code(national).status_code == 303
    sms = await eventually(lambda: _sms(sandbox_inbox, e164))
    assert patient.enter_code(code_of(sms)).status_code == 303
    assert patient.download("pdf").status_code == 200
    found = await statuses(hospital, apt, {"sealed", "e-mailed", "downloaded"}, "fhir")
    assert all(n["sandbox"] for n in found)
    assert not chain.emails_to(email) and chain.sms_count(e164) == 0  # nothing reached the "real" providers
    cid = convocation_id("sandbox", apt)
    assert await chain.db.fetchval("select sandbox from issuer.convocation where id = $1", cid) is True


async def _to_port(hospital, port: int, text: str) -> str:
    saved, hospital.gateway_mllp_port = hospital.gateway_mllp_port, port
    try:
        return (await hospital._send_hl7(text)).decode()
    finally:
        hospital.gateway_mllp_port = saved


async def _sms(inbox, e164: str):
    return next((s for s in inbox.inbox.sms() if s["to"] == e164), None)


async def test_a_batch_bundle_and_a_csv_list_give_one_letter_per_accepted_entry_and_say_why_the_others_were_refused(
    chain, hospital
):
    batch = json.loads((SAMPLES / "batch-bundle.json").read_text(encoding="utf-8"))
    good = batch["entry"][0]["resource"]
    emails = [random_email(), random_email()]
    entries = []
    for email in emails:
        resource = json.loads(json.dumps(good))
        resource["identifier"][0]["value"] = f"B-{uuid.uuid4().hex[:8]}"
        resource["contained"][0]["telecom"][0]["value"] = email
        entries.append({"resource": resource, "request": {"method": "POST", "url": "Appointment"}})
    entries.append(batch["entry"][1])  # its start is no FHIR instant
    response = hospital.send_fhir({**batch, "identifier": {"value": str(uuid.uuid4())}, "entry": entries})
    assert response.status_code == 200, response.text
    answers = response.json()["entry"]
    assert [a["response"]["status"] for a in answers] == ["201 Created", "201 Created", "400 Bad Request"]
    assert answers[2]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[2].resource.start"]
    for email in emails:
        await chain.email_to(email)

    csv = (SAMPLES / "day-list.csv").read_text(encoding="utf-8")
    csv_emails = [random_email() for _ in range(3)]
    for old, new in zip(
        ("anna.keller@example.ch", "marc.favre@example.ch", "lea.brunner@example.ch"), csv_emails, strict=True
    ):
        csv = csv.replace(old, new)
    csv = csv.replace("CAB-0301", f"CAB-{uuid.uuid4().hex[:6]}")
    token = await hospital._token()
    listed = http(
        "POST",
        f"{chain.stack.url('hospital-gateway')}/csv",
        content=csv.encode(),
        timeout=30,
        headers={"authorization": f"Bearer {token}", "content-type": "text/csv"},
    ).json()
    assert (listed["accepted"], listed["refused"]) == (2, 1)
    assert listed["lines"][2]["reason"] == "line 4, column birth_date: not a date (2030-03-14 or 14.03.2030)"
    for email in csv_emails[:2]:
        await chain.email_to(email)
    await asyncio.sleep(0)
    assert not chain.emails_to(csv_emails[2])


async def test_an_accepted_letter_the_issuer_refuses_is_dead_lettered_by_the_gateway_with_its_reason_and_counted(
    chain, hospital
):
    """Nothing accepted is lost: the ACK said AA (the gateway does not inspect PDFs), the issuer parked the
    event (active content), and the gateway, never seeing it sealed, records a dead letter the alert reads."""
    from tests.e2e.test_mail_security import pdf_with_open_action_javascript

    apt = f"APT-{uuid.uuid4().hex[:8]}"
    ack = hospital.send_hl7(
        siu(
            "siu-s12.hl7",
            appointment=apt,
            email=random_email(),
            mobile=random_mobile()[0],
            pdf=pdf_with_open_action_javascript(),
        )
    )
    assert "MSA|AA|" in ack, ack
    cid = convocation_id("dev-his", apt)
    event_id = await chain.db.fetchval("select event_id from hospital_gateway.received where convocation_id = $1", cid)
    parked = await chain.dead_letters(f"{chain.exchange}.issuer.convocation.created.v1", {str(event_id)})
    assert parked[str(event_id)].headers["x-rejected-reason"] == "pdf-active-content"
    letter = await eventually(
        lambda: chain.db.fetchrow(
            "select reason, detail from hospital_gateway.dead_letter where convocation_id = $1", cid
        )
    )
    assert letter["reason"] == "not-sealed" and str(event_id) in letter["detail"]

    def counted() -> bool:  # what the alert ConvocationsGatewayDeadLettered reads; counted once the row is committed
        metrics = http("GET", f"{chain.stack.url('hospital-gateway')}/metrics", timeout=10).text
        series = 'convocations_gateway_dead_lettered_total{reason="not-sealed",system="dev-his"}'
        return any(line.startswith(series) and float(line.split()[-1]) >= 1 for line in metrics.splitlines())

    await eventually(counted, what="the gateway's dead letter counted")
