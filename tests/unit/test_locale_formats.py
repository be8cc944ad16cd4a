"""Issue 20, item 12: dates, names and numbers in the patient's language, written once (shared/i18n.py) and
read the same on the portal's pages, in the calendar file, the e-mails and the SMS (the letter: test_render_pdf).
Each test asserts the exact words a patient reads in French, German, Italian and English."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import date, datetime, timedelta, timezone

import icalendar
import pytest

from access_portal import calendar
from mailer.emails import render_notice
from shared.i18n import (
    content_disposition,
    download_name,
    format_appointment,
    format_appointment_date,
    format_long_date,
    format_number,
    format_time,
    tel_href,
    tel_link,
)
from sms_gateway.text import otp_text
from tests.unit.test_portal_pages import MESSAGE, get, pages

# 08:30 UTC on a winter Monday: 09:30 in Geneva.
AT = datetime(2026, 12, 21, 8, 30, tzinfo=timezone.utc)
# What a patient reads, as Babel's CLDR data writes it for fr_CH, de_CH, it_CH and en_GB.
DAY = {
    "fr": "lundi, 21 décembre 2026",
    "de": "Montag, 21. Dezember 2026",
    "it": "lunedì, 21 dicembre 2026",
    "en": "Monday, 21 December 2026",
}
WHEN = {lang: f"{day}, 09:30" for lang, day in DAY.items()}
LONG = {"fr": "21 décembre 2026", "de": "21. Dezember 2026", "it": "21 dicembre 2026", "en": "21 December 2026"}
DETAILS = {
    "starts_at": AT.isoformat(),
    "department": "Kardiologie",
    "place": "Gebäude Julliard",
    "address": "Rue Gabrielle-Perret-Gentil 4, 1205 Genf",
    "secretariat_phone": "022 372 33 11",
}


@pytest.mark.parametrize("lang", list(DAY))
def test_dates_and_times_are_written_as_the_patients_language_writes_them_in_geneva_time(lang):
    assert format_appointment_date(AT, lang) == DAY[lang]
    assert format_time(AT, lang) == "09:30"
    assert format_appointment(AT, lang) == WHEN[lang]
    assert format_long_date(AT, lang) == LONG[lang]
    summer = datetime(2026, 7, 1, 22, 15, tzinfo=timezone.utc)  # 00:15 the next day in Geneva (CEST)
    assert format_time(summer, lang) == "00:15" and "2" in format_appointment_date(summer, lang)
    assert format_long_date(date(2026, 12, 21), lang) == LONG[lang]


def test_german_has_its_comma_and_ordinal_dot_not_montag_21_dezember():
    assert format_appointment(AT, "de") == "Montag, 21. Dezember 2026, 09:30"
    assert "Montag 21 Dezember" not in format_appointment(AT, "de")


def test_a_time_without_a_zone_is_refused_rather_than_guessed():
    with pytest.raises(ValueError):
        format_appointment(datetime(2026, 12, 21, 9, 30), "fr")


@pytest.mark.parametrize(
    "lang, written", [("fr", "12'345,5"), ("de", "12'345.5"), ("it", "12'345.5"), ("en", "12,345.5")]
)
def test_numbers_use_the_languages_separators(lang, written):
    assert format_number(12345.5, lang) == written


@pytest.mark.parametrize("lang", list(DAY))
def test_the_portal_shows_the_appointment_in_the_chosen_language(lang):
    # The document page's script shows what POST /m/{id}/appointment answers: calendar.when in the page's language.
    assert calendar.when(DETAILS, lang) == WHEN[lang]
    html = (
        pages()
        .render(
            get("/m/x/document", f"lang={lang}".encode()),
            "document.html",
            "fr",
            message=MESSAGE,
            postal_offered=False,
            notice=None,
            notice_text=None,
            warn_after=600,
            idle_after=900,
            warning_minutes=5,
        )
        .body.decode()
    )
    # Until when the message opens (issue 17, item 4), in the same words as the date of the appointment.
    assert format_appointment(MESSAGE.expires_at, lang) in html


@pytest.mark.parametrize(
    "lang, summary, questions, pdf, ics",
    [
        ("fr", "Votre convocation – Kardiologie", "Appelez le secrétariat", "convocation", "rendez-vous"),
        ("de", "Ihr Aufgebot – Kardiologie", "Rufen Sie das Sekretariat", "Aufgebot", "Termin"),
        ("it", "La Sua convocazione – Kardiologie", "segreteria", "convocazione", "appuntamento"),
        ("en", "Your convocation – Kardiologie", "Call the secretariat", "convocation", "appointment"),
    ],
)
def test_the_calendar_file_and_the_download_names_follow_the_chosen_language(lang, summary, questions, pdf, ics):
    late = {**DETAILS, "starts_at": "2026-12-10T23:30:00+00:00"}  # 00:30 in Geneva: the 11th
    assert calendar.file_name("pdf", late, lang) == f"{pdf}-2026-12-11.pdf"
    assert calendar.file_name("ics", late, lang) == f"{ics}-2026-12-11.ics"
    raw = calendar.ics(DETAILS, message_id=uuid.uuid4(), host="portal.example", language=lang, hospital="HUG")
    [event] = icalendar.Calendar.from_ical(raw).walk("VEVENT")
    assert str(event["SUMMARY"]) == summary
    description = str(event["DESCRIPTION"])
    assert description.startswith(WHEN[lang] + "\n\nHUG\n\n") and questions in description
    for name in ("SUMMARY", "DESCRIPTION", "LOCATION"):
        assert event[name].params["LANGUAGE"] == lang
    assert {str(a["DESCRIPTION"]) for a in event.walk("VALARM")} == {summary}


def test_file_names_are_safe_and_non_ascii_names_travel_as_rfc_6266():
    assert download_name("Rendez-vous / été", date(2026, 12, 21), "ics") == "Rendez-vous-été-2026-12-21.ics"
    assert content_disposition("Termin-2026-12-21.ics") == 'attachment; filename="Termin-2026-12-21.ics"'
    assert content_disposition("été-2026-12-21.ics") == (
        "attachment; filename=\"ete-2026-12-21.ics\"; filename*=UTF-8''%C3%A9t%C3%A9-2026-12-21.ics"
    )


def test_phone_numbers_become_links_a_phone_dials_and_anything_else_stays_text():
    assert tel_href("022 372 33 11") == tel_href("+41 22 372 33 11") == "tel:+41223723311"
    assert str(tel_link("022 372 33 11")) == '<a href="tel:+41223723311">022 372 33 11</a>'
    assert str(tel_link("<script>")) == "&lt;script&gt;" and tel_href("abc") is None


@pytest.mark.parametrize("lang", list(DAY))
def test_the_portals_footer_and_help_pages_link_the_phone_numbers(lang):
    message = dataclasses.replace(MESSAGE, public_phone="022 372 33 11")
    html = (
        pages()
        .state(
            get("/m/x/not-my-number", f"lang={lang}".encode()),
            "not_my_number",
            "fr",
            status=200,
            message=message,
            phone=MESSAGE.secretariat_phone,
        )
        .body.decode()
    )
    assert '<a href="tel:+41223724000">+41 22 372 40 00</a>' in html  # the letter's secretariat, in the text
    assert html.count('<a href="tel:+41223723311">022 372 33 11</a>') == 2  # the contact line and the footer
    assert re.search(r'<p class="help">[^<]*<a href="tel:\+41223723311">\+41 22 372 33 11</a></p>', html), (
        "the hospital's general number"
    )
    assert "&lt;a" not in html


@pytest.mark.parametrize("lang", list(DAY))
def test_a_wait_names_the_time_or_the_day_in_the_language(lang):
    for ahead in (timedelta(hours=1), timedelta(days=2)):
        until = datetime.now(timezone.utc).replace(second=0, microsecond=0) + ahead
        html = pages().wait(get("/m/x/code", f"lang={lang}".encode()), MESSAGE, until, paper=None).body.decode()
        shown = format_time(until, lang) if ahead < timedelta(hours=20) else format_appointment(until, lang)
        assert shown in html


@pytest.mark.parametrize(
    "lang, words",
    [
        ("fr", "123456 est votre code pour ouvrir votre message sécurisé des HUG. Il est valable 10 minutes."),
        ("de", "123456 ist Ihr Code, um Ihre sichere Nachricht der HUG zu öffnen. Er ist 10 Minuten gültig."),
        ("it", "123456 è il Suo codice per aprire il messaggio sicuro degli HUG. Il codice è valido 10 minuti."),
        ("en", "123456 is your code to open your secure message from HUG. It is valid for 10 minutes."),
    ],
)
def test_the_sms_reads_in_the_patients_language(lang, words):
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    text = otp_text(
        lang, "123456", "convocations.hug.ch", hospital="HUG", expires_at=now + timedelta(minutes=10), now=now
    )
    assert text == f"{words}\n\n@convocations.hug.ch #123456"


@pytest.mark.parametrize("lang", list(LONG))
def test_emails_date_the_earlier_message_in_the_language_and_link_the_phone_in_html_only(lang):
    mail = render_notice(
        kind="reminder",
        language=lang,
        patient_name="Zoë",
        hospital_name="HUG",
        portal_host="convocations.hug.example",
        sent_at=AT,
        contact_phone="022 372 33 11",
    )
    assert LONG[lang] in mail.text and LONG[lang] in mail.html
    assert '<a href="tel:+41223723311">022 372 33 11</a>' in mail.html
    assert "022 372 33 11" in mail.text and "tel:" not in mail.text
