"""The console's second round (issue 21) in a real browser: the patient recognised by name and date of
birth, the number on file from the start, the print room's steps and a letter switched back to e-mail,
actions that no longer fit not offered, the timeline updating by itself, the withdrawal confirmed on a page
of its own (without JavaScript too), a request the hospital system never answers (and its alert on a real
Prometheus), the department figures for a manager, and the supervisors' audit filters."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
import uuid
from datetime import date, timedelta

import pytest
from playwright.async_api import expect

from devstack.hospital import republished
from tests.browser.test_secretariat_browser import act, open_convocation, sign_in, withdraw
from tests.e2e.prometheus import Prometheus
from tests.e2e.test_portal_helpers import letter
from tests.patient import PatientClient
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
LIVE = 15_000  # ms: the open timeline asks for news every second (TIMELINE_REFRESH_SECONDS in the test stack)


def unique_name() -> tuple[str, str]:
    """(full name as the hospital writes it, a surname no other test uses)."""
    surname = "Brändli" + "".join(random.choice("bcdfghjklmnpqrstvwxz") for _ in range(6))
    return f"Zoë {surname}", surname


def unique_birth_date() -> date:
    return date(1930, 1, 1) + timedelta(days=random.randrange(30_000))


async def visible_without_scrolling(page, locator) -> bool:
    box = await locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= page.viewport_size["height"]


async def test_a_secretary_recognises_the_patient_by_name_and_birth_date_and_sees_the_number_on_file(
    browser, chain, stack
):
    name, surname = unique_name()
    born = unique_birth_date()
    mail = await letter(chain, name=name, birth_date=born.isoformat())
    cid = mail.convocation_id
    context, page = await sign_in(browser, stack)
    await page.set_viewport_size({"width": 1280, "height": 800})
    await open_convocation(page, stack, cid, "e-mailed")

    # By name, typed without the accent nor the case; the results are on screen at 1280×800 without scrolling.
    await page.goto(f"{stack.url('secretariat')}/search")
    await page.locator("#name").fill(surname.replace("ä", "a").upper())
    await page.locator("form:has(#name) button").click()
    result = page.locator(f'a[href="/c/{cid}"]')
    assert await result.inner_text() == name
    row = page.locator("tr", has=result)
    shown = await row.inner_text()
    assert f"born {born:%d.%m.%Y}" in shown and "Bâtiment Gustave Julliard" in shown and "Cardiologie" in shown
    assert await visible_without_scrolling(page, row), "the result is below the fold at 1280×800"
    assert surname not in page.url and surname.upper() not in page.url  # a POST: never in a URL
    # By date of birth alone.
    await page.locator("#birth_date").fill(born.isoformat())
    await page.locator("#name").fill("")
    await page.locator("form:has(#name) button").click()
    await expect(page.locator(f'a[href="/c/{cid}"]')).to_have_count(1)

    # The timeline page: who, when, where, and the number on file masked from the start.
    await result.click()
    facts = await page.locator("dl.facts").inner_text()
    assert name in facts and f"{born:%d.%m.%Y}" in facts and "Bâtiment Gustave Julliard, 2e étage" in facts
    number = page.locator('[data-fact="number"]')
    assert f"+41 79 *** ** {mail.e164[-2:]}" in await number.inner_text()
    assert "no code typed yet" in await number.inner_text()
    # The patient types the code: the open page says the number is verified, without a reload.
    await mail.log_in()
    await page.locator('li[data-kind="verified"]').wait_for(timeout=LIVE)
    assert "verified by the patient" in await number.inner_text()
    await context.close()

    # Another department finds nothing by the name; a supervisor reads the letter but not who the patient is.
    context, page = await sign_in(browser, stack, "Bruno Keller")
    await page.locator("#name").fill(surname)
    await page.locator("form:has(#name) button").click()
    await expect(page.locator(f'a[href="/c/{cid}"]')).to_have_count(0)
    await context.close()
    context, page = await sign_in(browser, stack, "Sophie Rossi")
    assert await page.locator("#name").count() == 0  # no search by name for her
    await page.goto(f"{stack.url('secretariat')}/c/{cid}")
    await expect(page.locator('li[data-kind="e-mailed"]')).to_have_count(1)
    assert name not in await page.content() and str(born.year) not in await page.locator("main").inner_text()
    await context.close()

    # Never in clear at rest, never in a log.
    kept = await chain.db.fetchval("select t::text from secretariat.convocation t where id = $1", uuid.UUID(cid))
    assert "fe2." in kept and surname not in kept and born.isoformat() not in kept
    for service in ("secretariat", "issuer"):
        log = chain.stack.log_file(service).read_text()
        assert surname not in log and born.isoformat() not in log


async def test_paper_letters_follow_the_print_room_switch_back_to_e_mail_and_an_unanswered_request_alerts(
    browser, chain, stack, print_room, tmp_path
):
    # The shipped rules on the test's time scale (tests/e2e/prometheus.py): 30 s unanswered instead of 30 min.
    prometheus = Prometheus(tmp_path, {"issuer": [stack.url("issuer")]}, None).start()

    def firing(name: str) -> list[dict]:
        return [a for a in prometheus.firing() if a["labels"]["alertname"] == name]

    try:
        context, page = await sign_in(browser, stack)

        # A request the hospital system will not answer (this test publishes nothing for it): started first.
        silent = await letter(chain)
        await open_convocation(page, stack, silent.convocation_id, "e-mailed")
        await act(page, "resend", "Patient deleted the e-mail")
        asked = asyncio.get_running_loop().time()

        # Send by post: the open page shows it as the events come, with no reload.
        a = await letter(chain)
        await open_convocation(page, stack, a.convocation_id, "e-mailed")
        await act(page, "post", "Patient asked for paper at the desk")
        await page.locator('li[data-kind="postal"]').wait_for(timeout=LIVE)
        await page.locator('li[data-action="post"][data-done="yes"]').wait_for(timeout=LIVE)
        assert (await chain.postal(a.convocation_id))[0]["data"]["reason"] == "secretariat"
        await open_convocation(page, stack, a.convocation_id)
        offered = await page.locator("[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
        assert "email-instead" in offered
        for gone in ("post", "resend", "withdraw"):  # a post pending, resend or withdraw after paper
            await expect(page.locator(f'.card[data-action="{gone}"]'), gone).to_have_count(0)
        # The patient's pages no longer offer paper: the portal learned of the secretariat's decision.
        await a.log_in()
        document = a.patient.get(f"{a.path}/document")
        assert document.status_code == 200 and f'action="{a.path}/postal"' not in document.text
        paper = await chain.db.fetchrow(
            "select reason, requested_at from access_portal.paper where message_id = $1", a.message_id
        )
        assert paper["reason"] == "secretariat" and paper["requested_at"] is not None

        # Printed, posted, returned: the timeline and the hospital's statuses say so; returned letters wait on
        # a worklist; once printed, the letter can no longer go back to e-mail.
        b = await letter(chain)
        await open_convocation(page, stack, b.convocation_id, "e-mailed")
        await act(page, "post", "No computer at home")
        await chain.postal(b.convocation_id)
        print_room.run(b.convocation_id)
        await page.locator('li[data-kind="printed"]').wait_for(timeout=LIVE)
        await page.locator("#live-changed").wait_for(timeout=LIVE)  # the actions below may no longer fit
        await page.get_by_role("link", name="Show the actions that fit now").click()
        await expect(page.locator('.card[data-action="email-instead"]')).to_have_count(0)
        print_room.run(b.convocation_id)
        await page.locator('li[data-kind="posted"]').wait_for(timeout=LIVE)
        print_room.returned(b.convocation_id, "moved")
        returned = page.locator('li[data-kind="returned"]')
        await returned.wait_for(timeout=LIVE)
        assert "the patient moved" in await returned.inner_text()
        reports = await chain.upstream(
            "convocation.status.v1", b.convocation_id, lambda es: "returned" in [e["data"]["status"] for e in es]
        )
        assert [e["data"]["status"] for e in reports][-3:] == ["printed", "posted", "returned"]
        await page.goto(f"{stack.url('secretariat')}/search?worklist=returned")
        await expect(page.locator(f'a[href="/c/{b.convocation_id}"]')).to_have_count(1)

        # Letter A, not printed yet, goes back to e-mail: the print room drops it, the hospital system sends it
        # again, a new link is e-mailed.
        await open_convocation(page, stack, a.convocation_id)
        await act(page, "email-instead", "Patient prefers the e-mail after all")
        await eventually(lambda: print_room.jobs[a.convocation_id].state == "cancelled")
        await page.locator('li[data-kind="postal-cancelled"]').wait_for(timeout=LIVE)
        await chain.upstream("convocation.reissue.requested.v1", a.convocation_id, lambda es: len(es) >= 1)
        await chain.publish(republished(a.event))
        await page.locator('li[data-action="email-instead"][data-done="yes"]').wait_for(timeout=LIVE)
        assert len(chain.emails_to(a.event["data"]["patient"]["email"])) == 2

        # The unanswered request: after the wait the console offers post and a new request, says why, lists
        # it, and the alert fires; once the hospital system answers, it resolves.
        await asyncio.sleep(max(0.0, 16 - (asyncio.get_running_loop().time() - asked)))
        await open_convocation(page, stack, silent.convocation_id)
        notice = await page.locator(".notice.warn").inner_text()
        assert "The hospital system has not sent the letter again" in notice
        for offered in ("post", "resend"):
            await expect(page.locator(f'form[data-action="{offered}"]'), offered).to_have_count(1)
        await page.goto(f"{stack.url('secretariat')}/search?worklist=unanswered")
        await expect(page.locator(f'a[href="/c/{silent.convocation_id}"]')).to_have_count(1)
        alert = await eventually(lambda: firing("ConvocationsReissueUnanswered"))
        assert alert[0]["labels"]["severity"] == "warning"
        assert alert[0]["annotations"]["runbook_url"] == "docs/runbooks.md#convocationsreissueunanswered"
        await chain.publish(republished(silent.event))
        await eventually(lambda: not firing("ConvocationsReissueUnanswered"))
        await context.close()
    finally:
        prometheus.stop()


async def test_withdrawing_asks_on_a_page_of_its_own_and_works_without_javascript(browser, chain, stack):
    gone = await letter(chain)
    context = await browser.new_context(locale="en-GB", java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{stack.url('secretariat')}/?lang=en")
    await page.get_by_role("link", name="Sign in with the hospital account").click()
    await page.get_by_role("button", name=re.compile("Alice Martin")).click()
    await page.wait_for_url(re.compile(r"/search$"))
    await open_convocation(page, stack, gone.convocation_id, "e-mailed")
    # The card offers no button that withdraws at once; a form posted without the confirmation is sent there.
    await expect(page.locator('.card[data-action="withdraw"] button')).to_have_count(0)
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    direct = await context.request.post(
        f"{stack.url('secretariat')}/c/{gone.convocation_id}/actions",
        form={"csrf": csrf, "action": "withdraw", "reason": "no confirmation"},
        max_redirects=0,
    )
    assert direct.status == 303 and direct.headers["location"].endswith(f"/c/{gone.convocation_id}/confirm/withdraw")
    await withdraw(page, "Appointment moved to another hospital")
    await open_convocation(page, stack, gone.convocation_id, "withdrawn")
    assert PatientClient(gone.link).open_link().status_code == 410
    await context.close()


async def test_a_manager_reads_the_figures_of_his_departments_on_a_page_and_as_csv(browser, chain, stack, devoidc):
    tag = uuid.uuid4().hex[:6]
    derm, rad = f"derm-{tag}", f"rad-{tag}"
    devoidc.users.append(
        {
            "sub": f"u-m-{tag}",
            "username": f"manager-{tag}",
            "name": f"Nora Manager {tag}",
            "roles": ["manager"],
            "departments": [derm, rad],
        }
    )
    devoidc.users.append(
        {
            "sub": f"u-s-{tag}",
            "username": f"secretary-{tag}",
            "name": f"Lea Secretary {tag}",
            "roles": ["secretary"],
            "departments": [derm],
        }
    )
    # Dermatology: one letter downloaded, one sent by post; radiology: one e-mail bounced (paper by itself).
    downloaded = await letter(chain, department=(derm, "Dermatologie"))
    await downloaded.log_in()
    assert downloaded.patient.download().status_code == 200
    posted = await letter(chain, department=(derm, "Dermatologie"))
    chain.inbox.smtp_script(["550 5.1.1 No such user here"])
    bounced = chain.event(department=(rad, "Radiologie"))
    await chain.publish(bounced)
    await chain.wait_status(bounced["data"]["convocation_id"], "postal-fallback")
    context, page = await sign_in(browser, stack, f"Lea Secretary {tag}")
    await open_convocation(page, stack, posted.convocation_id, "e-mailed")
    await act(page, "post", "Patient asked for paper")
    await open_convocation(page, stack, posted.convocation_id, "postal")
    await open_convocation(page, stack, downloaded.convocation_id, "downloaded")
    await context.close()

    context = await browser.new_context(locale="en-GB", accept_downloads=True)
    page = await context.new_page()
    await page.goto(f"{stack.url('secretariat')}/?lang=en")
    await page.get_by_role("link", name="Sign in with the hospital account").click()
    await page.get_by_role("button", name=re.compile(f"Nora Manager {tag}")).click()
    await page.wait_for_url(re.compile(r"/figures$"))  # a manager's home: no search, no patients
    await expect(page.get_by_role("link", name="Search")).to_have_count(0)
    figures = {}
    for department in (derm, rad):
        cells = page.locator(f'tr[data-department="{department}"] [data-figure]')
        figures[department] = dict(
            zip(
                await cells.evaluate_all("els => els.map(e => e.dataset.figure)"),
                await cells.all_inner_texts(),
                strict=True,
            )
        )
    assert figures[derm]["sent"] == "2" and figures[derm]["emailed"] == "2"
    assert figures[derm]["downloaded"].startswith("1") and "asked by the secretariat: 1" in figures[derm]["paper"]
    assert figures[derm]["median"] != "–" and figures[derm]["bounced"] == "0"
    assert (figures[rad]["sent"], figures[rad]["bounced"]) == ("1", "1")
    assert "the e-mail bounced: 1" in figures[rad]["paper"]
    async with page.expect_download() as got:
        await page.get_by_role("link", name="Download as CSV").click()
    rows = list(csv.DictReader(io.StringIO((await (await got.value).path()).read_text())))
    by_department = {r["department"]: r for r in rows}
    assert set(by_department) == {derm, rad}
    assert by_department[derm]["paper_secretariat"] == "1" and by_department[rad]["paper_email-failed"] == "1"
    assert by_department[derm]["downloaded_within_3_days"] == "1"
    await context.close()
    # Cardiology's secretary does not see these departments' figures.
    context, page = await sign_in(browser, stack)
    await page.goto(f"{stack.url('secretariat')}/figures")
    await expect(page.locator(f'tr[data-department="{derm}"]')).to_have_count(0)
    await context.close()


async def test_a_supervisor_filters_the_staff_audit_pages_back_and_exports_exactly_what_matches(browser, chain, stack):
    target = await letter(chain)
    base = stack.url("secretariat")
    context, page = await sign_in(browser, stack, "Bruno Keller")
    for _ in range(22):  # another department's letter: each view refused and audited
        assert (await context.request.get(f"{base}/c/{target.convocation_id}")).status == 404
    await context.close()
    context, page = await sign_in(browser, stack, "Sophie Rossi")
    await page.goto(f"{base}/audit")
    await page.locator("#person").fill("bruno")
    await page.locator("#action").select_option("view")
    await page.locator("#convocation_id").fill(target.convocation_id)
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url(re.compile(r"person=bruno"))  # the filtered page, loaded (a CI run counted too soon)
    rows = page.locator("main tbody tr")
    # Pages of 20 rows (AUDIT_PAGE_ROWS in the test stack), newest first; the next page goes further back.
    await expect(rows).to_have_count(20)
    for text in await rows.all_inner_texts():
        assert "Bruno Keller" in text and "View" in text and "refused: another department" in text
    await page.get_by_role("link", name="Older entries").click()
    await page.wait_for_url(re.compile(r"before=.*person=bruno|person=bruno.*before="))
    await expect(rows).to_have_count(2)
    await expect(page.get_by_role("link", name="Older entries")).to_have_count(0)
    # The export of the filter holds every matching row, not a page of them, oldest first.
    async with page.expect_download() as got:
        await page.get_by_role("link", name=re.compile("Export these entries as CSV")).click()
    lines = list(csv.DictReader(io.StringIO((await (await got.value).path()).read_text())))
    assert len(lines) == 22 and {(r["name"], r["action"], r["outcome"]) for r in lines} == {
        ("Bruno Keller", "view", "refused-department")
    }
    assert [r["id"] for r in lines] == sorted((r["id"] for r in lines), key=int)
    await context.close()


# Codes the issue found on the French console ("action" is also a French word, so not among them).
CODES = re.compile(
    r"(?<![\w-])(cardiology|email|e-mailed|secretariat|postal|view|requested|refused-department)"
    r"(?![\w-])"
)


async def french_console(browser, stack, who: str):
    context = await browser.new_context(locale="fr-CH")
    page = await context.new_page()
    await page.goto(f"{stack.url('secretariat')}/")
    await page.get_by_role("link", name="Se connecter avec le compte de l’hôpital").click()
    await page.get_by_role("button", name=re.compile(who)).click()
    await page.wait_for_url(re.compile(r"/search$"))
    return context, page


async def test_the_french_console_shows_labels_never_codes_and_the_switch_keeps_the_page(browser, chain, stack):
    mail = await letter(chain)
    context, page = await french_console(browser, stack, "Alice Martin")
    await open_convocation(page, stack, mail.convocation_id, "e-mailed")
    await act(page, "post", "La patiente préfère le papier")
    await page.locator('li[data-kind="postal"]').wait_for(timeout=LIVE)
    # The channel comes from the issuer's own step, which may reach the console a refresh after the timeline's.
    channel = page.locator("dl.facts dd", has_text=re.compile(r"^E-mail · papier : demandé par le secrétariat$"))
    await expect(channel).to_have_count(1, timeout=LIVE)
    text = await page.locator("body").inner_text()
    assert not CODES.search(text), CODES.search(text)
    facts = await page.locator("dl.facts dd").all_inner_texts()
    assert "Cardiologie" in facts and "E-mail · papier : demandé par le secrétariat" in facts, facts
    assert "Papier demandé (papier : demandé par le secrétariat) · par le secrétariat" in text
    # The switch keeps the page and what it shows: the same worklist, in German.
    await page.goto(f"{stack.url('secretariat')}/search?worklist=paper-today")
    await page.get_by_role("link", name="Deutsch").click()
    await page.wait_for_url(re.compile(r"/search\?worklist=paper-today&lang=de$"))
    assert "Heute Papierversand verlangt" in await page.locator("#results-title").inner_text()
    await expect(page.locator(f'a[href="/c/{mail.convocation_id}"]')).to_have_count(1)
    await context.close()
    context, page = await french_console(browser, stack, "Sophie Rossi")
    await page.goto(f"{stack.url('secretariat')}/audit?convocation_id={mail.convocation_id}")
    text = await page.locator("main").inner_text()
    assert "Consultation" in text and "demandée" in text and not CODES.search(text), CODES.search(text)
    await context.close()
