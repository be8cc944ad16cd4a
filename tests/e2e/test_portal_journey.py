"""Issue 10: the patient's journey off the happy path ends somewhere useful (new code on a first visit,
errors by the field, language switch, help pages, post instead, appointment as text, longer session)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import random_mobile
from tests.e2e.test_portal_helpers import letter, state_of
from tests.patient import csrf_of

pytestmark = pytest.mark.e2e


def resend_from_code_page(mail):
    """Press "Send a new code" on the code page, as the browser would post its form."""
    page = mail.patient.get(f"{mail.path}/code")
    form = re.search(r'<form method="post" action="([^"]+/code)">(.*?)</form>', page.text, re.S)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(2)))
    assert "phone" not in fields  # the number was typed on the first page only
    assert fields["k"] == ""
    fields["k"] = mail.patient.secret  # as the page's JavaScript fills it in
    return mail.patient.post(form.group(1), fields)


@pytest.mark.parametrize("on_file", [True, None], ids=["number-on-file", "first-use"])
async def test_send_a_new_code_works_on_a_first_visit_after_the_wait_it_shows(chain, on_file):
    mail = await letter(chain, mobile=on_file)
    if on_file is None:  # no number on file: the patient types theirs (trust on first use)
        mail.e164, mail.national = random_mobile()
    assert mail.patient.request_code(mail.national).status_code == 303
    first = await mail.code(1)

    too_soon = mail.patient.follow(resend_from_code_page(mail))  # the code page again, saying when (issue 20, item 4)
    assert too_soon.status_code == 429 and state_of(too_soon.text) == "too_early"
    assert re.search(r"\d\d:\d\d", too_soon.text) and "Retry-After" in too_soon.headers

    await mail.travel(31)
    again = resend_from_code_page(mail)
    assert again.status_code == 303, state_of(again.text)
    second = await mail.code(2)  # a fresh code, to the same number
    assert mail.patient.enter_code(second).status_code == 303
    assert first != second or len(await mail.challenges()) == 2


async def test_a_mistyped_number_is_told_by_the_field_on_the_same_page_the_govuk_way(chain):
    mail = await letter(chain)
    typed = "079 98"
    page = mail.patient.follow(mail.patient.request_code(typed))  # post/redirect/get: the first page again
    assert page.status_code == 400
    html = page.text
    assert re.search(r"<title>Erreur :", html), "the title starts with the error, in the page's language"
    assert 'id="error-summary"' in html and 'href="#phone"' in html
    assert 'id="phone-error"' in html and 'aria-invalid="true"' in html
    # What the patient typed is in no address and no page: the tab's script types it in again (tests/browser).
    assert typed not in html and typed.replace(" ", "") not in page.history[0].headers["location"]
    assert 'action="/m/' in html and "/code" in html, "the number form is on the page again"

    german = mail.patient.get(f"{mail.path}?told=number_invalid&lang=de")  # the language switch keeps the error
    assert german.status_code == 400 and re.search(r"<title>Fehler:", german.text)
    again = mail.patient.follow(mail.post("code", {"phone": "12"}))
    assert re.search(r"<title>Fehler:", again.text)
    assert f'href="{mail.path}?told=number_invalid&amp;lang=fr"' in again.text


async def test_a_wrong_code_is_told_by_the_field_with_the_input_kept(chain):
    mail = await letter(chain)
    mail.patient.request_code(mail.national)
    code = await mail.code()
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    page = mail.patient.follow(mail.guess(wrong))
    assert page.history[0].headers["location"] == f"{mail.path}/code?told=wrong_code"
    assert page.status_code == 400
    assert re.search(r"<title>Erreur :", page.text) and 'href="#code"' in page.text
    assert "Essais restants : 4." in page.text  # counted by the database, not carried in the address
    assert wrong not in page.text  # the tab's script types it in again (tests/browser)


async def test_every_page_has_the_language_switch_and_the_hospitals_general_number(chain):
    mail = await letter(chain, language="it")
    page = mail.patient.open_link()
    assert '<html lang="it">' in page.text
    for code in ("fr", "de", "it", "en"):
        assert f'?lang={code}"' in page.text
    assert "+41 22 372 33 11" in page.text and mail.secretariat_phone in page.text

    switched = mail.patient.get(f"{mail.path}?lang=en")
    assert '<html lang="en">' in switched.text and "Your secure message" in switched.text
    assert '<html lang="en">' in mail.patient.get(f"{mail.path}/no-phone").text  # remembered

    for lang, title in (
        ("fr", "Lien non reconnu"),
        ("de", "Link nicht erkannt"),
        ("it", "Link non riconosciuto"),
        ("en", "Link not recognised"),
    ):
        unknown = mail.patient.get(f"/m/00000000-0000-4000-8000-000000000000?lang={lang}")
        assert unknown.status_code == 404 and title in unknown.text and "+41 22 372 33 11" in unknown.text


@pytest.mark.parametrize("topic, state", [("not-my-number", "not_my_number"), ("no-phone", "no_phone")])
async def test_not_my_number_and_no_mobile_phone_say_what_to_do_and_whom_to_call(chain, topic, state):
    mail = await letter(chain)
    first = mail.patient.open_link().text
    assert f'{mail.path}/{topic}"' in first
    page = mail.patient.get(f"{mail.path}/{topic}")
    assert page.status_code == 200 and state_of(page.text) == state
    assert f'href="tel:{mail.secretariat_phone.replace(" ", "")}"' in page.text
    assert f'href="{mail.path}"' in page.text  # and back
    assert chain.sms_count(mail.e164) == 0


async def test_post_instead_after_the_code_reaches_the_print_room_and_the_hospital(chain):
    mail = await letter(chain)
    await mail.log_in()
    document = mail.patient.get(f"{mail.path}/document")
    assert "/postal" in document.text
    confirmed = mail.post("postal", {})  # answered with a redirect to the document page, which says so
    assert confirmed.status_code == 303 and confirmed.headers["location"] == f"{mail.path}/document"
    mail.post("postal", {})  # pressed twice: posted once

    posted = await chain.postal(mail.convocation_id)
    assert [e["data"]["reason"] for e in posted] == ["patient-request"]
    statuses = await chain.upstream(
        "convocation.status.v1",
        mail.convocation_id,
        lambda events: any(e["data"]["status"] == "postal" for e in events),
    )
    assert [e["data"]["detail"] for e in statuses if e["data"]["status"] == "postal"] == ["patient-request"]
    again = mail.patient.get(f"{mail.path}/document")
    assert '/postal"' not in again.text  # asked once: the button gives way to the confirmation
    assert "vous avez demandé cette convocation par la poste" in again.text
    assert state_of(again.text) == "paper_told"
    # Every page of the letter says so, the help pages and the page of an ended session too.
    for path in ("/not-my-number", "/no-phone"):
        assert "vous avez demandé cette convocation par la poste" in mail.patient.get(mail.path + path).text
    await mail.travel(16 * 60)
    ended = mail.patient.get(f"{mail.path}/document")
    assert ended.status_code == 401 and 'h1 data-state="session_expired"' in ended.text
    assert "vous avez demandé cette convocation par la poste" in ended.text


async def test_without_the_code_nobody_can_ask_for_the_post(chain):
    mail = await letter(chain)
    refused = mail.patient.follow(mail.post("postal", {}))
    assert refused.status_code == 401 and state_of(refused.text) == "session_expired"
    row = await mail.message_row()
    assert row["postal_requested_at"] is None


async def test_the_document_page_shows_the_appointment_as_text_and_the_ics_reminds(chain):
    mail = await letter(chain, language="en")
    await mail.log_in()
    page = mail.patient.get(f"{mail.path}/document")
    assert 'id="print"' in page.text and "<dl>" in page.text
    assert "Your download has started" in page.text  # the confirmation the page announces
    # The page's script asks for the appointment with the tab's secret (fetch: the page stays a GET).
    shown = mail.patient.post(f"{mail.path}/appointment", {"csrf": csrf_of(page.text), "k": mail.patient.secret})
    assert shown.status_code == 200 and shown.headers["content-type"] == "application/json"
    appointment = mail.event["data"]["appointment"]
    assert shown.json()["place"] == appointment["place"]["name"]
    assert shown.json()["department"] == appointment["department"]["name"]

    without_secret = mail.patient.post(f"{mail.path}/appointment", {"csrf": csrf_of(page.text), "k": ""})
    assert (without_secret.status_code, without_secret.json()) == (400, {"state": "link_incomplete"})

    ics = mail.patient.download("ics").text
    assert ics.count("BEGIN:VALARM") == 2 and "TRIGGER:-P1D" in ics and "TRIGGER:-PT2H" in ics


async def test_the_session_can_be_extended_before_it_ends(chain):
    mail = await letter(chain)
    await mail.log_in()
    page = mail.patient.get(f"{mail.path}/document")
    warn_after = int(re.search(r'data-warn-after="(\d+)"', page.text).group(1))
    assert warn_after == 15 * 60 - 2 * 60  # two minutes before the idle limit
    await mail.travel(14 * 60)
    assert mail.post("extend", {}).status_code == 303
    await mail.travel(14 * 60)  # 28 minutes since the code, 14 since the extension
    assert mail.patient.get(f"{mail.path}/document").status_code == 200
    await mail.travel(16 * 60)
    assert mail.patient.get(f"{mail.path}/document").status_code == 401
    assert ("session-extend", "ok") in await mail.audit()


async def test_once_downloaded_the_post_is_no_longer_offered_nor_promised(chain):
    mail = await letter(chain)
    await mail.log_in()
    assert mail.patient.download("pdf").status_code == 200
    page = mail.patient.get(f"{mail.path}/document")
    assert '/postal"' not in page.text
    refused = mail.post("postal", {})  # pressed after the download: the page says why nothing is posted
    assert refused.status_code == 303 and refused.headers["location"].endswith("?told=post_after_download")
    told = mail.patient.get(refused.headers["location"])
    assert state_of(told.text) == "post_after_download" and "plus envoyée par la poste" in told.text
    assert (await mail.message_row())["postal_requested_at"] is None
