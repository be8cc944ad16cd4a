"""Issue 20 (items 2, 3, 6, 7, 8, 15) and issue 17 (item 4) in a real browser: the patient's pages keep the
patient's place, never post a form again on Back, Help or a reload, say when the patient signed out or the
session ended, tell that the letter goes by post, answer a link that leads nowhere in the browser's language,
and say until when the message opens. Each test presses the buttons as a patient would (Chromium, CSP on)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from access_portal.i18n import gettext
from shared.contracts import PostalProgressV1
from shared.i18n import format_appointment, format_long_date
from tests.browser.test_portal_browser import localhost, to_code_page, watched
from tests.e2e.test_portal_helpers import Letter, letter, publish_as_service
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
LANGUAGES = ("fr", "de", "it", "en")


async def log_in(page, mail: Letter) -> str:
    """From the e-mailed link to the appointment on the document page; returns the page's address."""
    page_url = await to_code_page(page, mail.link, mail.national)
    await page.fill("#code", await mail.code())
    await page.press("#code", "Enter")
    await page.wait_for_selector("#appointment-title")  # the appointment, opened with the tab's secret
    return page_url


def posts_a_page(page) -> list[str]:
    """Every page load the browser makes with a POST (what "Confirm Form Resubmission" asks to repeat)."""
    posted: list[str] = []
    page.on(
        "request",
        lambda r: posted.append(r.url) if r.is_navigation_request() and r.method != "GET" else None,
    )
    return posted


async def back_after_help(page, page_url: str) -> None:
    """Help (the guide), then the guide's own way back, then the browser's Back twice: to the guide, to the page."""
    here = page.url
    await page.click("#help-link")
    await page.wait_for_url("**/guide**")
    back = await page.get_attribute("#back-to-letter", "href")
    assert back == here.split("?")[0].removeprefix(page_url.split("/m/")[0])  # the guide leads back to the letter
    await page.click("#back-to-letter")
    await page.wait_for_load_state()
    await page.go_back()
    await page.go_back()
    await page.wait_for_load_state()


