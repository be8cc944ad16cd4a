"""Issue #4, point 6: every state the patient can meet has its own page that says what to do and whom
to call, never a generic error."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

import pytest

from tests.e2e.conftest import random_email
from tests.e2e.test_portal_helpers import letter, neighbour, state_of
from tests.patient import PatientClient
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def heading(html: str) -> str:
    return re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S).group(1).strip()


def upstream_cancellation(convocation_id: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "convocation.cancelled",
        "version": 1,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "producer": "hospital-his",
        "correlation_id": convocation_id,
        "causation_id": None,
        "data": {"convocation_id": convocation_id, "reason": "patient called"},
    }


async def revoked(chain, mail, reason: str) -> None:
    await eventually(
        lambda: chain.db.fetchval(
            "select revoked_reason = $2 from access_portal.message where message_id = $1", mail.message_id, reason
        )
    )


async def test_each_state_has_its_own_page_with_what_to_do_and_whom_to_call(chain):
    pages = {}
    base = PatientClient((await letter(chain)).link)

    pages["unknown"] = base.get(f"/m/{uuid.uuid4()}")
    pages["unknown (not an id)"] = base.get("/m/%F0%9F%92%A9'--")

    expired = await letter(chain)
    await chain.db.execute(
        "update access_portal.message set expires_at = now() - interval '1 second' where message_id = $1",
        expired.message_id,
    )
    pages["expired"] = expired.patient.open_link()

    cancelled = await letter(chain)
    await chain.publish(upstream_cancellation(cancelled.convocation_id))
    await revoked(chain, cancelled, "cancelled")
    pages["cancelled"] = cancelled.patient.open_link()

    superseded = await letter(chain)
    again = chain.event(convocation_id=uuid.UUID(superseded.convocation_id), email=random_email())
    await chain.publish(again)
    await revoked(chain, superseded, "superseded")
    pages["superseded"] = superseded.patient.open_link()

    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    code = await mail.code()
    # Each form's POST answers with a redirect; the page it leads to says what happened.
    pages["wrong_code"] = mail.patient.follow(mail.guess(neighbour(code)))
    for _ in range(3):
        mail.guess(neighbour(code))
    pages["wait"] = mail.patient.follow(mail.guess(neighbour(code)))
    await mail.travel(61)
    pages["code_expired"] = mail.patient.follow(mail.guess(code))

    expected = {
        "unknown": (404, "unknown"),
        "unknown (not an id)": (404, "unknown"),
        "expired": (410, "expired"),
        "cancelled": (410, "cancelled"),
        "superseded": (410, "superseded"),
        "wrong_code": (400, "code_error"),
        "wait": (429, "wait"),
        "code_expired": (410, "code_expired"),
    }
    assert {k: (r.status_code, state_of(r.text)) for k, r in pages.items()} == expected
    assert "4" in re.search(r'id="code-error">(.*?)</p>', pages["wrong_code"].text).group(1)  # tries left, by the field
    assert re.search(r"\b\d\d:\d\d\b", pages["wait"].text)  # until when
    assert int(pages["wait"].headers["retry-after"]) <= 60

    # What to do: each says something of its own; whom to call: the department's secretariat.
    titles = {k: heading(r.text) for k, r in pages.items() if k != "unknown (not an id)"}
    assert len(set(titles.values())) == len(titles), titles
    for name, response in pages.items():
        if not name.startswith("unknown"):
            assert mail.secretariat_phone in response.text, name
    assert "secrétariat" in pages["unknown"].text


async def test_an_sms_the_provider_could_not_deliver_gets_its_own_page(chain):
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    await mail.sms()
    challenge = await mail.sms_failed()
    await eventually(
        lambda: chain.db.fetchval("select sms_failed from access_portal.challenge where id = $1", challenge["id"])
    )
    page = mail.patient.get(f"{mail.path}/code")
    assert page.status_code == 200 and state_of(page.text) == "sms_failed"
    assert mail.secretariat_phone in page.text and f'href="{mail.path}"' in page.text  # ask again, or call
    check = mail.patient.follow(mail.guess(await mail.code()))
    assert check.status_code == 410 and state_of(check.text) == "sms_failed"
    assert ("code-sms", "failed") in await mail.audit()
