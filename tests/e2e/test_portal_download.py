"""Issue #4, points 1 and 5: what a session downloads, what the link's secret is needed for, and the
document.released event each kind of download publishes once."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import icalendar
import pytest

from shared.i18n import format_appointment
from tests.e2e.test_portal_helpers import EventSpy, letter, state_of

pytestmark = pytest.mark.e2e
ZURICH = ZoneInfo("Europe/Zurich")


async def test_the_pdf_and_the_ics_download_as_attachments_and_each_kind_is_released_once(chain):
    mail = await letter(chain)
    appointment = mail.event["data"]["appointment"]
    starts_at = datetime.fromisoformat(appointment["starts_at"])
    day = starts_at.astimezone(ZURICH).date().isoformat()
    await mail.log_in()

    async with EventSpy(chain.exchange, "document.released.v1") as spy:
        pdf = mail.patient.download("pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == f'attachment; filename="convocation-{day}.pdf"'
        assert pdf.content == base64.b64decode(mail.event["data"]["document_pdf_base64"])
        ics = mail.patient.download("ics")
        assert ics.headers["content-type"].startswith("text/calendar")
        assert ics.headers["content-disposition"] == f'attachment; filename="rendez-vous-{day}.ics"'
        assert mail.patient.download("pdf").content == pdf.content
        assert mail.patient.download("ics").status_code == 200
        ours = lambda seen: [e for e in seen if e["data"]["message_id"] == str(mail.message_id)]  # noqa: E731
        released = ours(await spy.collect(until=lambda seen: len(ours(seen)) >= 2, quiet=1.5))
    assert sorted(e["data"]["kind"] for e in released) == ["ics", "pdf"]
    assert {e["producer"] for e in released} == {"access-portal"}
    assert {e["correlation_id"] for e in released} == {mail.convocation_id}
    await chain.wait_status(mail.convocation_id, "downloaded")

    calendar = icalendar.Calendar.from_ical(ics.content)
    [event] = calendar.walk("VEVENT")
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/Zurich"]
    assert event["DTSTART"].params["TZID"] == "Europe/Zurich"
    assert event.decoded("DTSTART") == starts_at.astimezone(ZURICH)
    assert appointment["place"]["name"] in str(event["LOCATION"])
    assert appointment["place"]["address"] in str(event["LOCATION"])
    assert appointment["department"]["name"] in str(event["SUMMARY"])
    assert appointment["department"]["secretariat_phone"] in str(event["DESCRIPTION"])
    assert uuid.UUID(str(event["UID"]).split("@")[0]) == mail.message_id

    # Issue 20, item 12: the patient switches to German; the files follow (names, words, the day in words).
    assert mail.patient.get(f"/m/{mail.message_id}/document?lang=de").status_code == 200
    ics = mail.patient.download("ics")
    assert ics.headers["content-disposition"] == f'attachment; filename="Termin-{day}.ics"'
    [event] = icalendar.Calendar.from_ical(ics.content).walk("VEVENT")
    assert str(event["SUMMARY"]).startswith("Ihr Aufgebot – ") and event["SUMMARY"].params["LANGUAGE"] == "de"
    assert str(event["DESCRIPTION"]).startswith(format_appointment(starts_at, "de"))
    pdf = mail.patient.download("pdf")
    assert pdf.headers["content-disposition"] == f'attachment; filename="Aufgebot-{day}.pdf"'


async def test_a_session_without_the_links_secret_opens_nothing_and_the_secret_only_travels_in_the_fragment(chain):
    mail = await letter(chain)
    assert "#" in mail.link and mail.patient.secret not in mail.patient.page_url
    await mail.log_in()
    wrong_secret = base64.urlsafe_b64encode(b"\0" * 32).rstrip(b"=").decode()
    for secret in ("", wrong_secret, "not base64 !", mail.patient.secret[:-2]):
        refused = mail.patient.follow(mail.patient.download("pdf", secret=secret))
        assert refused.history[0].headers["location"] == f"{mail.path}/document?told=link_incomplete"
        assert refused.status_code == 400 and state_of(refused.text) == "link_incomplete"
        assert "%PDF" not in refused.text
    assert (
        await chain.db.fetchval("select count(*) from access_portal.release where message_id = $1", mail.message_id)
        == 0
    )
    assert mail.patient.download("pdf").content.startswith(b"%PDF")
    assert mail.patient.secret not in chain.stack.logs()


async def test_the_whole_link_without_a_session_downloads_nothing(chain):
    mail = await letter(chain)
    refused = mail.patient.follow(
        mail.post("download/pdf", {"k": mail.patient.secret})
    )  # what a scanner holding the link could do
    assert refused.status_code == 401 and state_of(refused.text) == "session_expired"
    await mail.log_in()
    mail.patient.cookies.pop("__Host-session")
    assert mail.patient.follow(mail.post("download/pdf", {"k": mail.patient.secret})).status_code == 401
    assert (
        await chain.db.fetchval("select count(*) from access_portal.release where message_id = $1", mail.message_id)
        == 0
    )