async def test_the_language_switch_keeps_the_page_the_session_and_what_was_typed(chain, browser):
    mail = await letter(chain)
    w = await watched(browser)
    page = w.page
    page_url = localhost(mail.link).split("#", 1)[0]
    try:
        await page.goto(localhost(mail.link))
        await page.fill("#phone", mail.national[:6])  # half typed, then the language changed
        await page.click("a[hreflang=de]")
        await page.wait_for_url(f"{page_url}?lang=de")
        assert await page.evaluate("document.documentElement.lang") == "de"
        assert await page.input_value("#phone") == mail.national[:6]

        await page.fill("#phone", mail.national)
        await page.click(f"button:has-text('{gettext('de', 'Send me a code by SMS')}')")
        await page.wait_for_url(f"{page_url}/code")
        code = await mail.code()
        await page.fill("#code", code[:3])
        await page.click("a[hreflang=it]")  # on the code page: the code page, in Italian, the digits kept
        await page.wait_for_url(f"{page_url}/code?lang=it")
        assert await page.evaluate("document.documentElement.lang") == "it"
        assert await page.input_value("#code") == code[:3]
        assert chain.sms_count(mail.e164) == 1 and len(await mail.challenges()) == 1  # no new SMS offered or sent

        await page.fill("#code", code)
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")
        await page.click("a[hreflang=en]")  # after the code: the appointment again, in English, same session
        await page.wait_for_url(f"{page_url}/document?lang=en")
        await page.wait_for_selector("#appointment-title")
        assert await page.inner_text("#appointment-title") == "Your appointment"
        starts_at = datetime.fromisoformat(mail.event["data"]["appointment"]["starts_at"])
        assert format_appointment(starts_at, "en") in await page.inner_text("[data-field=when]")
        assert len(await mail.challenges()) == 1 and chain.sms_count(mail.e164) == 1
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_back_and_help_never_post_a_form_again_and_the_guide_leads_back(chain, browser):
    mail = await letter(chain)
    w = await watched(browser)
    page = w.page
    posted = posts_a_page(page)
    page_url = localhost(mail.link).split("#", 1)[0]
    try:
        await to_code_page(page, mail.link, mail.national)
        code = await mail.code()
        await page.fill("#code", f"{(int(code) + 1) % 10**6:06d}")  # a wrong code: the form answers with an error
        await page.press("#code", "Enter")
        await page.wait_for_selector("#error-summary")
        assert page.url == f"{page_url}/code?told=wrong_code"  # post/redirect/get: the page says it, by GET
        posted.clear()
        await back_after_help(page, page_url)
        assert posted == [] and page.url == f"{page_url}/code?told=wrong_code"
        assert await page.is_visible("#code")

        await page.fill("#code", code)
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")
        await page.click(f"button:has-text('{gettext('fr', 'Receive this convocation by post instead')}')")
        await page.wait_for_selector("[data-state=paper_told]")
        assert page.url == f"{page_url}/document"  # answered with a redirect
        posted.clear()
        await back_after_help(page, page_url)
        await page.reload()
        await page.wait_for_selector("#appointment-title")  # the document page, by GET, the appointment shown
        assert posted == []

        await page.click("form[action$='/logout'] button")
        await page.wait_for_url(f"{page_url}/signed-out")
        posted.clear()
        await page.go_back()  # to the document page: asked again by GET, and the session is over
        await page.wait_for_selector("[data-state=session_expired]")
        assert posted == [] and not await page.locator("#appointment-title").count()
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_signing_out_says_so_and_forgets_the_letter_in_the_tab(chain, browser):
    mail = await letter(chain, language="de")
    w = await watched(browser)
    page = w.page
    try:
        page_url = await log_in(page, mail)
        await page.click("form[action$='/logout'] button")
        await page.wait_for_url(f"{page_url}/signed-out")
        assert await page.get_attribute("h1", "data-state") == "signed_out"
        assert await page.inner_text("h1") == gettext("de", "You are signed out")
        assert "link_incomplete" not in await page.content()
        assert await page.evaluate(f"sessionStorage.getItem('k:{mail.message_id}')") is None
        ended = await chain.db.fetchval(
            "select bool_and(ended_at is not null) from access_portal.session where message_id = $1", mail.message_id
        )
        assert ended
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_when_the_session_ends_the_appointment_leaves_the_screen(chain, browser):
    mail = await letter(chain)
    w = await watched(browser)
    page = w.page
    await page.clock.install()  # the page's own clock, moved on below as the server's is (travel)
    try:
        page_url = await log_in(page, mail)
        assert await page.is_visible("#appointment-title")
        await mail.travel(15 * 60 + 5)  # the server's idle limit has passed...
        await page.clock.fast_forward("15:10")  # ... and so has the page's: the warning, then the end
        await page.wait_for_selector("[data-state=session_expired]")
        assert page.url.startswith(f"{page_url}/document")
        assert not await page.locator("#appointment-title").count()
        assert not await page.locator("form[action$='/download/pdf']").count()
        await page.go_back()  # Back shows no appointment either
        await page.wait_for_load_state()
        assert not await page.locator("#appointment-title").is_visible()
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_paper_is_told_on_every_page_and_the_button_gives_way(chain, browser):
    # The secretariat chose paper: told on the link's page, the code page and the document page.
    mail = await letter(chain)
    asked = datetime.now(timezone.utc) - timedelta(days=1)
    progress = PostalProgressV1(
        message_id=mail.message_id,
        convocation_id=uuid.UUID(mail.convocation_id),
        step="requested",
        reason="secretariat",
        at=asked,
    )
    await publish_as_service(chain, progress, producer="issuer")
    await eventually(
        lambda: chain.db.fetchval("select true from access_portal.paper where message_id = $1", mail.message_id)
    )
    told = gettext(
        "fr",
        "On %(date)s the secretariat asked for this convocation to be sent to you by post: the hospital will send it "
        "to you.",
        date=format_long_date(asked, "fr"),
    )
    w = await watched(browser)
    page = w.page
    page_url = localhost(mail.link).split("#", 1)[0]
    try:
        await page.goto(localhost(mail.link))
        assert await page.inner_text("[data-state=paper_told]") == told
        await page.fill("#phone", mail.national)
        await page.press("#phone", "Enter")
        await page.wait_for_url(f"{page_url}/code")
        assert await page.inner_text("[data-state=paper_told]") == told
        await page.fill("#code", await mail.code())
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")
        assert await page.inner_text("[data-state=paper_told]") == told
        assert not await page.locator("form[action$='/postal']").count()  # no longer offered

        posted = progress.model_copy(update={"step": "posted", "reason": None, "at": datetime.now(timezone.utc)})
        await publish_as_service(chain, posted, producer="issuer")
        sent = gettext(
            "fr",
            "This convocation was sent to you by post on %(date)s, at the secretariat's request.",
            date=format_long_date(posted.at, "fr"),
        )

        async def says_sent():
            await page.reload()
            return await page.inner_text("[data-state=paper_told]") == sent

        await eventually(says_sent)
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


