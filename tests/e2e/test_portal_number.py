"""Issue #4, point 2, issue 7, items 3 and 6, and issue 20, item 1: the number on file decides where the
code goes; a wrong number is told plainly (only the holder of the whole link may ask) and locks nothing;
a number proven through a link binds that letter only."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_portal_helpers import letter, random_mobile, state_of

pytestmark = pytest.mark.e2e


async def binding_of(chain, mail):
    """The phone binding of the letter's patient, or None."""
    return await chain.db.fetchrow(
        "select b.* from access_portal.phone_binding b join access_portal.message m on m.patient_ref = b.patient_ref"
        " where m.message_id = $1",
        mail.message_id,
    )


async def test_the_page_shows_a_masked_hint_and_any_usual_form_of_the_number_on_file_gets_the_code(chain):
    e164, national = random_mobile()
    mail = await letter(chain, mobile=national)
    page = mail.patient.open_link()
    hint = f"+41 79 *** ** {e164[-2:]}"
    assert hint in page.text
    assert e164[4:-2] not in page.text.replace(" ", "")  # the hidden digits stay hidden

    digits = e164[3:]  # 79xxxxxxx
    forms = [national, f"+41 {digits[:2]} {digits[2:5]} {digits[5:7]} {digits[7:]}", f"0041 {digits}", f"0{digits}"]
    for nth, typed in enumerate(forms, start=1):
        sent = mail.patient.request_code(typed)
        assert sent.status_code == 303, (typed, state_of(sent.text))
        await mail.sms(nth)  # each one reached the number on file
        await mail.travel(31)  # past the resend cooldown
    assert [c["phone_hint"] for c in await mail.challenges()] == [hint] * 4
    assert chain.sms_count(e164) == 4


async def test_a_wrong_number_is_told_plainly_with_the_end_of_the_number_on_file_and_nothing_is_sent(chain):
    """Issue 20, item 1: no decoy any more. The holder of the whole link who mistypes the number is told so,
    in the page's language, with the last digits of the number on file, and the number typed is kept."""
    e164, national = random_mobile()
    other_e164, other_national = random_mobile()
    endings = {
        "fr": "se termine par",
        "de": "endet auf",
        "it": "termina con",
        "en": "which ends in",
    }
    for language, says in endings.items():
        mail = await letter(chain, mobile=national, language=language)
        told = mail.patient.follow(mail.patient.request_code(other_national))  # post/redirect/get
        assert told.history[0].headers["location"] == f"{mail.path}?told=number_mismatch"
        assert told.status_code == 400 and state_of(told.text) == "number_mismatch"
        error = re.search(r'<p class="error-message" id="phone-error">(.*?)</p>', told.text, re.S).group(1)
        assert f"{says} {e164[-2:]}" in error, error
        # The number typed travels in no address and no page: the tab's script types it in again (tests/browser).
        assert other_national not in told.text and other_national not in told.history[0].headers["location"]
        assert "/not-my-number" in told.text
        assert await mail.challenges() == []
        assert ("code-request", "number_mismatch") in await mail.audit()
    assert chain.sms_count(other_e164) == 0 and chain.sms_count(e164) == 0
    invalid = mail.patient.follow(mail.patient.request_code("079 123 45"))
    assert invalid.status_code == 400 and state_of(invalid.text) == "number_invalid"


async def test_wrong_numbers_lock_nothing_and_never_hold_back_the_patient_with_the_right_number(chain):
    """Issue 7, item 6: fifteen wrong numbers, then the patient gets a code at once."""
    mail = await letter(chain)
    for _ in range(15):
        assert state_of(mail.patient.follow(mail.patient.request_code(random_mobile()[1])).text) == "number_mismatch"
    row = await mail.message_row()
    assert row["failed_checks"] == 0 and row["locked_until"] is None
    assert not [a for a in await mail.audit() if a[0] == "lock"]
    sent = mail.patient.request_code(mail.national)
    assert sent.status_code == 303, state_of(sent.text)
    code = await mail.code()
    # A wrong number typed after the patient's request does not kill the patient's code either.
    assert mail.patient.follow(mail.patient.request_code(random_mobile()[1])).status_code == 400
    assert mail.patient.enter_code(code).status_code == 303
    assert chain.sms_count(mail.e164) == 1


async def test_without_the_whole_link_nothing_is_sent_checked_or_counted(chain):
    """Issue 20, item 1: asking for or checking a code needs the link's secret. Whoever has only the message
    id (or another letter's secret) is refused with a page that says what to do, and counts against
    nothing: no SMS, no wrong try, no wait, so nobody can lock the patient out with the id alone."""
    mail, elsewhere = await letter(chain), await letter(chain)
    for proof in (None, elsewhere.patient.secret, mail.patient.secret[:-2] + "AA", "x" * 43):
        data = {"phone": mail.national} if proof is None else {"phone": mail.national, "k": proof}
        refused = mail.patient.follow(mail.post("code", data, proof=proof is not None))
        assert refused.status_code == 403 and state_of(refused.text) == "no_proof", proof
        assert "JavaScript" in refused.text and "#" in refused.text
    assert await mail.challenges() == [] and chain.sms_count(mail.e164) == 0

    assert mail.patient.request_code(mail.national).status_code == 303
    code = await mail.code()
    for n in range(30):  # far more than the 5 tries of a code and the waits of the message
        guess = mail.patient.follow(mail.post("verify", {"code": f"{n:06d}"}, proof=False))
        assert guess.status_code == 403 and state_of(guess.text) == "no_proof"
    row = await mail.message_row()
    assert row["failed_checks"] == 0 and row["locked_until"] is None
    [challenge] = await mail.challenges()
    assert challenge["wrong"] == 0 and challenge["status"] == "active"
    assert [o for a, o in await mail.audit() if a == "code-check"] == ["no-proof"] * 30
    assert mail.patient.enter_code(code).status_code == 303  # the patient, with the whole link, gets in


async def test_a_number_proven_through_one_link_binds_that_letter_only_and_never_the_next(chain):
    """Issue 7, item 3: trust on first use does not carry over; only the number on file does."""
    patient_id = f"P-{random_mobile()[0][-8:]}-tofu"
    first = await letter(chain, mobile=None, patient_id=patient_id)
    page = first.patient.open_link()
    assert 'name="phone"' in page.text and "***" not in page.text  # no hint: nothing on file

    e164, national = random_mobile()
    assert first.patient.request_code(national).status_code == 303
    assert (await first.message_row())["proven_hash"] is None  # not before the code proves it
    assert first.patient.enter_code(await first.code(to=e164)).status_code == 303
    assert await binding_of(chain, first) is None  # nothing for the patient's later letters
    assert ("binding", "first-use") in await first.audit()
    # The same letter remembers the number it proved: no typing, and a way out if it is not yours.
    again = first.patient.open_link().text
    assert 'name="phone"' not in again and f"** {e164[-2:]}" in again and "/not-my-number" in again
    await first.travel(31)
    assert first.patient.request_code(None).status_code == 303
    await first.code(to=e164, nth=2)

    second = await letter(chain, mobile=None, patient_id=patient_id)
    page = second.patient.open_link()
    assert 'name="phone"' in page.text and f"** {e164[-2:]}" not in page.text
    assert (
        state_of(second.patient.follow(second.patient.request_code(None)).text) == "number_invalid"
    )  # nothing bound: type it
    assert chain.sms_count(e164) == 2


async def test_the_bound_number_page_offers_this_is_not_my_number_leading_to_the_secretariat(chain):
    patient_id = f"P-{random_mobile()[0][-8:]}-notmine"
    first = await letter(chain, patient_id=patient_id)
    await first.log_in()  # the number on file, proven: it binds the patient's later letters
    titles = set()
    for language in ("fr", "de", "it", "en"):
        later = await letter(chain, mobile=None, patient_id=patient_id, language=language)
        page = later.patient.open_link()
        assert 'name="phone"' not in page.text and f"** {first.e164[-2:]}" in page.text
        link = re.search(r'<a href="(/m/[0-9a-f-]+/not-my-number)"[^>]*>([^<]+)</a>', page.text)
        assert link and link.group(1) == f"{later.path}/not-my-number", page.text
        answer = later.patient.get(link.group(1))
        assert answer.status_code == 200 and state_of(answer.text) == "not_my_number"
        assert f'lang="{language}"' in answer.text and later.secretariat_phone in answer.text
        titles.add(re.search(r"<h1[^>]*>(.*?)</h1>", answer.text, re.S).group(1))
        assert ("not-my-number", "ok") in await later.audit()
        assert await later.challenges() == []  # nothing sent by following it
    assert len(titles) == 4  # each language its own words


async def test_a_verified_number_on_file_is_bound_and_a_letter_with_another_number_ends_the_binding(chain):
    patient_id = f"P-{random_mobile()[0][-8:]}-bind"
    first = await letter(chain, patient_id=patient_id)
    await first.log_in()

    same = await letter(chain, mobile=first.national, patient_id=patient_id)
    assert 'name="phone"' not in same.patient.open_link().text  # the number step is skipped
    assert same.patient.request_code(None).status_code == 303
    await same.code(nth=2)

    new_e164, new_national = random_mobile()
    moved = await letter(chain, mobile=new_national, patient_id=patient_id)
    assert await binding_of(chain, moved) is None
    assert ("binding", "ended") in await moved.audit()
    page = moved.patient.open_link()
    assert 'name="phone"' in page.text and f"** {new_e164[-2:]}" in page.text
    # The old number gets nothing any more: it is told that it is not the one on file.
    assert state_of(moved.patient.follow(moved.patient.request_code(first.national)).text) == "number_mismatch"
    assert chain.sms_count(first.e164) == 2 and await moved.challenges() == []
    await moved.travel(31)
    await moved.log_in(phone=new_national)
    binding = await binding_of(chain, moved)
    assert binding["source"] == "hospital" and binding["phone_hint"].endswith(new_e164[-2:])
