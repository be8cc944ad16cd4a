"""The secretariat's JSON API on the running chain: department scoping by id guessing, tokens refused,
actions carried out by the owning service, audited once, and not twice on replay."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from devoidc import DevOidc
from joserfc import jwt
from joserfc.jwk import RSAKey

from devstack.stack import http
from tests.e2e.conftest import code_of, random_mobile
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = pytest.mark.e2e
NEURO = ("neurology", "Neurologie")


def token(devoidc, client_id: str) -> str:
    secret = next(c["client_secret"] for c in devoidc.clients if c["client_id"] == client_id)
    r = http("POST", f"{devoidc.issuer}/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


class Api:
    def __init__(self, stack, bearer: str) -> None:
        self.base, self.headers = f"{stack.url('secretariat')}/api/v1", {"authorization": f"Bearer {bearer}"}

    def get(self, path: str, **params) -> httpx.Response:
        return http("GET", self.base + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, body: dict) -> httpx.Response:
        return http("POST", self.base + path, json=body, headers=self.headers, timeout=10)

    async def wait(self, convocation_id: str, until, timeout: float = PATIENCE) -> dict:
        last: dict = {}

        def there() -> dict | None:
            r = self.get(f"/convocations/{convocation_id}")
            last["seen"] = r.json() if r.status_code == 200 else (r.status_code, r.text[:300])
            return last["seen"] if r.status_code == 200 and until(last["seen"]) else None

        return await eventually(there, timeout, what="the read model's expected state", seen=lambda: last.get("seen"))


def kinds(body: dict) -> list[str]:
    return [t["kind"] for t in body["timeline"]]


@pytest.fixture(scope="module")
def cardio(stack, devoidc) -> Api:
    return Api(stack, token(devoidc, "his-cardiology"))


@pytest.fixture(scope="module")
def neuro(stack, devoidc) -> Api:
    return Api(stack, token(devoidc, "his-neurology"))


async def test_a_department_sees_its_own_convocation_timeline_and_nothing_of_another(chain, cardio, neuro):
    mine = chain.event(patient_id=f"P-{uuid.uuid4().hex[:8]}")
    theirs = chain.event(department=NEURO, patient_id=f"P-{uuid.uuid4().hex[:8]}")
    await chain.publish(mine)
    await chain.publish(theirs)
    cid, other = mine["data"]["convocation_id"], theirs["data"]["convocation_id"]
    body = await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    assert body["department"] == "cardiology" and body["delivery"] == "email"
    assert kinds(body)[:2] == ["sealed", "e-mailed"]
    await neuro.wait(other, lambda b: "e-mailed" in kinds(b))
    # Id guessing on every route: the other department's convocation does not exist for cardiology.
    assert cardio.get(f"/convocations/{other}").status_code == 404
    assert cardio.get("/convocations", convocation_id=other).json() == []
    assert cardio.get("/convocations", department="neurology").json() == []
    found = cardio.post("/convocations/search", {"patient_id": theirs["data"]["patient"]["id"]})
    assert found.status_code == 200 and found.json() == []
    for action in ("post", "withdraw", "unlock", "reset-binding"):
        r = cardio.post(f"/convocations/{other}/actions", {"action": action, "reason": "patient called us"})
        assert r.status_code == 404, (action, r.text)
    r = cardio.post(
        f"/convocations/{other}/actions",
        {"action": "correct-mobile", "reason": "patient called us", "mobile": random_mobile()[1]},
    )
    assert r.status_code == 404
    # ...and its own, by patient id through the keyed hash.
    found = cardio.post("/convocations/search", {"patient_id": mine["data"]["patient"]["id"]}).json()
    assert [f["convocation_id"] for f in found] == [cid]
    assert await chain.db.fetchval("select count(*) from secretariat.convocation where patient_ref is null") == 0
    refs = await chain.db.fetch("select patient_ref from secretariat.convocation")
    assert mine["data"]["patient"]["id"] not in json.dumps([r["patient_ref"] for r in refs])


async def test_expired_forged_foreign_and_wrong_audience_tokens_are_refused(stack, devoidc, cardio):
    url = f"{stack.url('secretariat')}/api/v1/convocations"
    now = int(time.time())
    claims = {
        "iss": devoidc.issuer,
        "sub": "his-cardiology",
        "aud": "secretariat-api",
        "scope": "convocations.read",
        "departments": ["cardiology"],
        "iat": now,
        "exp": now + 300,
    }
    forged_key = RSAKey.generate_key(2048, {"kid": devoidc.key.kid})  # the right kid, another key
    with DevOidc() as stranger:  # a real provider the console does not trust
        foreign = stranger.access_token(
            {
                "client_id": "his-cardiology",
                "audience": "secretariat-api",
                "scope": "convocations.read",
                "departments": ["cardiology"],
            }
        )
    bad = {
        "none": None,
        "expired": devoidc.sign({**claims, "iat": now - 900, "exp": now - 600}),
        "forged": jwt.encode({"alg": "RS256", "kid": devoidc.key.kid}, claims, forged_key),
        "unknown issuer": foreign,
        "wrong audience": devoidc.sign({**claims, "aud": "secretariat-console"}),
        "garbage": "not.a.token",
    }
    for name, bearer in bad.items():
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        r = http("GET", url, params={"worklist": "bounced"}, headers=headers, timeout=10)
        assert r.status_code == 401, (name, r.status_code, r.text)
    assert http("GET", url, params={"worklist": "bounced"}, headers=cardio.headers, timeout=10).status_code == 200
    read_only = devoidc.sign(claims)
    r = http(
        "POST",
        f"{url}/{uuid.uuid4()}/actions",
        json={"action": "unlock", "reason": "patient called"},
        headers={"authorization": f"Bearer {read_only}"},
        timeout=10,
    )
    assert r.status_code in (403, 404)


async def test_send_by_post_is_done_by_the_issuer_audited_once_and_not_repeated_on_replay(chain, cardio, stack):
    event = chain.event()
    await chain.publish(event)
    cid = event["data"]["convocation_id"]
    await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    r = cardio.post(f"/convocations/{cid}/actions", {"action": "post", "reason": "patient asked for paper by phone"})
    assert r.status_code == 202, r.text
    action_id = r.json()["action_id"]
    body = await cardio.wait(cid, lambda b: "postal" in kinds(b))
    entry = next(t for t in body["timeline"] if t["kind"] == "postal")
    assert entry["action_id"] == action_id and entry["detail"] == "secretariat"
    posted = await chain.postal(cid)
    assert [e["data"]["reason"] for e in posted] == ["secretariat"]
    audit = await chain.db.fetch(
        "select * from secretariat_audit.staff_audit where convocation_id = $1 and action = 'action'", uuid.UUID(cid)
    )
    assert [(a["outcome"], a["reason"], a["via"]) for a in audit] == [
        ("requested", "patient asked for paper by phone", "api")
    ]
    # A second request is refused: the letter is already on its way by post.
    again = cardio.post(f"/convocations/{cid}/actions", {"action": "post", "reason": "asked again"})
    assert again.status_code == 409 and again.json() == {"error": "already-delivered"}
    # Replaying the action event on the bus (same event id, as a redelivery would) changes nothing.
    outbox_event = await chain.db.fetchrow(
        "select * from issuer.inbox where routing_key = 'staff.action.requested.v1' order by 1 desc limit 1"
    )
    assert outbox_event is not None
    requested = {
        "event_id": str(outbox_event["event_id"]),
        "type": "staff.action.requested",
        "version": 1,
        "occurred_at": "2026-11-29T10:00:00+00:00",
        "producer": "secretariat",
        "correlation_id": cid,
        "causation_id": None,
        "data": {
            "action_id": action_id,
            "convocation_id": cid,
            "message_id": body["message_id"],
            "action": "post",
            "department": "cardiology",
            "requested_by": "replay",
        },
    }
    await chain.publish(requested)
    await chain.publish({**requested, "event_id": str(uuid.uuid4())})  # and as a new event: still once
    await asyncio.sleep(2)
    posted = await chain.postal(cid, lambda es: True)
    assert len(posted) == 1
    body = cardio.get(f"/convocations/{cid}").json()
    assert kinds(body).count("postal") == 1


async def test_the_api_is_described_by_openapi(stack):
    spec = http("GET", f"{stack.url('secretariat')}/api/openapi.json", timeout=10).json()
    assert {
        "/v1/convocations",
        "/v1/convocations/search",
        "/v1/convocations/{convocation_id}",
        "/v1/convocations/{convocation_id}/actions",
    } <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_reset_binding_is_done_by_the_portal_and_the_patient_is_asked_for_the_number_again(chain, cardio):
    e164, national = random_mobile()
    first = chain.event(mobile=national, patient_id=f"P-{uuid.uuid4().hex[:8]}")
    await chain.publish(first)
    patient = PatientClient(find_link((await chain.email_to(first["data"]["patient"]["email"]))["text"]))
    patient.request_code(national)
    assert patient.enter_code(code_of(await chain.sms_to(e164))).status_code == 303
    cid = first["data"]["convocation_id"]
    await cardio.wait(cid, lambda b: "code-sent" in kinds(b))
    body = await cardio.wait(cid, lambda b: b["phone_verified"] is True)  # the patient typed the code
    assert body["phone_hint"] and national.replace(" ", "")[3:8] not in body["phone_hint"]  # masked
    r = cardio.post(f"/convocations/{cid}/actions", {"action": "reset-binding", "reason": "patient lost the phone"})
    assert r.status_code == 202
    body = await cardio.wait(cid, lambda b: "binding-reset" in kinds(b))
    assert next(t for t in body["timeline"] if t["kind"] == "binding-reset")["action_id"] == r.json()["action_id"]
    assert body["phone_verified"] is False
    ref = await chain.db.fetchval("select patient_ref from secretariat.convocation where id = $1", uuid.UUID(cid))
    assert await chain.db.fetchval("select count(*) from access_portal.phone_binding where patient_ref = $1", ref) == 0
