"""Accessibility in CI (issue 10, item 9): axe-core (pinned in tests/browser/a11y, WCAG 2.0-2.2 A/AA) on
every page of the patient's journey in every state reached as a patient would, in four languages, at 320,
375 and 1280 px and at 200 % zoom; no horizontal scrolling at 320 px; the whole path by keyboard only.

To keep the suite short, the journey is walked once: each state is checked as reached (in French), then in
German, Italian and English through the page's own language switch (which keeps the page, its outcome and
the session; the check waits for what shows the state before it runs), then switched back to go on. The
one state only an open page shows (an SMS failure told live) is reached live in each language. Axe runs
again after each change of width (the same DOM laid out anew), with only the WCAG 2.x A/AA rules. The two states that
need time to pass (a link expired, a code expired) come from a second small stack started once for
this module, with short lifetimes set as a hospital could set them (see ``expired``)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from devstack.stack import ROOT
from tests.conftest import ADMIN_DSN, AMQP_URL, TEST_DB, inbox_stack
from tests.e2e.conftest import Chain, random_email
from tests.e2e.test_portal_helpers import Letter, letter, state_of
from tests.waiting import PATIENCE, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

AXE = Path(__file__).resolve().parent / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
LANGUAGES = ("fr", "de", "it", "en")


def localhost(link: str) -> str:
    return link.replace("://127.0.0.1:", "://localhost:")


async def new_page(browser, lang: str):
    if not AXE.is_file():
        pytest.fail(f"{AXE} missing: run scripts/bootstrap.sh --with-browser (npm ci of the pinned axe-core)")
    context = await browser.new_context(accept_downloads=True, locale=f"{lang}-CH")
    # Injected through the DevTools protocol, so the page's CSP (no inline script) does not apply to it.
    await context.add_init_script(path=str(AXE))
    return context, await context.new_page()


async def problems(page, lang: str, views: list[str]) -> list[str]:
    """What is wrong with the page as it is, at each view: axe violations and horizontal scrolling."""
    found = []
    assert await page.evaluate("document.documentElement.lang") == lang
    for view in views:
        width = 1280 if view == "zoom" else int(view)
        await page.set_viewport_size({"width": width, "height": 800})
        # 200 % zoom: the page laid out as a browser zoomed to 200 % does (half the CSS width).
        await page.evaluate(f"document.documentElement.style.zoom = '{2 if view == 'zoom' else 1}'")
        result = await page.evaluate(
            "opts => axe.run(document, opts)",
            {"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]},
        )
        found += [
            f"{view}px {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['html'][:120]})"
            for v in result["violations"]
        ]
        if view in ("320", "zoom"):
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                found.append(f"{view}: horizontal scrolling ({overflow}px too wide)")
    await page.evaluate("document.documentElement.style.zoom = '1'")
    await page.set_viewport_size({"width": 1280, "height": 800})
    return found


# The states that need time to pass: a second, small stack whose settings make it pass quickly, as a
# hospital could set them (codes valid OTP_TTL_SECONDS; messages expire MESSAGE_TTL_DAYS after the
# appointment, 0: at its start). No database is edited and no clock is faked.
OTP_TTL_SECONDS = 4
WALKS = ("axe", "walk")  # the two walks of the journey below, each with a code of its own to type too late
APPOINTMENT_IN_SECONDS = 12  # long enough for the e-mail to go out before the link expires


@dataclass
class Expired:
    link: Letter  # a link whose message expires at its appointment, soon
    codes: dict[str, tuple[Letter, str]]  # for each walk ("axe", "walk"): a code received, soon expired
    codes_expire_at: float  # time.monotonic() when the codes have expired

    async def time_passed(self) -> None:
        """Once the codes and the link have expired: the walks ask only at their end, and the time passes
        while they check the other states."""
        await asyncio.sleep(max(0.0, self.codes_expire_at - time.monotonic()))

        async def closed():  # the appointment has begun: the message has expired
            return state_of(self.link.patient.open_link().text) == "expired"

        await eventually(closed, every=0.5, what="the message's expiry at the appointment")


@pytest.fixture(scope="module")
async def expired(devinbox, devoidc, exchange_name, tmp_path_factory) -> Expired:
    database = f"{TEST_DB}_short"
    subprocess.run([str(ROOT / "scripts/db-setup.sh"), database], check=True, capture_output=True)
    stack = inbox_stack(
        devinbox,
        database=database,
        exchange=f"{exchange_name}-short",
        log_dir=tmp_path_factory.mktemp("logs-short"),
        amqp_url=AMQP_URL,
        oidc_issuer=devoidc.issuer,
        extra_env={
            "*": {"SWEEP_SECONDS": "0.5"},
            "issuer": {"MESSAGE_TTL_DAYS": "0"},
            "access-portal": {"OTP_TTL_SECONDS": str(OTP_TTL_SECONDS)},
        },
    )
    db = None
    try:
        stack.start(["issuer", "mailer", "sms-gateway", "access-portal"])
        db = await asyncpg.create_pool(ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=4)
        chain = Chain(stack, devinbox, db, stack.exchange)
        soon = datetime.now(timezone.utc) + timedelta(seconds=APPOINTMENT_IN_SECONDS)
        link, *mails = await asyncio.gather(
            letter(chain, language="fr", starts_at=soon), *(letter(chain, language="fr") for _ in WALKS)
        )
        for mail in mails:
            assert mail.patient.request_code(mail.national).status_code == 303
        codes = {walk: (mail, await mail.code()) for walk, mail in zip(WALKS, mails, strict=True)}
        yield Expired(link, codes, codes_expire_at=time.monotonic() + OTP_TTL_SECONDS + 0.5)
    finally:
        if db is not None:
            await db.close()
        stack.stop()
        subprocess.run(
            [
                "psql",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                f'drop database if exists "{database}" with (force)',
            ],
            capture_output=True,
        )


async def visit_every_state(
    chain, browser, lang: str, check, expired: Expired, walk: str, languages: tuple[str, ...] = ()
) -> list[str]:
    """Walk the journey's states as a patient would (no database edits), calling ``check(name, page, shown)``
    with the selector that shows the page is in that state (None where the address says it). The state that
    only an open page shows (an SMS failure told live) is reached again in each of ``languages``, a page of
    its own each, and checked with ``lang`` set."""
    seen = []

    async def at(name: str, page, shown: str | None = None, **kw) -> None:
        seen.append(name)
        await check(name, page, shown, **kw)

    mail = await letter(chain, language=lang)
    link = localhost(mail.link)
    page_url = link.split("#", 1)[0]
    context, page = await new_page(browser, lang)
    try:
        await page.goto(link)
        await at("first visit", page, "#phone")
        await page.fill("#phone", "079 12")
        await page.press("#phone", "Enter")
        await page.wait_for_selector("#error-summary")
        await at("mistyped number", page, "#error-summary")
        await page.fill("#phone", "079 000 00 00" if not mail.national.startswith("079 000") else "078 000 00 00")
        await page.press("#phone", "Enter")
        await page.wait_for_selector("[data-state=number_mismatch]")
        await at("wrong number", page, "[data-state=number_mismatch]")  # issue 20, item 1: the end of the number
        await page.fill("#phone", mail.national)
        await page.press("#phone", "Enter")
        await page.wait_for_url(f"{page_url}/code")
        # "Send a new code" at once, first: it is too early only for a while after the code was sent.
        await page.click("form[action$='/code'] button")
        await page.wait_for_selector("[data-state=too_early]")
        await at("too early for a new code", page, "[data-state=too_early]")
        await page.goto(f"{page_url}/code")
        await at("code sent", page, "#code")
        code = await mail.code()
        await page.fill("#code", f"{(int(code) + 1) % 10**6:06d}")
        await page.press("#code", "Enter")
        await page.wait_for_selector("#error-summary")
        await at("wrong code", page, "#error-summary")
        await page.fill("#code", code)
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")  # the document page opened the appointment
        await at("document with the appointment", page, "#appointment-title")
        await page.click("form[action$='/postal'] button")
        await page.wait_for_selector("[data-state=paper_told]")  # the document page says it goes by post
        await at("paper told", page, "[data-state=paper_told]")
        for path, state in (("/not-my-number", "not_my_number"), ("/no-phone", "no_phone")):
            await page.goto(page_url + path)
            await page.wait_for_selector(f"[data-state={state}]")
            await at(state, page, f"[data-state={state}]")
        await page.goto(page_url.rsplit("/m/", 1)[0] + f"/guide?lang={lang}")
        await at("guide", page)
        await page.goto(f"{page_url}/document")
        await page.wait_for_selector("#appointment-title")
        async with page.expect_download() as download:
            await page.click("form[action$='/download/pdf'] button")
        assert (await download.value).suggested_filename.endswith(".pdf")
        await page.click("form[action$='/logout'] button")
        await page.wait_for_url(f"{page_url}/signed-out")
        await at("signed out", page)
    finally:
        await context.close()

    context, page = await new_page(browser, lang)
    try:
        await page.goto(page_url)  # the link without its secret (cut by a mail program)
        await page.wait_for_selector("#link-damaged:not([hidden])")
        await at("damaged link", page, "#link-damaged:not([hidden])")
        await page.goto(f"{page_url}/document")
        await at("session expired", page, "[data-state=session_expired]")
        await page.goto(f"{page_url}/code")  # the code page without the link's secret: nothing is checked
        await page.fill("#code", "123456")
        await page.press("#code", "Enter")
        await page.wait_for_selector("[data-state=no_proof]")
        await at("no proof of the link", page, "[data-state=no_proof]")
        await page.goto(page_url.rsplit("/m/", 1)[0] + f"/m/{uuid.uuid4()}")  # in the browser's language
        await at("unknown link", page, "[data-state=unknown]")

        ending = await letter(chain, language=lang)
        await page.clock.install()  # the page's clock, moved on as the server's is (travel)
        await page.goto(localhost(ending.link))
        await page.fill("#phone", ending.national)
        await page.press("#phone", "Enter")
        await page.fill("#code", await ending.code())
        await page.press("#code", "Enter")
        await page.wait_for_selector("#appointment-title")
        await ending.travel(15 * 60 + 5)
        await page.clock.fast_forward("15:10")  # the idle limit passed: the appointment leaves the screen
        await page.wait_for_selector("[data-state=session_expired]")
        await at("session ended", page, "[data-state=session_expired]")

        locked = await letter(chain, language=lang)
        await page.goto(localhost(locked.link))
        await page.fill("#phone", locked.national)
        await page.press("#phone", "Enter")
        right = await locked.code()
        for _ in range(5):  # five wrong codes: the message waits (the product's own lock)
            await page.fill("#code", f"{(int(right) + 1) % 10**6:06d}")
            await page.press("#code", "Enter")
            await page.wait_for_load_state()
        await page.wait_for_selector("[data-state=wait]")
        await at("locked", page, "[data-state=wait]")

        failed = await letter(chain, language=lang)
        await page.goto(localhost(failed.link))
        await page.fill("#phone", failed.national)
        await page.press("#phone", "Enter")
        await failed.sms()
        challenge = await failed.sms_failed()
        await eventually(
            lambda: chain.db.fetchval("select sms_failed from access_portal.challenge where id = $1", challenge["id"]),
            what="the SMS failure on the challenge",
        )
        await page.goto(localhost(failed.link).split("#")[0] + "/code")
        await at("sms failed", page, "[data-state=sms_failed]")

        for told in languages or (lang,):  # the failure told on the open code page, no reload
            live = await letter(chain, language=told)
            await page.goto(localhost(live.link))
            await page.fill("#phone", live.national)
            await page.press("#phone", "Enter")
            await page.wait_for_url(localhost(live.link).split("#")[0] + "/code")
            await in_language(page, told, "#code")  # the open code page in that language, then the failure
            await live.sms()
            await live.sms_failed()
            await page.wait_for_selector("#sms-failed-now", state="visible", timeout=PATIENCE * 1000)
            await at("sms failed, told on the open page", page, lang=told)

        from tests.e2e.test_portal_states import revoked, upstream_cancellation

        await chain.publish(upstream_cancellation(locked.convocation_id))
        await revoked(chain, locked, "cancelled")
        await page.goto(localhost(locked.link))
        await at("cancelled", page, "[data-state=cancelled]")
        again = chain.event(convocation_id=uuid.UUID(failed.convocation_id), email=random_email(), language=lang)
        await chain.publish(again)
        await revoked(chain, failed, "superseded")
        await page.goto(localhost(failed.link))
        await at("superseded", page, "[data-state=superseded]")

        await expired.time_passed()
        await page.goto(localhost(expired.link.link))
        await page.wait_for_selector("[data-state=expired]")
        await at("link expired", page, "[data-state=expired]")
        mail, code = expired.codes[walk]
        await page.goto(localhost(mail.link))
        await page.goto(localhost(mail.link).split("#")[0] + "/code")
        await page.fill("#code", code)  # the code received, typed too late
        await page.press("#code", "Enter")
        await page.wait_for_selector("[data-state=code_expired]")
        await at("code expired", page, "[data-state=code_expired]")
    finally:
        await context.close()
    return seen


async def in_language(page, lang: str, shown: str | None) -> None:
    """The same page in ``lang``, through its own language switch, in the same state (``shown`` visible)."""
    await page.click(f"nav.languages a[hreflang={lang}]")
    await page.wait_for_url(lambda url: f"lang={lang}" in url)  # the switch's GET, loaded
    await page.wait_for_load_state()
    if shown:
        await page.wait_for_selector(shown, timeout=PATIENCE * 1000)


# About 380 axe checks: 242 s under make test's full load, and past the suite's 300 s limit on a slower run.
@pytest.mark.timeout(600)
async def test_every_state_has_no_axe_violation_and_no_horizontal_scrolling(chain, browser, expired):
    views = ["320", "375", "1280", "zoom"]
    found: dict[str, list[str]] = {}
    first, *others = LANGUAGES

    async def check(name, page, shown, lang=None):
        if lang is not None:  # reached in this language, as only an open page shows it
            if issues := await problems(page, lang, views):
                found[f"{name} ({lang})"] = issues
            return
        if issues := await problems(page, first, views):  # as reached
            found[f"{name} ({first})"] = issues
        for lang in others:
            await in_language(page, lang, shown)
            if issues := await problems(page, lang, views):
                found[f"{name} ({lang})"] = issues
        await in_language(page, first, shown)  # and on with the walk

    seen = await visit_every_state(chain, browser, first, check, expired, walk="axe", languages=LANGUAGES)
    assert len(set(seen)) == 24 and len(seen) == 24 + len(others), seen
    assert found == {}


async def test_the_whole_path_by_keyboard_only(chain, browser):
    mail = await letter(chain)
    context, page = await new_page(browser, "fr")
    page_url = localhost(mail.link).split("#", 1)[0]

    async def tab_to(selector: str, limit: int = 40) -> None:
        for _ in range(limit):
            await page.keyboard.press("Tab")
            if await page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"{selector} cannot be reached with the Tab key")

    try:
        await page.goto(localhost(mail.link))
        await tab_to("#phone")
        await page.keyboard.type(mail.national)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{page_url}/code")
        assert await page.evaluate("document.activeElement.id") == "code"  # the code field has the focus
        await page.keyboard.type(await mail.code())
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#appointment-title")
        await tab_to("form[action$='/download/pdf'] button")
        async with page.expect_download() as download:
            await page.keyboard.press("Enter")
        assert (await download.value).suggested_filename.endswith(".pdf")
        assert await page.locator("#download-done").inner_text()  # the download is confirmed on the page
        await tab_to("#print")  # the print button is reachable too
        # Focus is always visible: every focusable element gets an outline or a border when focused.
        assert re.search(r"\d", await page.evaluate("getComputedStyle(document.activeElement).outlineWidth"))
    finally:
        await context.close()


async def test_the_axe_check_does_find_violations(browser):
    """The check above cannot pass by not running: the same call on a page without a language and with
    an image without a text alternative reports both."""
    context, page = await new_page(browser, "fr")
    try:
        await page.set_content('<html><body><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="></body></html>')
        result = await page.evaluate(
            "opts => axe.run(document, opts)",
            {"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]},
        )
        assert {"html-has-lang", "image-alt"} <= {v["id"] for v in result["violations"]}
    finally:
        await context.close()


# Buttons the walk itself presses at the right moment (they end the step the walk is on).
WALK_PRESSES = ("/logout", "/postal", "/download/pdf")
FORMS = """() => [...document.forms].filter(f => f.offsetParent !== null).map(f => ({
  action: f.action, method: f.method, fields: Object.fromEntries(new FormData(f)),
  typed: !!f.querySelector('input:not([type=hidden])')}))"""


async def test_every_button_and_link_on_every_page_leads_somewhere_that_belongs_to_the_state(chain, browser, expired):
    """Issue 10, item 1: follows every link and presses every button (as the browser would post its form)
    of every state, and fails on a server error, a refused form or a page that does not belong there."""
    dead_ends: list[str] = []

    async def judge(where: str, what: str, response, *, typed: bool = False) -> None:
        state = (
            re.search(r'data-state="([a-z_]+)"', await response.text())
            if "html" in (response.headers.get("content-type", ""))
            else None
        )
        state = state.group(1) if state else None
        allowed = {
            "unknown link": {"unknown"},
            "session expired": {"session_expired"},
            "session ended": {"session_expired"},
            "cancelled": {"cancelled"},
            "superseded": {"superseded"},
            "link expired": {"expired"},
            "code expired": {"code_expired"},
        }.get(where, set())
        wrong = (
            response.status >= 500
            or state == "bad_request"
            or state in {"unknown", "session_expired", "cancelled", "superseded", "expired"} - allowed
            or (state in ("number_invalid", "code_error") and not typed)
        )
        if wrong:
            dead_ends.append(f"{where}: {what} -> {response.status} {state}")

    async def press_everything(name, page, shown=None, lang=None):
        base = page.url.split("/m/")[0] if "/m/" in page.url else page.url.rsplit("/", 1)[0]
        hrefs = await page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        for href in hrefs:
            if href.startswith(("tel:", "mailto:")) or "#" in href and href.split("#")[0] == page.url.split("#")[0]:
                continue
            assert href.startswith(base), f"{name}: a link leaves the portal: {href}"
            # The language switch of a page that tells an error (?told=) tells the same error in the new language.
            switch = href.split("lang=")[0].rstrip("?&") == page.url.split("#")[0].rstrip("?&")
            await judge(name, f"link {href[len(base) :]}", await page.request.get(href), typed=switch)
        for form in await page.evaluate(FORMS):
            if form["action"].endswith(WALK_PRESSES):
                continue
            response = await page.request.post(form["action"], form=form["fields"], max_redirects=0)
            if response.status == 303:
                response = await page.request.get(
                    base + response.headers["location"]
                    if response.headers["location"].startswith("/")
                    else response.headers["location"]
                )
            await judge(name, f"button {form['action'][len(base) :]}", response, typed=form["typed"])

    seen = await visit_every_state(chain, browser, "fr", press_everything, expired, walk="walk")
    assert len(seen) == 24
    assert dead_ends == [], dead_ends
