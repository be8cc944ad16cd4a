"""Issue #4, point 3: the code policy, each number tested on the running portal (clock moved in the DB)."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import pytest

from tests.e2e.test_portal_helpers import code_hash, letter, neighbour, random_mobile, state_of, travel
from tests.patient import csrf_of

pytestmark = pytest.mark.e2e


def retry_after(response) -> int:
    return int(response.headers["retry-after"])


async def test_the_code_is_six_digits_stored_only_as_an_hmac_under_the_server_key_and_valid_ten_minutes(chain):
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    code = await mail.code()
    assert re.fullmatch(r"\d{6}", code)
    [challenge] = await mail.challenges()
    assert challenge["code_hash"] == code_hash(challenge["id"], code)
    assert challenge["code_hash"] != hashlib.sha256(f"{challenge['id']}:{code}".encode()).hexdigest()
    assert code not in str(dict(challenge))
    assert (challenge["expires_at"] - challenge["created_at"]).total_seconds() == 600

    await mail.travel(601)
    late = mail.patient.follow(mail.patient.enter_code(code))
    assert late.status_code == 410 and state_of(late.text) == "code_expired"


async def test_a_code_works_once(chain):
    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    code = await mail.code()
    assert mail.patient.enter_code(code).status_code == 303
    again = mail.patient.follow(mail.patient.enter_code(code))
    assert again.status_code == 410 and state_of(again.text) == "code_expired"
    assert (
        await chain.db.fetchval("select count(*) from access_portal.session where message_id = $1", mail.message_id)
        == 1
    )


async def test_five_wrong_entries_kill_the_code_and_the_right_one_no_longer_opens(chain):
    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    code = await mail.code()
    for left in (4, 3, 2, 1):
        wrong = mail.patient.follow(mail.guess(neighbour(code)))
        assert wrong.status_code == 400 and f": {left}." in wrong.text  # "Essais restants : 4."
    fifth = mail.patient.follow(mail.guess(neighbour(code)))
    assert fifth.status_code == 429 and state_of(fifth.text) == "wait"
    [challenge] = await mail.challenges()
    assert challenge["status"] == "dead" and challenge["wrong"] == 5
    await mail.travel(61)  # past the wait
    dead = mail.patient.follow(mail.guess(code))
    assert dead.status_code == 410 and state_of(dead.text) == "code_expired"


async def test_a_new_code_does_not_reset_the_failures_of_the_message(chain):
    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    first = await mail.code()
    for _ in range(3):
        assert mail.patient.follow(mail.guess(neighbour(first))).status_code == 400
    await mail.travel(31)
    assert mail.patient.request_code(mail.national).status_code == 303
    second = await mail.code(nth=2)
    # The new code has its own count, but the message's carries on: one try before the wait. The first
    # code still works until it expires, so the guess is counted on it too.
    assert ": 1." in mail.patient.follow(mail.guess(neighbour(second))).text
    assert [c["wrong"] for c in await mail.challenges()] == [4, 1]
    locked = mail.patient.follow(mail.guess(neighbour(second)))
    assert locked.status_code == 429 and state_of(locked.text) == "wait"
    assert (await mail.message_row())["failed_checks"] == 5


async def test_codes_are_sent_at_most_every_30_seconds_and_5_times_per_message_per_hour(chain):
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    too_soon = mail.patient.follow(
        mail.patient.request_code(mail.national)
    )  # the code sent still works: the code page says when
    assert too_soon.status_code == 429 and state_of(too_soon.text) == "too_early"
    assert 25 <= retry_after(too_soon) <= 30
    for _ in range(4):
        await mail.travel(31)
        assert mail.patient.request_code(mail.national).status_code == 303
    await mail.travel(31)
    sixth = mail.patient.follow(mail.patient.request_code(mail.national))
    assert sixth.status_code == 429 and state_of(sixth.text) == "too_early"
    assert 3600 - 5 * 31 - 5 <= retry_after(sixth) <= 3600 - 5 * 31  # until the first send is an hour old
    assert len(await mail.challenges()) == 5
    await mail.travel(retry_after(sixth) + 1)
    assert mail.patient.request_code(mail.national).status_code == 303


async def test_a_number_gets_at_most_10_codes_a_day_over_all_its_letters(chain):
    e164, national = random_mobile()
    mail = await letter(chain, mobile=national)
    other = await letter(chain, mobile=national)  # another patient's letter with the same number on file
    for _hour in range(2):
        for _ in range(5):
            assert mail.patient.request_code(national).status_code == 303
            await mail.travel(31)
        await mail.travel(3600)
    eleventh = mail.patient.follow(mail.patient.request_code(national))
    assert eleventh.status_code == 429 and retry_after(eleventh) > 3600  # the day cap, not the hour cap
    elsewhere = other.patient.follow(other.patient.request_code(national))
    assert elsewhere.status_code == 429 and state_of(elsewhere.text) == "wait"
    assert await other.challenges() == []
    await travel(chain.db, [mail.message_id], 24 * 3600)
    assert other.patient.request_code(national).status_code == 303


async def test_concurrent_requests_over_many_letters_of_one_number_stay_within_the_day_cap(chain):
    """Issue 7, item 5: 14 requests at once on 14 letters of one number get 10 codes, not 14."""
    e164, national = random_mobile()
    mails = [await letter(chain, mobile=national) for _ in range(14)]
    forms = [(mail, csrf_of(mail.patient.open_link().text)) for mail in mails]
    async with httpx.AsyncClient(timeout=30) as client:

        async def ask(mail, csrf) -> str:
            cookies = "; ".join(f"{k}={v}" for k, v in mail.patient.cookies.items())
            response = await client.post(
                f"{mail.patient.base}{mail.path}/code",
                data={"csrf": csrf, "k": mail.patient.secret, "phone": national},
                headers={"cookie": cookies},
            )
            assert response.status_code == 303  # post/redirect/get, whatever the outcome
            return response.headers["location"].split("/")[-1]

        places = await asyncio.gather(*(ask(mail, csrf) for mail, csrf in forms))
    # Ten code pages; four first pages saying to wait (no code of theirs was sent, so none still works).
    assert sorted(p.rsplit("?", 1)[-1] for p in places) == ["code"] * 10 + ["told=wait"] * 4
    assert (
        await chain.db.fetchval(
            "select count(*) from access_portal.challenge where message_id = any($1::uuid[])",
            [m.message_id for m in mails],
        )
        == 10
    )
    await chain.sms_to(e164, nth=10)
    await asyncio.sleep(1)
    assert chain.sms_count(e164) == 10


async def test_repeated_failures_impose_escalating_waits_never_a_lock_and_show_the_secretariat(chain):
    mail = await letter(chain)
    waits = []
    for round_ in range(1, 6):
        assert mail.patient.request_code(mail.national).status_code == 303
        code = await mail.code(nth=round_)
        for _ in range(4):
            assert mail.patient.follow(mail.guess(neighbour(code))).status_code == 400
        wait = mail.patient.follow(mail.guess(neighbour(code)))
        assert wait.status_code == 429 and state_of(wait.text) == "wait"
        assert mail.secretariat_phone in wait.text
        assert re.search(r"\d\d:\d\d", wait.text)  # until when, Swiss time
        waits.append(retry_after(wait))
        refused = mail.patient.follow(mail.guess(code))  # during the wait even the right code is not checked
        assert refused.status_code == 429
        await mail.travel(retry_after(wait) + 1)
    assert [round(w / 60) for w in waits] == [1, 5, 15, 60, 60]
    # After the last wait the patient can still get in: never a permanent lock.
    assert mail.patient.request_code(mail.national).status_code == 303
    assert mail.patient.enter_code(await mail.code(nth=6)).status_code == 303
    locks = [o for a, o in await mail.audit() if a == "lock"]
    assert locks == ["60s", "300s", "900s", "3600s", "3600s"]


async def test_what_cannot_be_a_code_costs_no_try_and_a_pasted_code_works(chain):
    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    code = await mail.code()
    for junk in ("", "12345", "abcdef", "1234567", code + "0"):
        refused = mail.patient.follow(mail.guess(junk))
        assert refused.status_code == 400 and "6" in refused.text and 'id="error-summary"' in refused.text
    [challenge] = await mail.challenges()
    assert challenge["wrong"] == 0 and (await mail.message_row())["failed_checks"] == 0
    assert mail.guess(f"#{code[:3]} {code[3:]}").status_code == 303  # pasted with the '#' and a space
