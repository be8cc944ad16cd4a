"""Issue 20, items 4, 5, 10 and 11: the code page tells the truth about the codes. "Send a new code" too
early says when and keeps the code field; an earlier code works until it expires and is never a wrong
try; the page can learn that the SMS failed without a reload; the time left comes from the code."""

from __future__ import annotations

import re
import uuid
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.test_portal_helpers import letter, neighbour, state_of
from tests.waiting import eventually

pytestmark = pytest.mark.e2e
GENEVA = ZoneInfo("Europe/Zurich")


def seconds_left(html: str) -> int:
    return int(re.search(r'data-seconds-left="(\d+)"', html).group(1))


def time_left(html: str) -> str:
    return re.search(r'<span id="code-left">([0-9:]+)</span>', html).group(1)


@pytest.mark.parametrize(
    "language, soon, still",
    [
        ("fr", "pourra être envoyé dans", "reste valable jusqu’à"),
        ("de", "kann in", "gilt noch bis"),
        ("it", "potrà essere inviato tra", "resta valido fino alle"),
        ("en", "can be sent in", "still works until"),
    ],
)
async def test_send_a_new_code_too_early_says_when_and_that_the_code_sent_still_works_with_its_field(
    chain, language, soon, still
):
    """Item 4: before, "no code can be sent or checked before HH:MM" with a link to the number form."""
    mail = await letter(chain, language=language)
    assert mail.patient.request_code(mail.national).status_code == 303
    code = await mail.code()
    early = mail.patient.follow(mail.post("code", {"resend": "1"}))  # post/redirect/get
    assert early.history[0].headers["location"] == f"{mail.path}/code?told=too_early"
    assert early.status_code == 429 and state_of(early.text) == "too_early"
    wait = int(early.headers["retry-after"])
    assert 25 <= wait <= 31
    said = re.search(r'<div class="warning" id="too-early"[^>]*>(.*?)</div>', early.text, re.S).group(1)
    assert f"{soon} {wait} " in said, said
    [challenge] = await mail.challenges()
    expires = challenge["expires_at"].astimezone(GENEVA)
    assert f"{still} {expires:%H:%M}" in said, said
    assert 'id="code"' in early.text and 'action="/m/' in early.text and "/verify" in early.text
    assert len(await mail.challenges()) == 1 and chain.sms_count(mail.e164) == 1  # nothing new was sent
    # A reload asks the GET again: the same page, the wait recounted, the refusal audited once (by the POST).
    again = mail.patient.get(early.history[0].headers["location"])
    assert again.status_code == 429 and state_of(again.text) == "too_early"
    assert int(again.headers["retry-after"]) <= wait
    assert [a for a in await mail.audit() if a[0] == "code-request"] == [
        ("code-request", "sent"),
        ("code-request", "rate-limited"),
    ]
    # The code field on that page takes the code already sent.
    assert mail.patient.enter_code(code).status_code == 303


async def test_too_early_after_the_hour_cap_says_from_when_in_the_patients_time(chain):
    """Item 4 with a longer wait (five codes in the hour): the hour, written as the patient's language
    writes it, not a count of seconds."""
    mail = await letter(chain, language="de")
    for _ in range(5):
        assert mail.patient.request_code(mail.national).status_code == 303
        await mail.travel(31)
    early = mail.patient.follow(mail.post("code", {"resend": "1"}))
    assert early.status_code == 429 and state_of(early.text) == "too_early"
    assert re.search(r"Ein neuer Code kann ab \d\d:\d\d \(Schweizer Zeit\) gesendet werden\.", early.text)
    assert int(early.headers["retry-after"]) > 3000


async def test_an_earlier_code_works_until_it_expires_and_is_never_counted_as_a_wrong_try(chain):
    """Item 5: the patient asked twice and types the first SMS's code."""
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    first = await mail.code()
    await mail.travel(31)
    assert mail.patient.request_code(mail.national).status_code == 303
    second = await mail.code(nth=2)
    assert mail.patient.enter_code(first).status_code == 303  # the earlier code opens
    assert [c["status"] for c in await mail.challenges()] == ["used", "dead"]  # and the later one ends
    again = mail.patient.follow(mail.patient.enter_code(second))
    assert again.status_code == 410 and state_of(again.text) == "code_expired"

    # An earlier code that has expired while a later one still works: told, never a wrong try.
    other = await letter(chain, language="en")
    assert other.patient.request_code(other.national).status_code == 303
    old = await other.code()
    await other.travel(400)
    assert other.patient.request_code(other.national).status_code == 303
    latest = await other.code(nth=2)
    await other.travel(300)  # the first is 700 s old (expired), the second 300 s (still valid)
    told = other.patient.follow(other.patient.enter_code(old))
    assert told.status_code == 400 and state_of(told.text) == "code_error"
    assert "This code no longer works: it has expired or was already used." in told.text
    assert [c["wrong"] for c in await other.challenges()] == [0, 0]
    assert (await other.message_row())["failed_checks"] == 0
    assert ("code-check", "old-code") in await other.audit()
    assert other.patient.enter_code(latest).status_code == 303


async def test_each_code_meets_at_most_five_wrong_guesses_however_many_are_live(chain):
    """Item 5 keeps the brute-force bound: a wrong guess counts on every code it was compared with."""
    mail = await letter(chain)
    for _ in (1, 2):
        assert mail.patient.request_code(mail.national).status_code == 303
        await mail.travel(31)
    first, second = await mail.code(), await mail.code(nth=2)
    wrong = next(c for c in (neighbour(first), neighbour(neighbour(first))) if c != second)
    for _ in range(4):
        assert mail.patient.follow(mail.guess(wrong)).status_code == 400
    assert [c["wrong"] for c in await mail.challenges()] == [4, 4]
    assert mail.patient.follow(mail.guess(wrong)).status_code == 429  # the fifth failure of the message: a wait
    assert [(c["wrong"], c["status"]) for c in await mail.challenges()] == [(5, "dead"), (5, "dead")]


async def test_the_time_left_comes_from_the_codes_expiry(chain):
    """Item 11: the page counts from the code, not from the setting (a page opened later shows less)."""
    mail = await letter(chain, language="fr")
    assert mail.patient.request_code(mail.national).status_code == 303
    page = mail.patient.get(f"{mail.path}/code").text
    assert 595 <= seconds_left(page) <= 600 and time_left(page) in ("10:00", "9:59", "9:58", "9:57", "9:56", "9:55")
    await mail.travel(250)
    later = mail.patient.get(f"{mail.path}/code").text
    assert 345 <= seconds_left(later) <= 350 and time_left(later).startswith("5:")
    assert "Temps restant pour taper ce code" in later
    [challenge] = await mail.challenges()
    local = challenge["expires_at"].astimezone(GENEVA)
    assert f'Il est valable jusqu’à <span data-clock="until">{local:%H:%M}</span> (heure suisse).' in later


async def test_the_code_page_can_learn_that_the_sms_failed_without_a_reload(chain):
    """Item 10: GET …/code/status says waiting, sent or failed; it changes nothing and writes no audit row."""
    mail = await letter(chain)
    assert mail.patient.get(f"{mail.path}/code/status").json() == {"sms": "none"}
    assert mail.patient.request_code(mail.national).status_code == 303
    await mail.sms()
    status = mail.patient.get(f"{mail.path}/code/status")
    assert status.headers["content-type"] == "application/json" and "no-store" in status.headers["cache-control"]
    assert status.json()["sms"] in ("waiting", "sent")
    rows = len(await mail.audit())
    await mail.sms_failed()

    async def failed():
        return mail.patient.get(f"{mail.path}/code/status").json() == {"sms": "failed"}

    await eventually(failed)
    assert len(await mail.audit()) == rows + 1  # the sms.failed itself; the polls wrote nothing
    assert mail.patient.get(f"/m/{uuid.uuid4()}/code/status").json() == {"sms": "none"}
