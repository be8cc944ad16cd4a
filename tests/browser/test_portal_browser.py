"""The patient's whole path in a real browser (Chromium, CSP enforced), and a link scanner that runs
JavaScript and presses buttons."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from access_portal.i18n import gettext
from shared import crypto
from tests.e2e.test_portal_helpers import EventSpy, letter
from tests.unit.test_crypto import LINK_VECTOR_FRAGMENT, LINK_VECTOR_SECRET

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Collects CSP violations from inside the page. Playwright injects it through the DevTools protocol,
# so the page's own CSP (no inline script) does not apply to it.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""


class Watched:
    """A fresh browser context and page that records console errors and CSP violations."""

    def __init__(self, context, page) -> None:
        self.context, self.page = context, page
        self.console: list[str] = []
        self.errors: list[str] = []
        self.violations: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    async def collect(self) -> None:
        self.violations += await self.page.evaluate("window.__csp || []")

    def csp_problems(self) -> list[str]:
        return self.violations + [c for c in self.console if "Content Security Policy" in c] + self.errors


async def watched(browser) -> Watched:
    context = await browser.new_context(accept_downloads=True, locale="fr-CH")
    await context.add_init_script(WATCH_CSP)
    return Watched(context, await context.new_page())


def localhost(link: str) -> str:
    """Chromium keeps Secure cookies from http://localhost (a secure context), so the browser uses it."""
    return link.replace("://127.0.0.1:", "://localhost:")


async def to_code_page(page, link: str, national: str) -> str:
    """From the e-mailed link, the number typed and sent, to the code page; returns the page's address."""
    page_url = localhost(link).split("#", 1)[0]
    await page.goto(localhost(link))
    await page.fill("#phone", national)
    await page.press("#phone", "Enter")
    await page.wait_for_url(f"{page_url}/code")
    return page_url


