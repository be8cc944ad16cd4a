"""The secretariat's security review (issue 21, item 11), each with the test that failed before: refusals
audited (a form without its CSRF token, a failed sign-in, a refused API token), tokens naming unknown keys
that cannot make the console refetch the provider's keys without limit, corrected numbers that must be
mobiles of an allowed country; and the API of every console action (email-instead, the figures)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from devstack.stack import http
from tests.e2e.test_secretariat_api import Api, kinds, token
from tests.staff import StaffClient

pytestmark = pytest.mark.e2e


async def audit_since(chain, since: datetime, outcome: str) -> list:
    return await chain.db.fetch(
        "select * from secretariat_audit.staff_audit where at >= $1 and outcome = $2 order by id", since, outcome
    )


@pytest.fixture(scope="module")
def cardio(stack, devoidc) -> Api:
    return Api(stack, token(devoidc, "his-cardiology"))


async def test_csrf_refusals_failed_sign_ins_and_refused_tokens_are_audited(chain, stack, cardio):
    since = datetime.now(timezone.utc)
    event = chain.event()
    await chain.publish(event)
    cid = event["data"]["convocation_id"]
    await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    staff = StaffClient(stack.url("secretariat"))
    try:
        staff.sign_in("alice")
        refused = staff.request("POST", f"/c/{cid}/actions", data={"action": "post", "reason": "no token sent"})
        assert refused.status_code == 403
        # A sign-in coming back without the state this browser started it with.
        stranger = StaffClient(stack.url("secretariat"))
        assert stranger.request("GET", "/auth/callback?code=stolen&state=guessed").status_code == 401
        stranger.close()
    finally:
        staff.close()
    assert (
        http(
            "GET",
            f"{cardio.base}/convocations",
            params={"worklist": "bounced"},
            headers={"authorization": "Bearer not.a.token"},
            timeout=10,
        ).status_code
        == 401
    )
    csrf = await audit_since(chain, since, "refused:csrf")
    assert [(r["name"], r["via"], r["action"]) for r in csrf] == [("Alice Martin", "console", "action")]
    sign_in = await audit_since(chain, since, "refused:sign-in")
    assert [(r["name"], r["action"]) for r in sign_in] == [("", "sign-in")] and "state" in sign_in[0]["detail"]
    tokens = await audit_since(chain, since, "refused:token")
    assert [(r["name"], r["via"], r["action"]) for r in tokens] == [("", "api", "api-token")]
    assert (
        await chain.db.fetchval(
            "select count(*) from secretariat_audit.staff_audit where at >= $1"
            " and action = 'action' and outcome = 'requested'",
            since,
        )
        == 0
    )


async def test_tokens_naming_unknown_keys_cannot_make_the_console_refetch_the_providers_keys_without_limit(
    stack, devoidc
):
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
    before = devoidc.jwks_served
    for _ in range(20):  # each names a key the provider never had: before issue 21, a key-set fetch each
        key = RSAKey.generate_key(2048, {"kid": uuid.uuid4().hex})
        bearer = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        r = http("GET", url, params={"worklist": "bounced"}, headers={"authorization": f"Bearer {bearer}"}, timeout=10)
        assert r.status_code == 401
    assert devoidc.jwks_served - before <= 1  # at most once per JWKS_REFRESH_SECONDS


async def test_a_corrected_mobile_must_be_a_mobile_of_an_allowed_country(chain, cardio):
    event = chain.event()
    await chain.publish(event)
    cid = event["data"]["convocation_id"]
    await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    for number, refusal in (
        ("0900 123 456", "mobile-not-mobile"),  # premium rate: accepted before issue 21
        ("+41 22 372 33 11", "mobile-not-mobile"),  # a landline
        ("+1 415 555 2671", "mobile-country"),
    ):  # outside MOBILE_ALLOWED_COUNTRIES
        r = cardio.post(
            f"/convocations/{cid}/actions",
            {"action": "correct-mobile", "reason": "patient gave a new number", "mobile": number},
        )
        assert (r.status_code, r.json()) == (400, {"error": refusal}), number
    assert (
        await chain.db.fetchval("select count(*) from secretariat.action where convocation_id = $1", uuid.UUID(cid))
        == 0
    )


async def test_the_api_offers_every_console_action_and_the_figures_and_refuses_what_does_not_fit(chain, cardio):
    event = chain.event()
    await chain.publish(event)
    cid = event["data"]["convocation_id"]
    body = await cardio.wait(cid, lambda b: "e-mailed" in kinds(b))
    assert {"post", "resend", "withdraw", "correct-email", "correct-mobile", "reset-binding"} <= set(
        body["available_actions"]
    ) and "email-instead" not in body["available_actions"]
    assert body["patient"]["name"] == "Marie Dupont" and body["department_name"] == "Cardiologie"
    r = cardio.post(f"/convocations/{cid}/actions", {"action": "email-instead", "reason": "not on paper at all"})
    assert (r.status_code, r.json()) == (409, {"error": "not-on-paper"})
    assert cardio.post(f"/convocations/{cid}/actions", {"action": "post", "reason": "patient asked"}).status_code == 202
    body = await cardio.wait(cid, lambda b: "postal" in kinds(b))
    assert "email-instead" in body["available_actions"] and "withdraw" not in body["available_actions"]
    r = cardio.post(f"/convocations/{cid}/actions", {"action": "withdraw", "reason": "after paper"})
    assert (r.status_code, r.json()) == (409, {"error": "after-paper"})
    figures = cardio.get("/figures").json()
    assert [d["department"] for d in figures["departments"]] == ["cardiology"]
    assert figures["departments"][0]["sent"] >= 1 and figures["days"] == 3
    spec = http("GET", cardio.base.removesuffix("/v1") + "/openapi.json", timeout=10).json()
    assert "/v1/figures" in spec["paths"]
    actions = spec["components"]["schemas"]["ActionRequest"]["properties"]["action"]["enum"]
    assert set(actions) == {
        "post",
        "email-instead",
        "resend",
        "correct-email",
        "withdraw",
        "correct-mobile",
        "reset-binding",
        "unlock",
    }