async def test_paper_asked_by_the_patient_is_told_and_asking_after_a_download_answers(chain, browser):
    w = await watched(browser)
    page = w.page
    try:
        mail = await letter(chain, language="it")
        await log_in(page, mail)
        await page.click("form[action$='/postal'] button")
        await page.wait_for_selector("[data-state=paper_told]")
        today = format_long_date(datetime.now(timezone.utc), "it")
        assert await page.inner_text("[data-state=paper_told]") == gettext(
            "it", "On %(date)s you asked for this convocation by post: the hospital will send it to you.", date=today
        )
        assert not await page.locator("form[action$='/postal']").count()

        # Downloaded first, then "by post" pressed on the same page: the page says why nothing is posted.
        other = await letter(chain, language="it")
        await log_in(page, other)
        async with page.expect_download():
            await page.click("form[action$='/download/pdf'] button")
        await page.click("form[action$='/postal'] button")
        await page.wait_for_selector("[data-state=post_after_download]")
        assert await page.inner_text("[data-state=post_after_download]") == gettext(
            "it",
            "You have already downloaded this convocation, so it is no longer sent by post. If you need it on paper "
            "all the same, call the secretariat.",
        )
        assert (await other.message_row())["postal_requested_at"] is None
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_link_that_leads_nowhere_answers_in_the_browsers_language_with_a_way_forward(chain, browser, lang):
    mail = await letter(chain)
    base = localhost(mail.link).split("/m/", 1)[0]
    context = await browser.new_context(locale=f"{lang}-CH")  # the browser's Accept-Language
    page = await context.new_page()
    try:
        for path in (f"/m/{uuid.uuid4()}", f"/m/{str(mail.message_id)[:20]}", "/m/"):  # unknown, cut, cut short
            await page.goto(base + path)
            assert await page.evaluate("document.documentElement.lang") == lang, path
            assert await page.get_attribute("h1", "data-state") == "unknown", path
            assert await page.inner_text("h1") == gettext(lang, "Link not recognised")
            call = page.locator("main a[href^='tel:']")  # the way forward: a number to call, and the guide
            assert await call.count() == 1 and await page.locator(f"a[href='/guide?lang={lang}']").count() == 1
    finally:
        await context.close()


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_the_link_page_and_the_document_page_say_until_when_the_message_opens(chain, browser, lang):
    mail = await letter(chain, language=lang)
    expires_at = await chain.db.fetchval(
        "select expires_at from access_portal.message where message_id = $1", mail.message_id
    )
    until = gettext(
        lang,
        "You can open this message until %(until)s. After that it is destroyed.",
        until=format_appointment(expires_at, lang),
    )
    w = await watched(browser)
    try:
        await w.page.goto(localhost(mail.link))
        assert await w.page.inner_text("#open-until") == until
        await log_in(w.page, mail)
        assert await w.page.inner_text("#open-until") == until
    finally:
        await w.context.close()
