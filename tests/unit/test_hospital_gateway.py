"""Issue 22, the hospital gateway's parsers and answers, without I/O: the samples of docs/samples mapped
field by field, broken messages refused naming the segment and field (HL7 ERR) or element (FHIR
OperationOutcome), and the parsers fuzzed: every input gets an ACK or an OperationOutcome, never a crash."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.sample import sample_pdf
from hospital_gateway import csvlist, fhir, hl7v2, mllp
from hospital_gateway.api import Api
from hospital_gateway.booking import Problem, convocation_id, created_event
from hospital_gateway.intake import Accepted, Unavailable
from hospital_gateway.settings import GatewaySettings

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
SETTINGS = GatewaySettings()
SYSTEM = SETTINGS.system("dev-his")
SANDBOX = SETTINGS.system("sandbox")
NOW = datetime(2030, 3, 1, tzinfo=timezone.utc)


def wire(name: str) -> bytes:
    return (SAMPLES / name).read_bytes().replace(b"\n", b"\r")


def segments(ack: bytes) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in ack.decode("utf-8").split("\r") if line}


def answer(data: bytes, system=SYSTEM, accepted=None) -> bytes:
    """The ACK the listener would send, with the database played by ``accepted`` (an exception to raise)."""

    class Intake:
        async def submit(self, system, bookings, via):
            if isinstance(accepted, Exception):
                raise accepted
            for b, _ in bookings:
                created_event(system, b, NOW) if b.action == "book" else None
            return [accepted or Accepted(uuid.uuid4(), duplicate=False) for _ in bookings]

    return asyncio.run(mllp.handle(Intake(), system, data))


def err(ack: bytes) -> tuple[str, str, str]:
    """(MSA-1, ERR-2 location, ERR-3 code) of an ACK."""
    s = segments(ack)
    return s["MSA"][1], s["ERR"][2] if "ERR" in s else "", s["ERR"][3].split("^")[0] if "ERR" in s else ""


# --- HL7 v2: the samples, field by field ---------------------------------------------------------------


def test_the_siu_s12_sample_maps_every_field_the_documentation_lists():
    m = hl7v2.decode(wire("siu-s12.hl7"), SYSTEM)
    b = hl7v2.booking(m, SYSTEM, hl7v2.check_header(m, SYSTEM))
    event = created_event(SYSTEM, b, NOW)
    assert event.convocation_id == convocation_id("dev-his", "APT-4711")
    p, a = event.patient, event.appointment
    # PID-3: the MR identifier, never the AHV number in the first repetition; PID-5 the legal name, unescaped.
    assert (p.id, p.name, p.birth_date) == ("PAT-00042", "Zoë Anne Müller", date(1980, 2, 14))
    assert (p.email, p.mobile, p.language) == ("zoe.muller@example.ch", "+41791234567", "fr")
    assert a.starts_at == datetime(2030, 3, 14, 9, 0, tzinfo=SYSTEM.zone)  # AIS-4 without offset: Geneva time
    assert (a.department.code, a.place.name) == ("cardiology", "Bâtiment Gustave Julliard, 2e étage, salle 204")
    assert a.place.address == SYSTEM.address
    assert a.instructions == "Merci d'apporter votre carte d'assuré & vos résultats.\nVenez à jeun."  # \T\, ~
    assert event.document_bytes().startswith(b"%PDF-") and not event.sandbox
    assert "756.1234" not in event.model_dump_json()


def test_s13_supersedes_with_the_same_convocation_and_s15_cancels_it():
    for name, action in (("siu-s13.hl7", "book"), ("siu-s15.hl7", "cancel")):
        m = hl7v2.decode(wire(name), SYSTEM)
        b = hl7v2.booking(m, SYSTEM, hl7v2.check_header(m, SYSTEM))
        assert (b.action, b.appointment_id) == (action, "APT-4711")
    assert b.reason == "Annulé à la demande de la patiente"


def test_an_accepted_message_gets_aa_with_its_control_id_charset_and_version():
    ack = answer(wire("siu-s12.hl7"))
    s = segments(ack)
    assert s["MSA"][1:3] == ["AA", "MSG-20300301-0001"]
    assert s["MSH"][8] == "ACK^S12^ACK" and s["MSH"][11] == "2.5.1" and s["MSH"][17] == "UNICODE UTF-8"
    assert s["MSH"][2:6] == ["CONVOCATIONS", "HUG", "HOSP_SCHED", "HUG"]


def test_a_repeated_control_id_is_acknowledged_as_a_duplicate():
    ack = answer(wire("siu-s12.hl7"), accepted=Accepted(uuid.uuid4(), duplicate=True))
    assert segments(ack)["MSA"][1] == "AA" and "duplicate" in segments(ack)["MSA"][3]


def replace(data: bytes, old: str, new: str) -> bytes:
    assert old.encode() in data, old
    return data.replace(old.encode(), new.encode(), 1)


S12 = wire("siu-s12.hl7")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (replace(S12, "|19800214|", "|14.02.1980|"), ("AE", "PID^1^7", "102")),  # a date as people write it
        (replace(S12, "|19800214|", "|19800231|"), ("AE", "PID^1^7", "102")),  # no such day
        (replace(S12, "PID|1||", "ZPD|1||"), ("AE", "PID^1^", "100")),  # no PID segment
        (replace(S12, "APT-4711^HOSP_SCHED|APT-4711^CONVOC", "|"), ("AE", "SCH^1^1", "101")),
        (replace(S12, "^AP^PDF^Base64^JVBER", "^AP^PDF^Base64^!!!!"), ("AE", "OBX^1^5", "102")),  # not base64
        (replace(S12, "^AP^PDF^Base64^", "^AP^TIFF^Base64^"), ("AE", "OBX^1^5", "103")),
        (replace(S12, "CARDIO^R204", "DERMA^R204"), ("AE", "AIL^1^3", "103")),  # a department nobody configured
        (replace(S12, "|20300314090000|||30|min", "|20200314090000|||30|min"), ("AE", "AIS^1^4", "102")),  # past
        (replace(S12, "^PRN^CP^^41^79^1234567", "^PRN^CP^^41^79^12"), ("AE", "PID^1^13", "102")),  # no phone number
        (replace(S12, "Müller^Zoë^Anne^^^^L", ""), ("AE", "PID^1^5", "101")),
        (replace(S12, "|2.5.1|", "|3.0|"), ("AR", "MSH^1^12", "203")),  # wrong version
        (replace(S12, "SIU^S12^SIU_S12", "ADT^A01^ADT_A01"), ("AR", "MSH^1^9", "200")),
        (replace(S12, "|P|2.5.1|", "|T|2.5.1|"), ("AR", "MSH^1^11", "202")),  # a test message on production
        (replace(S12, "UNICODE UTF-8", "ISO IR87"), ("AR", "MSH^1", "103")),  # a character set we do not read
    ],
)
def test_a_broken_message_is_refused_with_an_err_naming_the_segment_and_field(data, expected):
    assert err(answer(data)) == expected


def test_a_message_of_bytes_that_are_not_its_declared_charset_is_rejected_naming_msh_18():
    data = S12.replace("Müller".encode(), "Müller".encode("latin-1"))
    msa, location, code = err(answer(data))
    assert (msa, code) == ("AR", "102") and "MSH" in location
    assert b"MSH-18" in answer(data)


def test_latin1_with_msh_18_8859_1_and_hex_escapes_are_read_in_that_charset():
    text = wire("siu-s13.hl7").decode().replace("UNICODE UTF-8", "8859/1").replace("Zoë", "Zo\\Xeb\\")
    m = hl7v2.decode(text.encode("latin-1"), SYSTEM)
    b = hl7v2.booking(m, SYSTEM, "book")
    assert b.patient_name == "Zoë Anne Müller" and "assuré" in b.instructions
    ack = answer(text.encode("latin-1"))
    assert segments(ack)["MSH"][17] == "8859/1" and segments(ack)["MSA"][1] == "AA"


def test_an_event_we_do_not_act_on_is_acknowledged_and_ignored():
    ack = answer(replace(S12, "SIU^S12^SIU_S12", "SIU^S26^SIU_S12"))
    assert segments(ack)["MSA"][1] == "AA" and "ignored" in segments(ack)["MSA"][3]


def test_a_language_we_do_not_write_is_accepted_in_the_default_with_a_warning_in_err():
    ack = answer(replace(S12, "fr^Français^ISO639", "pt^Português^ISO639"))
    s = segments(ack)
    assert s["MSA"][1] == "AA" and s["ERR"][2] == "PID^1^15" and s["ERR"][4] == "W"


def test_a_version_2_3_ack_reports_the_error_in_err_1():
    ack = answer(replace(replace(S12, "|2.5.1|", "|2.3|"), "|19800214|", "|1980|"))
    assert segments(ack)["ERR"][1].startswith("PID^1^7^102")


def test_the_database_away_gets_ar_so_the_sender_retries_with_the_same_control_id():
    msa, _, code = err(answer(S12, accepted=Unavailable()))
    assert (msa, code) == ("AR", "207")


def test_unreadable_bytes_get_a_bare_ar():
    for data in (b"", b"garbage", b"MSH", b"\x00\xff" * 10):
        assert segments(answer(data))["MSA"][1] == "AR"


def test_sandbox_messages_may_say_t_and_our_notifications_to_a_sandbox_say_t():
    ack = answer(replace(S12, "|P|2.5.1|", "|T|2.5.1|"), system=SANDBOX)
    assert segments(ack)["MSA"][1] == "AA"
    out = hl7v2.notification(
        system=SANDBOX,
        appointment_id="A|1",
        kind="status",
        code="e-mailed",
        display="E-mailed",
        at=NOW,
        detail=None,
        control_id="X1",
        sandbox=True,
    )
    s = segments(out)
    assert s["MSH"][8] == "ORU^R01^ORU_R01" and s["MSH"][10] == "T" and s["OBR"][2] == "A\\F\\1"


# --- FHIR ---------------------------------------------------------------------------------------------


def fhir_booking(body: dict | bytes, system=SYSTEM):
    parsed = fhir.parse(body if isinstance(body, bytes) else json.dumps(body).encode())
    return [fhir.booking(item, system) for item in fhir.items(parsed)]


def test_the_appointment_sample_maps_every_field_the_documentation_lists():
    [b] = fhir_booking((SAMPLES / "appointment.json").read_bytes())
    event = created_event(SYSTEM, b, NOW)
    p, a = event.patient, event.appointment
    assert event.convocation_id == convocation_id("dev-his", "APT-5120")
    assert (p.id, p.name, p.birth_date, p.email, p.mobile, p.language) == (
        "PAT-00042",
        "Zoë Anne Müller",
        date(1980, 2, 14),
        "zoe.muller@example.ch",
        "+41791234567",
        "fr",
    )
    assert a.starts_at == datetime(2030, 3, 14, 8, 0, tzinfo=timezone.utc)
    assert (a.place.name, a.place.address) == (
        "Bâtiment Gustave Julliard, 2e étage, salle 204",
        "Rue Gabrielle-Perret-Gentil 4, 1205 Genève",
    )
    assert a.department.code == "cardiology" and a.instructions.endswith("Venez à jeun.")
    assert event.document_bytes().startswith(b"%PDF-")
    assert "7561234567897" not in event.model_dump_json()  # the AHV number is never taken


def test_the_transaction_sample_resolves_its_references_and_the_cancelled_one_cancels():
    [b] = fhir_booking((SAMPLES / "transaction-bundle.json").read_bytes())
    assert (b.appointment_id, b.patient_id, b.place) == (
        "APT-5121",
        "PAT-00042",
        "Bâtiment Gustave Julliard, 2e étage, salle 204",
    )
    assert b.pdf_base64 and created_event(SYSTEM, b, NOW).document_bytes().startswith(b"%PDF-")
    [c] = fhir_booking((SAMPLES / "appointment-cancelled.json").read_bytes())
    assert (c.action, c.appointment_id, c.reason) == ("cancel", "APT-5120", "Annulé à la demande de la patiente")


def test_the_batch_sample_judges_each_entry_alone():
    batch = fhir.parse((SAMPLES / "batch-bundle.json").read_bytes())
    assert isinstance(batch, fhir.Batch) and batch.identifier == "BATCH-20300301"
    good, bad = batch.entries
    assert fhir.booking(good, SYSTEM).patient_name == "Luca Rossi"
    assert isinstance(bad, Problem) and bad.where == "Bundle.entry[1].resource.start"


def sample_appointment() -> dict:
    return json.loads((SAMPLES / "appointment.json").read_text(encoding="utf-8"))


def broken(path: list, value) -> dict:
    doc = sample_appointment()
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "where", "code"),
    [
        (broken(["start"], "2030-03-14 09:00"), "Appointment.start", "invalid"),
        (broken(["participant", 0, "status"], ...), "Appointment.participant[0].status", "required"),
        (
            broken(["participant"], [{"actor": {"reference": "#l1"}, "status": "accepted"}]),
            "Appointment.participant",
            "required",
        ),
        (broken(["contained", 0, "birthDate"], "14.02.1980"), "Appointment.contained[0].birthDate", "invalid"),
        (
            broken(["contained", 0, "identifier"], [{"system": "urn:oid:2.16.756.5.32", "value": "7561234567897"}]),
            "Appointment.participant[0].actor.identifier",
            "required",
        ),
        (
            broken(["contained", 2, "content", 0, "attachment", "contentType"], "image/tiff"),
            "Appointment.supportingInformation[0]",
            "not-supported",
        ),
        (broken(["serviceType"], [{"coding": [{"code": "DERMA"}]}]), "Appointment.serviceType", "unknown"),
        (broken(["start"], "2020-03-14T09:00:00+01:00"), "Appointment.start", "past"),
        (broken(["foo"], 1), "Appointment.foo", "invalid"),
    ],
)
def test_a_broken_appointment_names_the_failing_element(doc, where, code):
    with pytest.raises(Problem) as refused:
        [b] = fhir_booking(doc)
        created_event(SYSTEM, b, NOW)
    assert (refused.value.where, refused.value.code) == (where, code)
    outcome = fhir.outcome([refused.value])
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [where]


def test_a_bundle_with_an_unknown_resource_type_is_a_problem_not_a_crash():
    for body in (
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Nope"}}]},
        {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Nope"}}]},
    ):
        parsed = None
        with pytest.raises(Problem) if body["type"] == "transaction" else _nothing():
            parsed = fhir.parse(json.dumps(body).encode())
        if parsed is not None:
            assert isinstance(parsed.entries[0], Problem)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_statuses_and_requests_back_are_valid_fhir_and_a_sandbox_is_labelled_test_data():
    c = fhir.status_communication(
        system=SYSTEM,
        appointment_id="APT-1",
        event_id=str(uuid.uuid4()),
        status="downloaded",
        display="Downloaded",
        at=NOW,
        detail=None,
        sandbox=True,
    )
    assert c["about"][0]["identifier"]["value"] == "APT-1" and c["meta"]["security"][0]["code"] == "HTEST"
    t = fhir.reissue_task(
        system=SYSTEM,
        appointment_id="APT-1",
        action_id=str(uuid.uuid4()),
        reason="resend",
        display="Resend",
        requested_at=NOW,
        sandbox=False,
    )
    assert (t["status"], t["intent"], t["focus"]["identifier"]["value"]) == ("requested", "order", "APT-1")
    assert "meta" not in t
    assert fhir.capability_statement("http://x/fhir", NOW)["fhirVersion"] == "4.0.1"


# --- CSV ----------------------------------------------------------------------------------------------


def test_the_day_list_sample_gives_two_bookings_and_refuses_the_impossible_date():
    rows = csvlist.rows((SAMPLES / "day-list.csv").read_bytes())
    results = []
    for line, row in rows:
        try:
            results.append(created_event(SYSTEM, csvlist.booking(line, row, SYSTEM), NOW))
        except Problem as problem:
            results.append(problem)
    first, second, third = results
    assert (first.patient.name, first.patient.birth_date, first.patient.language) == (
        "Anna Keller",
        date(1962, 5, 3),
        "de",
    )
    assert first.appointment.starts_at == datetime(2030, 3, 14, 8, 30, tzinfo=SYSTEM.zone)
    assert second.appointment.starts_at.hour == 9 and second.patient.birth_date == date(1988, 9, 21)
    assert third.where == "line 4, column birth_date"


def test_a_list_without_the_required_columns_is_refused_as_a_whole():
    with pytest.raises(Problem, match="appointment_id"):
        csvlist.rows(b"patient_id,name,starts_at,department\n1,A,2030-01-01 08:00,CARDIO\n")


# --- fuzzing: no input crashes a parser, every one gets an answer ---------------------------------------

LINES = wire("siu-s12.hl7").split(b"\r")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400)
    | st.lists(st.sampled_from(LINES) | st.binary(max_size=60), max_size=12).map(b"\r".join)
    | st.tuples(st.integers(0, len(S12) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda cut: S12[: cut[0]] + cut[1] + S12[cut[0] + len(cut[1]) :]
    )
)
def test_fuzzed_hl7_always_gets_an_ack_with_msa_and_never_raises(data):
    ack = answer(data)
    s = segments(ack)
    assert s["MSH"][0] == "MSH" and s["MSA"][1] in ("AA", "AE", "AR")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceType",
                    "status",
                    "start",
                    "participant",
                    "actor",
                    "reference",
                    "contained",
                    "entry",
                    "resource",
                    "type",
                    "identifier",
                    "value",
                    "name",
                    "telecom",
                    "birthDate",
                    "content",
                    "attachment",
                    "data",
                    "contentType",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def mutated_sample(values) -> dict:
    doc = sample_appointment()
    for path, value in values:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return doc


PATHS = [
    ["status"],
    ["start"],
    ["participant", 0, "actor"],
    ["contained", 0, "name"],
    ["contained", 0, "telecom"],
    ["contained", 0, "birthDate"],
    ["contained", 2, "content"],
    ["serviceType"],
    ["identifier"],
    ["supportingInformation"],
    ["contained", 1, "address"],
    ["patientInstruction"],
]


@settings(max_examples=100, deadline=None)
@given(
    JSON
    | st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=3).map(mutated_sample)
    | st.fixed_dictionaries(
        {
            "resourceType": st.sampled_from(["Appointment", "Bundle"]),
            "type": st.sampled_from(["batch", "transaction", "collection"]),
            "entry": JSON,
        }
    )
)
def test_fuzzed_fhir_is_either_mapped_or_refused_with_a_problem(doc):
    try:
        parsed = fhir.parse(json.dumps(doc).encode())
        for item in parsed.entries if isinstance(parsed, fhir.Batch) else fhir.items(parsed):
            if isinstance(item, Problem) or fhir.action_of(item.appointment) is None:
                continue
            b = fhir.booking(item, SYSTEM)
            if b.action == "book":
                created_event(SYSTEM, b, NOW)
    except Problem as problem:
        assert fhir.outcome([problem])["issue"]


class NoDatabase:
    async def submit(self, system, bookings, via):
        raise Unavailable()


@pytest.fixture(scope="module")
def api_client():
    api = Api(SETTINGS, NoDatabase())  # type: ignore[arg-type]

    class Tokens:
        async def client(self, token, *, audience, scope):
            return {"client_id": "his-gateway", "sub": "his-gateway"}

    api.tokens = Tokens()  # type: ignore[assignment]
    app = FastAPI()
    app.include_router(api.router())
    return TestClient(app)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | JSON.map(lambda d: json.dumps(d).encode()),
    path=st.sampled_from(["/fhir/Appointment", "/fhir", "/csv"]),
)
def test_no_fuzzed_request_gets_a_5xx_but_the_database_being_away(api_client, body, path):
    response = api_client.post(path, content=body, headers={"authorization": "Bearer x"})
    assert response.status_code < 500 or (response.status_code == 503 and response.headers["retry-after"])
    if path.startswith("/fhir"):
        assert response.json()["resourceType"] in ("OperationOutcome", "Bundle")


def test_every_letter_sample_is_a_real_pdf():
    assert base64.b64decode(
        json.loads((SAMPLES / "appointment.json").read_text())["contained"][2]["content"][0]["attachment"]["data"]
    ) == sample_pdf("Convocation - Cardiologie")
