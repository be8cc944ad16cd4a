"""Issue #4, point 3: brute force. Whoever holds the link can only test as many codes as the policy
allows, in parallel or over a whole day, so the chance of guessing stays within the caps."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.test_portal_helpers import letter, neighbour
from tests.patient import csrf_of

pytestmark = pytest.mark.e2e

GUESSES_PER_CODE = 5
CODES_PER_NUMBER_PER_DAY = 10


async def checked_guesses(chain, mail) -> int:
    """How many guesses the portal really compared with a live code."""
    return await chain.db.fetchval(
        "select count(*) from portal_audit.access_audit where message_id = $1 and action = 'code-check'"
        " and outcome in ('wrong', 'right')",
        mail.message_id,
    )


async def test_a_burst_of_parallel_guesses_gets_no_more_than_five_checked(chain):
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    code = await mail.code()
    csrf = csrf_of(mail.patient.get(f"{mail.path}/code").text)
    cookies = dict(mail.patient.cookies)
    async with httpx.AsyncClient(base_url=mail.patient.base, timeout=20) as attacker:

        async def guess(n: int) -> str:
            response = await attacker.post(
                f"{mail.path}/verify",
                data={"csrf": csrf, "k": mail.patient.secret, "code": f"{n:06d}"},
                headers={"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            )
            assert response.status_code == 303  # post/redirect/get: the code page saying why not
            return response.headers["location"]

        guesses = [n for n in range(60) if f"{n:06d}" != code]
        places = await asyncio.gather(*(guess(n) for n in guesses))
    assert all(p.startswith(f"{mail.path}/code?told=") for p in places), set(places)  # never the document
    assert await checked_guesses(chain, mail) == GUESSES_PER_CODE
    assert places.count(f"{mail.path}/code?told=wait") >= len(guesses) - GUESSES_PER_CODE  # the rest met the wait
    assert mail.patient.get(f"{mail.path}/code?told=wait").status_code == 429
    [challenge] = await mail.challenges()
    assert challenge["wrong"] == GUESSES_PER_CODE and challenge["status"] == "dead"


async def test_an_attacker_who_waits_exactly_as_told_gets_at_most_50_guesses_a_day(chain):
    """The optimal attacker: asks for a code as soon as allowed, spends every try, and waits exactly
    the Retry-After the portal gives (the clock is moved instead of sleeping)."""
    mail = await letter(chain)
    sent, requests = 0, 0

    async def elapsed() -> float:
        """Time on the portal's clock since the first code (real time plus the moves)."""
        return await chain.db.fetchval(
            "select coalesce(extract(epoch from now() - min(created_at)), 0)::float from access_portal.challenge"
            " where message_id = $1",
            mail.message_id,
        )

    async def wait(response) -> None:
        await mail.travel(int(response.headers["retry-after"]) + 1)

    while await elapsed() < 24 * 3600 and requests < 400:
        requests += 1
        asked = mail.patient.request_code(mail.national)
        if asked.headers["location"] != f"{mail.path}/code":
            told = mail.patient.follow(asked)
            assert told.status_code == 429
            await wait(told)
            continue
        sent += 1
        code = await mail.code(nth=sent)
        while True:
            requests += 1
            answer = mail.patient.follow(mail.guess(neighbour(code)))
            if answer.status_code == 429:
                await wait(answer)
                break
            if answer.status_code == 410:  # the code is dead; ask for another
                break
            assert answer.status_code == 400
    checked = await checked_guesses(chain, mail)
    assert sent <= CODES_PER_NUMBER_PER_DAY
    assert checked <= GUESSES_PER_CODE * CODES_PER_NUMBER_PER_DAY
    # A code works until it expires, so a guess may meet several live codes: each such pair is one chance,
    # and each code meets at most 5 guesses. One day of the best attack: at most 50 (guess, code) pairs,
    # a success chance of at most 5e-5.
    compared = await chain.db.fetchval(
        "select coalesce(sum(wrong), 0) from access_portal.challenge where message_id = $1", mail.message_id
    )
    assert compared <= GUESSES_PER_CODE * CODES_PER_NUMBER_PER_DAY
    assert compared / 10**6 <= 5e-5
    # Waits, never a lock-out: once they have passed, the patient gets a code again.
    assert mail.patient.request_code(mail.national).status_code == 303
