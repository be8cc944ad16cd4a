"""A secretary's day in a real browser: sign-in through the development OpenID provider, worklists,
and each action carried out by the service that owns the data, as the patient then sees it."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from playwright.async_api import expect

from devstack.hospital import republished
from tests.browser.test_accessibility import AXE, WCAG
from tests.e2e.conftest import code_of, random_email, random_mobile
from tests.patient import PatientClient, find_link
from tests.waiting import PATIENCE, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


async def sign_in(browser, stack, who: str = "Alice Martin"):
    context = await browser.new_context(locale="en-GB")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{stack.url('secretariat')}/?lang=en")
    await page.get_by_role("link", name="Sign in with the hospital account").click()
    await page.get_by_role("button", name=re.compile(who)).click()
    await page.wait_for_url(re.compile(r"/search$"))
    assert await page.locator("h1").inner_text() == "Find a convocation"
    assert not errors, errors
    return context, page


async def open_convocation(page, stack, cid: str, until_kind: str | None = None, timeout: float = PATIENCE):
    async def shown() -> bool:
        await page.goto(f"{stack.url('secretariat')}/c/{cid}")
        return until_kind is None or bool(await page.locator(f'li[data-kind="{until_kind}"]').count())

    await eventually(shown, timeout, every=0.5, what=f"{until_kind} in the timeline of {cid}")


async def act(page, action: str, reason: str, **fields) -> None:
    form = page.locator(f'form[data-action="{action}"]')
    for name, value in fields.items():
        await form.locator(f'[name="{name}"]').fill(value)
    await form.locator('textarea[name="reason"]').fill(reason)
    await form.locator('button[type="submit"]').click()
    await page.wait_for_url(re.compile(rf"\?done={action}$"))


async def withdraw(page, reason: str) -> None:
    """Withdraw, which cannot be undone, asks on a page of its own: what will happen, the reason, a button."""
    await page.get_by_role("link", name="Withdraw the letter…").click()
    await page.wait_for_url(re.compile(r"/confirm/withdraw$"))
    assert await page.locator("h1").inner_text() == "Withdraw this letter?"
    await page.locator('textarea[name="reason"]').fill(reason)
    await page.get_by_role("button", name="Yes, withdraw the letter").click()
    await page.wait_for_url(re.compile(r"\?done=withdraw$"))


async def audited_once(chain, cid: str, reason: str) -> None:
    rows = await chain.db.fetch(
        "select reason, outcome from secretariat_audit.staff_audit where convocation_id = $1 and action = 'action'",
        uuid.UUID(cid),
    )
    assert [(r["reason"], r["outcome"]) for r in rows] == [(reason, "requested")]


async def test_a_secretary_finds_a_bounce_posts_a_letter_corrects_a_number_unlocks_and_withdraws(browser, chain, stack):
    context, page = await sign_in(browser, stack)

    # A bounced e-mail is in the worklist (the issuer has already asked for paper automatically).
    bounced = chain.event()
    chain.inbox.smtp_script(["550 5.1.1 No such user here"])
    await chain.publish(bounced)
    bounced_id = bounced["data"]["convocation_id"]
    await chain.upstream(
        "convocation.status.v1", bounced_id, lambda es: any(e["data"]["status"] == "bounced" for e in es)
    )

    async def listed() -> int:
        await page.goto(f"{stack.url('secretariat')}/search?worklist=bounced")
        return await page.locator(f'a[href="/c/{bounced_id}"]').count()

    await eventually(listed, every=0.5, what="the bounced letter in its worklist")
    await page.locator(f'a[href="/c/{bounced_id}"]').click()
    await expect(page.locator('li[data-kind="bounced"]')).to_have_count(1)

    # Send by post now: a letter not downloaded, appointment in two days.
    soon = chain.event(starts_at=datetime.now(timezone.utc) + timedelta(days=2, hours=2))
    await chain.publish(soon)
    soon_id = soon["data"]["convocation_id"]
    await open_convocation(page, stack, soon_id, "e-mailed")
    await page.goto(f"{stack.url('secretariat')}/search?worklist=not-downloaded&days=3")
    await expect(page.locator(f'a[href="/c/{soon_id}"]')).to_have_count(1)
    await open_convocation(page, stack, soon_id)
    await act(page, "post", "Patient has no computer, asked by phone")
    posted = await chain.postal(soon_id)
    assert [p["data"]["reason"] for p in posted] == ["secretariat"]
    await open_convocation(page, stack, soon_id, "postal")
    assert "paper" in await page.locator('li[data-kind="postal"]').inner_text()
    await audited_once(chain, soon_id, "Patient has no computer, asked by phone")

    # Correct the mobile number: the patient's next access asks for the new number and only it works.
    old_e164, old_national = random_mobile()
    new_e164, new_national = random_mobile()
    patient_id = f"P-{uuid.uuid4().hex[:10]}"
    first = chain.event(mobile=old_national, patient_id=patient_id)
    await chain.publish(first)
    patient = PatientClient(find_link((await chain.email_to(first["data"]["patient"]["email"]))["text"]))
    patient.request_code(old_national)
    assert patient.enter_code(code_of(await chain.sms_to(old_e164))).status_code == 303  # the number is bound
    second = chain.event(mobile=old_national, patient_id=patient_id)
    await chain.publish(second)
    second_id = second["data"]["convocation_id"]
    link = find_link((await chain.email_to(second["data"]["patient"]["email"]))["text"])
    await open_convocation(page, stack, second_id, "e-mailed")
    await act(page, "correct-mobile", "Patient changed phone, confirmed at the desk", mobile=new_national)
    await open_convocation(page, stack, second_id, "mobile-corrected")
    assert "*" in await page.locator('li[data-kind="mobile-corrected"]').inner_text()
    assert new_national.replace(" ", "")[-7:] not in await page.content()  # masked only
    patient = PatientClient(link)
    assert 'name="phone"' in patient.open_link().text  # asked for the number again
    sent_to_old = chain.sms_count(old_e164)
    patient.request_code(old_national)
    await asyncio.sleep(1)
    assert chain.sms_count(old_e164) == sent_to_old  # the old number gets nothing
    patient = PatientClient(link)
    assert patient.request_code(new_national).status_code == 303
    assert patient.enter_code(code_of(await chain.sms_to(new_e164))).status_code == 303
    await audited_once(chain, second_id, "Patient changed phone, confirmed at the desk")

    # Unlock a patient locked out by wrong codes: the patient can ask for a code again.
    e164, national = random_mobile()
    locked = chain.event(mobile=national)
    await chain.publish(locked)
    locked_id = locked["data"]["convocation_id"]
    link = find_link((await chain.email_to(locked["data"]["patient"]["email"]))["text"])
    patient = PatientClient(link)
    assert patient.request_code(national).status_code == 303
    first_code_at = asyncio.get_running_loop().time()
    right = code_of(await chain.sms_to(e164))
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    statuses = [patient.follow(patient.enter_code(wrong)).status_code for _ in range(5)]
    assert statuses[-1] == 429, statuses  # the fifth wrong code locks the message
    await open_convocation(page, stack, locked_id, "locked")
    await page.goto(f"{stack.url('secretariat')}/search?worklist=locked")
    await expect(page.locator(f'a[href="/c/{locked_id}"]')).to_have_count(1)
    await open_convocation(page, stack, locked_id)
    await act(page, "unlock", "Identity checked on the phone")
    await open_convocation(page, stack, locked_id, "unlocked")
    # The 30-second resend pause still applies (it is not a lock).
    await asyncio.sleep(max(0.0, 31 - (asyncio.get_running_loop().time() - first_code_at)))
    assert PatientClient(link).request_code(national).status_code == 303
    assert code_of(await chain.sms_to(e164, nth=2))
    await audited_once(chain, locked_id, "Identity checked on the phone")

    # Withdraw: the link says so.
    gone = chain.event()
    await chain.publish(gone)
    gone_id = gone["data"]["convocation_id"]
    link = find_link((await chain.email_to(gone["data"]["patient"]["email"]))["text"])
    await open_convocation(page, stack, gone_id, "e-mailed")
    await withdraw(page, "Appointment moved to another hospital")
    await open_convocation(page, stack, gone_id, "withdrawn")
    answer = PatientClient(link).open_link()
    assert answer.status_code == 410 and 'data-state="withdrawn"' in answer.text and "withdrawn" in answer.text
    await audited_once(chain, gone_id, "Appointment moved to another hospital")
    await context.close()


async def test_a_secretary_corrects_an_address_and_resends_a_letter_the_hospital_system_sends_it_again(
    browser, chain, stack
):
    context, page = await sign_in(browser, stack)
    for action, reason, fields in (
        ("correct-email", "Typo in the address, confirmed by phone", {"email": random_email()}),
        ("resend", "Patient deleted the e-mail by mistake", {}),
    ):
        event = chain.event()
        await chain.publish(event)
        cid, address = event["data"]["convocation_id"], fields.get("email", event["data"]["patient"]["email"])
        old_link = find_link((await chain.email_to(event["data"]["patient"]["email"]))["text"])
        await open_convocation(page, stack, cid, "e-mailed")
        await act(page, action, reason, **fields)
        # Waiting for the hospital system, which is asked for the letter again (and answers: this test).
        await open_convocation(page, stack, cid, "reissue-requested")
        waiting = await page.locator('li[data-kind="reissue-requested"]').inner_text()
        assert "Waiting for the hospital system to send the letter again" in waiting and "by the secretariat" in waiting
        assert "pending" in await page.locator(f'li[data-action="{action}"]').inner_text()
        await expect(page.locator('form[data-action="resend"]')).to_have_count(0)  # not asked twice
        await chain.upstream("convocation.reissue.requested.v1", cid, lambda es: len(es) >= 1)
        await chain.publish(republished(event))
        mail = await eventually(lambda a=address, o=old_link: latest_to(chain, a, o))
        new_link = find_link(mail["text"])
        assert new_link != old_link

        async def done(action: str = action, cid: str = cid) -> bool:
            await open_convocation(page, stack, cid)
            return "done" in await page.locator(f'li[data-action="{action}"]').inner_text()

        await eventually(done, every=0.5, what=f"the action {action} done")
        e_mailed = page.locator('li[data-kind="e-mailed"]')
        assert await e_mailed.count() == 2 and "by the secretariat" in await e_mailed.last.inner_text()
        await expect(page.locator('li[data-kind="superseded"]')).to_have_count(1)
        assert PatientClient(old_link).open_link().status_code == 410
        await audited_once(chain, cid, reason)
    await context.close()


async def latest_to(chain, address: str, old_link: str):
    """The newest e-mail to ``address`` once it is not the one carrying ``old_link``."""
    mails = sorted(chain.emails_to(address), key=lambda m: m["received_at"])
    return mails[-1] if mails and old_link not in mails[-1]["text"] else None


async def test_a_secretary_of_neurology_neither_sees_nor_acts_on_cardiology(browser, chain, stack):
    cardio = chain.event(patient_id=f"P-{uuid.uuid4().hex[:10]}")
    await chain.publish(cardio)
    cid = cardio["data"]["convocation_id"]
    context, page = await sign_in(browser, stack, "Bruno Keller")
    await chain.upstream("convocation.status.v1", cid, lambda es: len(es) >= 2)
    await asyncio.sleep(1)
    base = stack.url("secretariat")
    response = await page.goto(f"{base}/c/{cid}")
    assert response.status == 404 and await page.locator("h1").inner_text() == "Convocation not found"
    await page.goto(f"{base}/search?convocation_id={cid}")
    await expect(page.locator(f'a[href="/c/{cid}"]')).to_have_count(0)
    await page.goto(f"{base}/search?department=cardiology")
    await expect(page.locator(f'a[href="/c/{cid}"]')).to_have_count(0)
    await page.goto(f"{base}/search")
    await page.locator("#patient_id").fill(cardio["data"]["patient"]["id"])
    await page.locator('form[action="/search"][method="post"] button').click()
    await expect(page.locator(f'a[href="/c/{cid}"]')).to_have_count(0)
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    for action in ("post", "withdraw", "unlock", "reset-binding", "correct-mobile", "resend", "correct-email"):
        r = await context.request.post(
            f"{base}/c/{cid}/actions",
            form={
                "csrf": csrf,
                "action": action,
                "reason": "guessing an id",
                "mobile": "079 123 45 67",
                "email": "guess@example.ch",
            },
        )
        assert r.status == 404, action
    assert (
        await chain.db.fetchval("select count(*) from secretariat.action where convocation_id = $1", uuid.UUID(cid))
        == 0
    )
    # Without the CSRF token nothing is even considered; the supervisor reads but cannot act.
    r = await context.request.post(f"{base}/c/{cid}/actions", form={"action": "post", "reason": "no token"})
    assert r.status == 403
    await context.close()
    context, page = await sign_in(browser, stack, "Sophie Rossi")
    await page.goto(f"{base}/c/{cid}")
    await expect(page.locator('li[data-kind="sealed"]')).to_have_count(1)
    await expect(page.locator("form[data-action]")).to_have_count(0)
    await page.goto(f"{base}/audit")
    await expect(page.get_by_role("link", name="Export everything as CSV")).to_have_count(1)
    csv = await context.request.get(f"{base}/audit.csv")
    assert csv.status == 200 and "refused-department" in await csv.text()
    await context.close()


async def test_the_session_time_out_is_announced_two_minutes_ahead_and_can_be_extended(browser, stack):
    context, page = await sign_in(browser, stack)
    await page.clock.install()
    await page.goto(f"{stack.url('secretariat')}/search")
    warning = page.get_by_role("alertdialog")
    assert not await warning.is_visible()
    await page.clock.fast_forward("13:01")  # 15 minutes idle, warned 2 minutes before
    assert await warning.is_visible()
    assert "two minutes" in await warning.inner_text()
    async with page.expect_response(re.compile(r"/session/keepalive$")) as answer:
        await page.get_by_role("button", name="Stay signed in").click()
    assert (await answer.value).status == 204
    assert not await warning.is_visible()
    await context.close()


VIEWS = (("1280px", 1280, 800, 1), ("200% zoom", 1280, 800, 2), ("tablet", 768, 1024, 1))


async def test_every_console_page_is_axe_clean_and_fits_a_desktop_at_200_percent_zoom_and_a_tablet(
    browser, chain, stack
):
    """axe-core (the pinned copy, WCAG 2.0-2.2 A/AA) on every page of the console: sign-in, the search and
    each worklist, results by name, a timeline with its action forms and after an action, the withdrawal's
    and the erasure's confirmations, the erasure's page, the figures, not found, and the supervisor's audit with its filters: zero violations, and
    no sideways scrolling, at 1280 px, at 200 % zoom (the page laid out as a browser zoomed to 200 % does,
    half the CSS width) and at tablet width. Each page is loaded once and checked at each view."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} missing: run scripts/bootstrap.sh --with-browser (npm ci of the pinned axe-core)")
    event = chain.event(name="Zoë Müller-Lüdi")
    other = chain.event()
    await chain.publish(event)
    await chain.publish(other)
    cid = event["data"]["convocation_id"]
    base = stack.url("secretariat")
    found: list[str] = []

    async def check(page, what: str) -> None:
        for view, width, height, zoom in VIEWS:
            await page.set_viewport_size({"width": width, "height": height})
            await page.evaluate(f"document.documentElement.style.zoom = '{zoom}'")
            result = await page.evaluate(
                "opts => axe.run(document, opts)",
                {"runOnly": {"type": "tag", "values": WCAG}, "resultTypes": ["violations"]},
            )
            found.extend(
                f"{what} at {view} {v['id']}: {v['help']} (e.g. {v['nodes'][0]['html'][:120]})"
                for v in result["violations"]
            )
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                found.append(f"{what} at {view}: horizontal scrolling ({overflow}px too wide)")
        await page.evaluate("document.documentElement.style.zoom = '1'")
        await page.set_viewport_size({"width": 1280, "height": 800})

    async def signed_in(who: str):
        context = await browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 800})
        # Injected through the DevTools protocol, so the console's CSP (no inline script) does not apply to it.
        await context.add_init_script(path=str(AXE))
        page = await context.new_page()
        await page.goto(f"{base}/?lang=en")
        return context, page

    context, page = await signed_in("Alice Martin")
    await check(page, "sign-in")
    await page.get_by_role("link", name="Sign in with the hospital account").click()
    await page.get_by_role("button", name=re.compile("Alice Martin")).wait_for()  # the provider's page
    await page.wait_for_load_state()
    await check(page, "development provider's sign-in")
    await page.get_by_role("button", name=re.compile("Alice Martin")).click()
    await page.wait_for_url(re.compile(r"/search$"))
    await check(page, "search")
    for worklist in ("bounced", "not-downloaded", "locked", "paper-today", "returned", "unanswered"):
        await page.goto(f"{base}/search?worklist={worklist}")
        await check(page, f"worklist {worklist}")
    await open_convocation(page, stack, cid, "e-mailed")
    await page.goto(f"{base}/search")
    await page.locator("#name").fill("Müller")
    await page.locator("form:has(#name) button").click()
    await page.locator("#results-title").wait_for()  # the results, posted (a name stays out of the address)
    await check(page, "search by name")
    await open_convocation(page, stack, cid, "e-mailed")
    await check(page, "timeline")
    await act(page, "post", "Patient asked for paper at the desk")
    await page.locator('li[data-kind="postal"]').wait_for(timeout=15_000)
    await check(page, "timeline after an action, refreshed in place")
    await open_convocation(page, stack, other["data"]["convocation_id"], "e-mailed")
    await page.get_by_role("link", name="Withdraw the letter…").click()
    # The link's page loaded before it is checked (checked at once, it was once the old page going away).
    await page.wait_for_url(re.compile(r"/confirm/withdraw$"))
    await check(page, "withdrawal's confirmation")
    await open_convocation(page, stack, other["data"]["convocation_id"], "e-mailed")
    await page.get_by_role("link", name="Erase everything about this patient…").click()
    await page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/erase$"))
    await check(page, "erasure's confirmation")
    await page.locator('textarea[name="reason"]').fill("Asked in writing, identity checked at the desk")
    await page.get_by_role("button", name="Yes, erase everything about this patient").click()
    await page.wait_for_url(re.compile(r"/erasures/[0-9a-f-]{36}$"))
    await check(page, "erasure's page")
    await page.goto(f"{base}/figures")
    await check(page, "figures")
    response = await page.goto(f"{base}/c/{uuid.uuid4()}")
    assert response.status == 404
    await check(page, "not found")
    await context.close()

    context, page = await signed_in("Sophie Rossi")
    await page.get_by_role("link", name="Sign in with the hospital account").click()
    await page.get_by_role("button", name=re.compile("Sophie Rossi")).click()
    await page.wait_for_url(re.compile(r"/search$"))
    await page.goto(f"{base}/audit")
    await expect(page.get_by_role("link", name="Export everything as CSV")).to_have_count(1)
    await check(page, "audit")
    await page.goto(f"{base}/audit?person=Alice&action=action")
    await check(page, "audit filtered")
    await context.close()
    assert not found, "\n".join(found)