async def test_a_patient_goes_from_the_emailed_link_to_the_identical_pdf_in_chromium(chain, browser):
    mail = await letter(chain)
    pdf_sent = base64.b64decode(mail.event["data"]["document_pdf_base64"])
    link = localhost(mail.link)
    page_url, fragment = link.split("#", 1)
    secret = crypto.secret_of_fragment(fragment)
    w = await watched(browser)
    page = w.page
    seen_headers = []
    page.on("response", lambda r: seen_headers.append((r.url, r.headers)))
    try:
        await page.goto(link)
        # portal.js moved the secret from the fragment into this tab's sessionStorage.
        assert page.url == page_url
        assert await page.evaluate(f"sessionStorage.getItem('k:{mail.message_id}')") == secret
        assert f"** {mail.e164[-2:]}" in await page.locator("#hint").inner_text()

        await page.get_by_label(gettext("fr", "Mobile number")).fill(mail.national)
        await page.get_by_role("button", name=gettext("fr", "Send me a code by SMS")).click()
        await page.wait_for_url(f"{page_url}/code")
        code_input = page.get_by_label(gettext("fr", "Code received by SMS"))
        assert await code_input.get_attribute("autocomplete") == "one-time-code"
        await code_input.fill(await mail.code())
        await page.get_by_role("button", name=gettext("fr", "Open my message")).click()
        await page.wait_for_url(f"{page_url}/document")

        assert not await page.locator("#no-js").is_visible()
        assert not await page.locator("#link-missing").is_visible()
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name=gettext("fr", "Download the convocation (PDF)")).click()
        download = await download_info.value
        assert Path(await download.path()).read_bytes() == pdf_sent
        day = (
            datetime.fromisoformat(mail.event["data"]["appointment"]["starts_at"])
            .astimezone(ZoneInfo("Europe/Zurich"))
            .date()
            .isoformat()
        )
        assert download.suggested_filename == f"convocation-{day}.pdf"

        session = {c["name"]: c for c in await w.context.cookies()}["__Host-session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
        assert session["path"] == "/" and session["domain"] == "localhost"
        await w.collect()
        assert w.csp_problems() == []
        pages = [h for url, h in seen_headers if "/m/" in url]
        assert pages and all("script-src 'self'" in h["content-security-policy"] for h in pages)
        assert secret[:20] not in " ".join(url for url, _ in seen_headers)  # never sent in a URL

        # Logging out forgets the secret in the tab too.
        await page.get_by_role("button", name=gettext("fr", "Log out")).click()
        await page.wait_for_url(f"{page_url}/signed-out")
        assert await page.evaluate(f"sessionStorage.getItem('k:{mail.message_id}')") is None
    finally:
        await w.context.close()
    await chain.wait_status(mail.convocation_id, "downloaded")
    assert secret[:20] not in chain.stack.logs()


async def portal_state(chain, mail) -> dict:
    counts = {}
    for table in ("challenge", "session", "release"):
        counts[table] = await chain.db.fetchval(
            f"select count(*) from access_portal.{table} where message_id = $1", mail.message_id
        )
    counts["sms"] = chain.sms_count(mail.e164)
    counts["status"] = await chain.status(mail.convocation_id)
    counts["failed_checks"] = (await mail.message_row())["failed_checks"]
    return counts


async def scan(browser, link: str) -> Watched:
    """What a scanning sandbox does: plain GET and HEAD, then open the link in a browser, let its
    JavaScript run and press every button on every page it reaches."""
    with httpx.Client(timeout=10) as plain:
        for _ in range(2):
            assert plain.get(link.split("#")[0]).status_code == 200
            assert plain.head(link.split("#")[0]).status_code == 200
    w = await watched(browser)
    await w.page.goto(localhost(link))
    for path in ("", "/code", "/document"):
        await w.page.goto(localhost(link.split("#")[0]) + path)
        for button in await w.page.get_by_role("button").all():
            await button.click(timeout=2000)
            await w.page.wait_for_load_state()
        await w.collect()
    await w.context.close()
    return w


async def test_a_scanner_that_fetches_runs_javascript_and_clicks_changes_nothing(chain, browser):
    mail = await letter(chain)
    await chain.wait_status(mail.convocation_id, "e-mailed")
    before = await portal_state(chain, mail)
    async with EventSpy(chain.exchange, "otp.requested.v1", "document.released.v1") as spy:
        w = await scan(browser, mail.link)
        events = [e for e in await spy.collect(timeout=1.5) if e["data"]["message_id"] == str(mail.message_id)]
    assert events == []
    assert (
        await portal_state(chain, mail)
        == before
        == {"challenge": 0, "session": 0, "release": 0, "sms": 0, "status": "e-mailed", "failed_checks": 0}
    )
    # Seen (audited as views), and nothing else.
    assert set(await mail.audit()) == {("view", "ok"), ("code-view", "no-code"), ("document-view", "no-session")}
    assert w.csp_problems() == []


async def test_for_a_patient_with_a_bound_number_a_clicking_scanner_releases_nothing(chain, browser):
    patient_id = f"P-{uuid.uuid4().hex[:10]}"
    first = await letter(chain, patient_id=patient_id)
    await first.log_in()
    mail = await letter(chain, mobile=first.national, patient_id=patient_id)  # no number step any more
    await chain.wait_status(mail.convocation_id, "e-mailed")
    await scan(browser, mail.link)
    after = await portal_state(chain, mail)
    # Pressing "send me a code" may text the patient, but without the code nothing opens.
    assert after["session"] == 0 and after["release"] == 0 and after["status"] == "e-mailed"
    assert after["failed_checks"] == 0  # an empty code is not a guess: the patient's tries are intact


def damaged(fragment: str) -> dict[str, str]:
    """The ways a mail program or a patient copying by hand damages a link's fragment."""
    i = next(i for i in range(5, len(fragment)) if fragment[i] != fragment[i + 1])
    other = "A" if fragment[i] != "A" else "B"
    return {
        "one character changed": fragment[:i] + other + fragment[i + 1 :],
        "two neighbours swapped": fragment[:i] + fragment[i + 1] + fragment[i] + fragment[i + 2 :],
        "a check character changed": fragment[:-1] + ("A" if fragment[-1] != "A" else "B"),
        "cut": fragment[:30],
        "lengthened": fragment + "Q",
        "missing": "",
    }


async def test_a_damaged_link_is_told_on_the_first_page_before_a_number_is_typed_or_an_sms_sent(chain, browser):
    mail = await letter(chain)
    page_url, fragment = localhost(mail.link).split("#", 1)
    w = await watched(browser)
    page = w.page
    sent = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
    told = {}
    try:
        for what, bad in damaged(fragment).items():
            await page.goto("about:blank")  # a new load each time (not a jump within the page)
            await page.goto(f"{page_url}#{bad}" if bad else page_url)
            told[what] = (
                await page.locator("#link-damaged").is_visible(),
                await page.locator("#number-form").is_visible(),
                await page.evaluate(f"sessionStorage.getItem('k:{mail.message_id}')"),
            )
        # The same vector as the Python unit test: the page's JavaScript computes the same check.
        await page.goto("about:blank")
        await page.goto(f"{page_url}#{LINK_VECTOR_FRAGMENT}")
        assert not await page.locator("#link-damaged").is_visible()
        assert await page.evaluate(f"sessionStorage.getItem('k:{mail.message_id}')") == LINK_VECTOR_SECRET
        await w.collect()
    finally:
        await w.context.close()
    assert told == {what: (True, False, None) for what in damaged(fragment)}
    assert [r for r in sent if not r.startswith("GET ")] == []  # nothing posted: no number, no code asked
    assert chain.sms_count(mail.e164) == 0 and await mail.challenges() == []
    assert w.csp_problems() == []


async def test_a_link_emailed_before_the_check_still_opens_the_document(chain, browser):
    mail = await letter(chain)
    page_url, fragment = localhost(mail.link).split("#", 1)
    old_link = f"{page_url}#{crypto.secret_of_fragment(fragment)}"  # the secret alone, 43 characters
    w = await watched(browser)
    page = w.page
    try:
        await page.goto(old_link)
        assert not await page.locator("#link-damaged").is_visible()
        await page.fill("#phone", mail.national)
        await page.press("#phone", "Enter")
        await page.wait_for_url(f"{page_url}/code")
        await page.fill("#code", await mail.code())
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")  # the secret opened the appointment
        await w.collect()
    finally:
        await w.context.close()
    assert w.csp_problems() == []
