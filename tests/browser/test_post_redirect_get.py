"""Issue 20, item 3 in a real browser: every form of the portal answers its POST with a redirect (303) to a
page reached by GET that says what happened (post/redirect/get). For each refusal (a wrong number, no proof
of the link, "Send a new code" too early, a wrong code, an expired code, a lock) the patient presses Back,
Help then Back, and reload: the browser never sends the form again ("Confirm Form Resubmission"), the page
says the same thing again, and the refusal is audited once."""

from __future__ import annotations

import pytest

from tests.browser.test_patient_pages import back_after_help
from tests.browser.test_portal_browser import localhost, to_code_page, watched
from tests.e2e.conftest import random_mobile
from tests.e2e.test_portal_helpers import Letter, letter, neighbour

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def form_posts(page) -> list[tuple[str, int]]:
    """Every navigation the browser made with a POST, with the status it was answered with."""
    seen: list[tuple[str, int]] = []

    def answered(response) -> None:
        if response.request.is_navigation_request() and response.request.method == "POST":
            seen.append((response.url, response.status))

    page.on("response", answered)
    return seen


def page_posts(page) -> list[str]:
    """Every page load the browser starts with a POST (what a resubmission would be)."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.is_navigation_request() and r.method != "GET" else None)
    return sent


async def ask_for_code(page, mail: Letter, page_url: str) -> str:
    await to_code_page(page, mail.link, mail.national)
    return await mail.code()


async def wrong_number(page, mail: Letter, page_url: str) -> tuple[str, str]:
    await page.goto(localhost(mail.link))
    other = next(n for _, n in iter(random_mobile, None) if n[-2:] != mail.national[-2:])
    await page.fill("#phone", other)
    await page.press("#phone", "Enter")
    await page.wait_for_selector("[data-state=number_mismatch]")
    assert await page.input_value("#phone") == other  # typed in again by the tab, never carried in the address
    return "?told=number_mismatch", "[data-state=number_mismatch]"


async def no_proof(page, mail: Letter, page_url: str) -> tuple[str, str]:
    await page.goto(localhost(mail.link))
    await page.fill("#phone", mail.national)
    await page.evaluate("document.querySelector('#number-form input[name=k]').value = ''")  # the proof is lost
    await page.press("#phone", "Enter")
    await page.wait_for_selector("h1[data-state=no_proof]")
    return "?told=no_proof", "h1[data-state=no_proof]"


async def too_early(page, mail: Letter, page_url: str) -> tuple[str, str]:
    await ask_for_code(page, mail, page_url)
    await page.click("form[action$='/code'] button")  # "Send a new code" at once
    await page.wait_for_selector("[data-state=too_early]")
    assert await page.is_visible("#code")  # the code already sent can be typed on that page
    return "/code?told=too_early", "[data-state=too_early]"


async def wrong_code(page, mail: Letter, page_url: str) -> tuple[str, str]:
    wrong = neighbour(await ask_for_code(page, mail, page_url))
    await page.fill("#code", wrong)
    await page.press("#code", "Enter")
    await page.wait_for_selector("#code-error")
    assert await page.input_value("#code") == wrong  # typed in again by the tab
    assert "4" in await page.inner_text("#code-error")  # tries left, counted by the database
    return "/code?told=wrong_code", "#code-error"


async def expired_code(page, mail: Letter, page_url: str) -> tuple[str, str]:
    code = await ask_for_code(page, mail, page_url)
    await mail.travel(601)
    await page.fill("#code", code)
    await page.press("#code", "Enter")
    await page.wait_for_selector("h1[data-state=code_expired]")
    return "/code?told=code_expired", "h1[data-state=code_expired]"


async def locked(page, mail: Letter, page_url: str) -> tuple[str, str]:
    wrong = neighbour(await ask_for_code(page, mail, page_url))
    for _ in range(4):
        mail.guess(wrong)  # four wrong codes from elsewhere; the fifth, in the browser, starts the wait
    await page.fill("#code", wrong)
    await page.press("#code", "Enter")
    await page.wait_for_selector("h1[data-state=wait]")
    return "/code?told=wait", "h1[data-state=wait]"


OUTCOMES = {
    "wrong number": (wrong_number, "code-request", "number_mismatch"),
    "no proof": (no_proof, "code-request", "no-proof"),
    "too early": (too_early, "code-request", "rate-limited"),
    "wrong code": (wrong_code, "code-check", "wrong"),
    "expired code": (expired_code, "code-check", "expired"),
    "lock": (locked, "lock", "60s"),
}


@pytest.mark.parametrize("outcome", OUTCOMES)
async def test_each_refusal_is_a_page_reached_by_get_that_back_help_and_reload_never_post_again(
    chain, browser, outcome
):
    reach, action, audited = OUTCOMES[outcome]
    mail = await letter(chain)
    w = await watched(browser)
    page = w.page
    answers = form_posts(page)
    page_url = localhost(mail.link).split("#", 1)[0]
    try:
        place, shown = await reach(page, mail, page_url)
        assert answers and all(status == 303 for _, status in answers), answers  # every form post: a redirect
        assert page.url == page_url + place  # the page that says it, by GET (no number or code in it)
        before = page.url.removesuffix(place) + ("/code" if place.startswith("/code") else "")
        resent = page_posts(page)
        rows = [a for a in await mail.audit() if a == (action, audited)]
        assert len(rows) == 1, await mail.audit()

        await page.reload()
        await page.wait_for_selector(shown)  # the same outcome, asked again by GET
        await back_after_help(page, page_url)  # Help, the guide's way back, Back twice: this page again
        assert page.url == page_url + place
        await page.wait_for_selector(shown)
        await page.go_back()  # before the form was posted: the form's own page
        await page.wait_for_load_state()
        assert page.url.split("#")[0] == before
        await page.go_forward()
        await page.wait_for_selector(shown)

        assert resent == []  # no POST was sent again: no "Confirm Form Resubmission"
        assert [a for a in await mail.audit() if a == (action, audited)] == rows  # counted and audited once
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_every_form_of_the_portal_answers_its_post_with_a_redirect(chain, browser):
    """Walks every form a patient can press, from the link to signing out: each POST that loads a page is
    answered 303 and the browser lands on a GET; the downloads answer with the file, the page staying put."""
    mail = await letter(chain)
    w = await watched(browser)
    page = w.page
    answers = form_posts(page)
    page_url = localhost(mail.link).split("#", 1)[0]
    pressed: list[str] = []

    async def press(selector: str, then: str) -> None:
        pressed.append((await page.get_attribute(selector, "action") or "").rsplit("/", 1)[-1])
        async with page.expect_navigation():
            await page.eval_on_selector(selector, "form => form.requestSubmit()")
        await page.wait_for_selector(then)

    try:
        await page.goto(localhost(mail.link))
        await page.fill("#phone", "079 12")
        await press("#number-form", "#phone-error")  # a number that cannot be one
        await page.fill("#phone", mail.national)
        await press("#number-form", "#code")
        await press("form[action$='/code']", "[data-state=too_early]")  # "Send a new code"
        await page.fill("#code", "12")
        await press("form[action$='/verify']", "#code-error")
        await page.fill("#code", await mail.code())
        await press("form[action$='/verify']", "#appointment-title")
        await press("form[action$='/extend']", "#appointment-title")  # "Stay on the page" (shown by the timer)
        for kind in ("pdf", "ics"):
            async with page.expect_download() as download:
                await page.click(f"form[action$='/download/{kind}'] button")
            assert (await download.value).suggested_filename.endswith(f".{kind}")
        await press("form[action$='/postal']", "[data-state=post_after_download]")
        await press("form[action$='/logout']", "[data-state=signed_out]")
        assert page.url == f"{page_url}/signed-out"
        assert pressed == ["code", "code", "code", "verify", "verify", "extend", "postal", "logout"]
        pages = [status for url, status in answers if "/download/" not in url]
        assert pages == [303] * len(pressed), answers
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []
