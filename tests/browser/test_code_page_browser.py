"""Issue 20, items 1, 4, 5, 10 and 11 in Chromium (CSP enforced), pressing the buttons a patient presses:
a wrong number is told; without the whole link (or without JavaScript) nothing is sent; "Send a new code"
too early keeps the code field; an earlier code opens; an SMS failure shows without a reload; the time
left counts down and is announced only now and then."""

from __future__ import annotations

import asyncio

import pytest

from access_portal.i18n import gettext
from tests.browser.test_portal_browser import localhost, to_code_page, watched
from tests.e2e.test_portal_helpers import letter, random_mobile
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def test_a_wrong_number_is_told_on_the_page_and_nothing_is_sent(chain, browser):
    mail = await letter(chain, language="en")
    other_e164, other_national = random_mobile()
    w = await watched(browser)
    page = w.page
    try:
        await page.goto(localhost(mail.link))
        await page.fill("#phone", other_national)
        await page.get_by_role("button", name=gettext("en", "Send me a code by SMS")).click()
        await page.wait_for_selector("#error-summary")
        told = await page.locator("#phone-error").inner_text()
        assert f"does not match the one we have for you, which ends in {mail.e164[-2:]}" in told
        assert await page.input_value("#phone") == other_national  # kept, to be checked
        assert await page.evaluate("document.activeElement.id") == "error-summary"
        # Corrected in place: the code goes to the number on file.
        await page.fill("#phone", mail.national)
        await page.get_by_role("button", name=gettext("en", "Send me a code by SMS")).click()
        await page.wait_for_selector("#code")
        await mail.sms()
        await w.collect()
    finally:
        await w.context.close()
    assert chain.sms_count(other_e164) == 0 and len(await mail.challenges()) == 1
    assert w.csp_problems() == []


async def test_without_javascript_the_page_says_so_and_pressing_the_button_sends_nothing(chain, browser):
    mail = await letter(chain, language="fr")
    context = await browser.new_context(java_script_enabled=False, locale="fr-CH")
    page = await context.new_page()
    try:
        await page.goto(localhost(mail.link))
        needs = await page.locator("#no-js").inner_text()
        assert "JavaScript" in needs and "#" in needs
        await page.fill("#phone", mail.national)
        await page.get_by_role("button", name=gettext("fr", "Send me a code by SMS")).click()
        await page.wait_for_selector("[data-state=no_proof]")
        text = await page.locator("main").inner_text()
        assert gettext("fr", "Open the whole link from your e-mail") in text
        assert "Rien n’a été envoyé" in text
    finally:
        await context.close()
    assert await mail.challenges() == [] and chain.sms_count(mail.e164) == 0
    assert (await mail.message_row())["failed_checks"] == 0


async def test_the_code_page_without_the_links_secret_says_so_and_counts_no_guess(chain, browser):
    """Someone with the page's address only (no fragment) cannot guess codes: refused, nothing counted."""
    mail = await letter(chain)
    assert mail.patient.request_code(mail.national).status_code == 303
    w = await watched(browser)
    page = w.page
    try:
        await page.goto(localhost(mail.link).split("#")[0] + "/code")
        assert await page.locator("#link-missing").is_visible()
        for n in range(6):
            await page.fill("#code", f"{n:06d}")
            await page.press("#code", "Enter")
            await page.wait_for_selector("[data-state=no_proof]")
            await page.go_back()
        await w.collect()
    finally:
        await w.context.close()
    row = await mail.message_row()
    assert row["failed_checks"] == 0 and row["locked_until"] is None
    assert [c["wrong"] for c in await mail.challenges()] == [0]
    assert mail.patient.enter_code(await mail.code()).status_code == 303
    assert w.csp_problems() == []


async def test_send_a_new_code_too_early_keeps_the_code_field_and_the_code_sent_opens(chain, browser):
    mail = await letter(chain, language="de")
    w = await watched(browser)
    page = w.page
    try:
        await to_code_page(page, mail.link, mail.national)
        code = await mail.code()
        await page.get_by_role("button", name=gettext("de", "Send a new code")).click()
        await page.wait_for_selector("[data-state=too_early]")
        notice = await page.locator("#too-early").inner_text()
        assert "Ein neuer Code kann in" in notice and "Sekunden gesendet werden" in notice
        assert "gilt noch bis" in notice
        await page.fill("#code", code)  # the field is on this page
        await page.get_by_role("button", name=gettext("de", "Open my message")).click()
        await page.wait_for_selector("#appointment-title")
        await w.collect()
    finally:
        await w.context.close()
    assert len(await mail.challenges()) == 1
    assert w.csp_problems() == []


async def test_the_code_of_the_first_sms_still_opens_after_asking_for_a_new_one(chain, browser):
    mail = await letter(chain, language="it")
    w = await watched(browser)
    page = w.page
    page_url = localhost(mail.link).split("#")[0]
    try:
        await to_code_page(page, mail.link, mail.national)
        first = await mail.code()
        await mail.travel(31)
        await page.get_by_role("button", name=gettext("it", "Send a new code")).click()
        await page.wait_for_url(f"{page_url}/code")
        await mail.code(nth=2)
        await page.fill("#code", first)
        await page.get_by_role("button", name=gettext("it", "Open my message")).click()
        await page.wait_for_selector("#appointment-title")
        await w.collect()
    finally:
        await w.context.close()
    assert [c["wrong"] for c in await mail.challenges()] == [0, 0]
    assert (await mail.message_row())["failed_checks"] == 0
    assert w.csp_problems() == []


async def test_an_sms_failure_appears_on_the_open_code_page_with_what_to_do(chain, browser):
    mail = await letter(chain, language="en")
    w = await watched(browser)
    page = w.page
    page_url = localhost(mail.link).split("#")[0]
    try:
        await to_code_page(page, mail.link, mail.national)
        await page.evaluate("window.__samePage = true")  # gone if the page reloads
        await mail.sms()
        assert not await page.locator("#sms-failed-now").is_visible()
        await mail.sms_failed()
        panel = page.locator("#sms-failed-now")
        await panel.wait_for(state="visible", timeout=15000)
        assert await page.evaluate("window.__samePage") is True
        assert await page.evaluate("document.activeElement.id") == "sms-failed-now"
        live = "document.getElementById('sms-failed-now').parentElement.getAttribute('aria-live')"
        assert await page.evaluate(live) == "assertive"
        text = await panel.inner_text()
        assert "The SMS could not be delivered" in text and "ask for a new code" in text
        assert "Call the secretariat at" in text and await panel.locator("a[href^='tel:']").count() == 1
        # The next step it names: a new code, which goes out.
        await page.get_by_role("button", name=gettext("en", "Send a new code")).click()
        await page.wait_for_url(f"{page_url}/code")
        await mail.sms(nth=2)
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_the_time_left_counts_down_from_the_code_and_is_announced_only_now_and_then(chain, browser):
    mail = await letter(chain, language="fr")
    assert mail.patient.request_code(mail.national).status_code == 303
    w = await watched(browser)
    page = w.page
    page_url = localhost(mail.link).split("#")[0]
    try:
        await page.goto(localhost(mail.link))
        await mail.travel(600 - 310)  # the code was sent 290 s ago: 5 min 10 s left
        await page.goto(f"{page_url}/code")
        said = page.locator("#code-time-said")
        minutes, seconds = (await page.locator("#code-left").inner_text()).split(":")
        left = 60 * int(minutes) + int(seconds)
        assert 300 < left <= 310, left  # from the code's expiry (a slow machine may have lost a few seconds)
        assert await said.inner_text() == ""  # nothing announced before the 5 minutes mark
        # The 5 minutes mark is announced once, when the count passes it.
        await eventually(lambda: said.inner_text())
        assert "Temps restant pour taper ce code" in await said.inner_text()
        assert (await page.locator("#code-left").inner_text()).startswith(("5:00", "4:5"))
        announced = await said.inner_text()
        await asyncio.sleep(2)
        assert await said.inner_text() == announced  # not every second
        # The end: the page says the code is over, and announces it.
        await mail.travel(296)
        await page.goto(f"{page_url}/code")
        await eventually(lambda: page.locator("#code-over").is_visible())
        assert not await page.locator("#code-time").is_visible()
        assert gettext("fr", "Your code has expired") in await said.inner_text()
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []
