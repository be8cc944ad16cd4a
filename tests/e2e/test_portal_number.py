"""Issue #4, point 2: the number on file decides where the code goes; trust on first use otherwise."""

from __future__ import annotations

import pytest

from tests.e2e.test_portal_helpers import letter, random_mobile, state_of

pytestmark = pytest.mark.e2e


async def binding_of(chain, mail):
    """The phone binding of the letter's patient, or None."""
    return await chain.db.fetchrow(
        "select b.* from access_portal.phone_binding b join access_portal.message m on m.patient_ref = b.patient_ref"
        " where m.message_id = $1", mail.message_id)


async def test_the_page_shows_a_masked_hint_and_any_usual_form_of_the_number_on_file_gets_the_code(chain):
    e164, national = random_mobile()
    mail = await letter(chain, mobile=national)
    page = mail.patient.open_link()
    hint = f"+41 79 *** ** {e164[-2:]}"
    assert hint in page.text
    assert e164[4:-2] not in page.text.replace(" ", "")  # the hidden digits stay hidden

    digits = e164[3:]  # 79xxxxxxx
    forms = [national, f"+41 {digits[:2]} {digits[2:5]} {digits[5:7]} {digits[7:]}", f"0041 {digits}",
             f"0{digits}"]
    for nth, typed in enumerate(forms, start=1):
        sent = mail.patient.request_code(typed)
        assert sent.status_code == 303, (typed, state_of(sent.text))
        await mail.sms(nth)  # each one reached the number on file
        await mail.travel(31)  # past the resend cooldown
    assert [c["phone_hint"] for c in await mail.challenges()] == [hint] * 4
    assert chain.sms_count(e164) == 4


async def test_a_number_other_than_the_one_on_file_gets_no_code_and_is_told_so(chain):
    mail = await letter(chain)
    other_e164, other_national = random_mobile()
    wrong = mail.patient.request_code(other_national)
    assert wrong.status_code == 400 and state_of(wrong.text) == "number_mismatch"
    assert mail.secretariat_phone in wrong.text
    invalid = mail.patient.request_code("079 123 45")
    assert invalid.status_code == 400 and state_of(invalid.text) == "number_invalid"
    assert await mail.challenges() == []
    assert chain.sms_count(other_e164) == 0 and chain.sms_count(mail.e164) == 0
    assert ("code-request", "number_mismatch") in await mail.audit()


async def test_wrong_numbers_count_towards_the_wait_so_the_hint_cannot_be_brute_forced(chain):
    mail = await letter(chain)
    for _ in range(4):
        assert state_of(mail.patient.request_code(random_mobile()[1]).text) == "number_mismatch"
    fifth = mail.patient.request_code(random_mobile()[1])
    assert fifth.status_code == 429 and state_of(fifth.text) == "wait"
    # Even the right number waits now.
    assert state_of(mail.patient.request_code(mail.national).text) == "wait"
    assert ("lock", "60s") in await mail.audit()
    await mail.travel(61)
    assert mail.patient.request_code(mail.national).status_code == 303


async def test_without_a_number_on_file_the_first_verified_number_is_bound_and_later_letters_skip_the_step(chain):
    patient_id = f"P-{random_mobile()[0][-8:]}-tofu"
    first = await letter(chain, mobile=None, patient_id=patient_id)
    page = first.patient.open_link()
    assert 'name="phone"' in page.text and "***" not in page.text  # no hint: nothing on file

    e164, national = random_mobile()
    assert first.patient.request_code(national).status_code == 303
    # Not bound before the code proves the patient holds the number.
    assert await binding_of(chain, first) is None
    assert first.patient.enter_code(await first.code(to=e164)).status_code == 303
    binding = await binding_of(chain, first)
    assert binding["source"] == "first-use" and binding["phone_hint"].endswith(e164[-2:])
    assert ("binding", "first-use") in await first.audit()

    second = await letter(chain, mobile=None, patient_id=patient_id)
    page = second.patient.open_link()
    assert 'name="phone"' not in page.text and binding["phone_hint"] in page.text
    assert second.patient.request_code(None).status_code == 303  # no number typed
    assert second.patient.enter_code(await second.code(to=e164, nth=2)).status_code == 303


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
    # The old number gets nothing any more.
    assert state_of(moved.patient.request_code(first.national).text) == "number_mismatch"
    await moved.log_in(phone=new_national)
    binding = await binding_of(chain, moved)
    assert binding["source"] == "hospital" and binding["phone_hint"].endswith(new_e164[-2:])
