"""The appointment as an iCalendar event (.ics) in the Europe/Zurich zone, and download file names."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from icalendar import Alarm, Calendar, Event

from access_portal.i18n import gettext

ZURICH = ZoneInfo("Europe/Zurich")
LOCALES = {"fr": "fr_CH", "de": "de_CH", "it": "it_CH", "en": "en_GB"}
# Calendar reminders: the day before and two hours before the appointment.
REMINDERS = (timedelta(days=1), timedelta(hours=2))


def local_start(details: dict) -> datetime:
    return datetime.fromisoformat(details["starts_at"]).astimezone(ZURICH)


def when(details: dict, language: str) -> str:
    """The appointment's date and time as the patient reads it, in Geneva time."""
    return format_datetime(local_start(details), "EEEE d MMMM y, HH:mm", locale=LOCALES.get(language, "fr_CH"))


def file_name(kind: str, details: dict) -> str:
    """'convocation-2026-12-10.pdf', 'rendez-vous-2026-12-10.ics': the appointment's local date."""
    day = local_start(details).date().isoformat()
    return f"convocation-{day}.pdf" if kind == "pdf" else f"rendez-vous-{day}.ics"


def ics(details: dict, *, message_id: uuid.UUID, host: str, language: str, hospital: str) -> bytes:
    start = local_start(details)
    cal = Calendar()
    cal.add("prodid", "-//Convocations//access-portal//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"{message_id}@{host}")
    event.add("dtstamp", datetime.now(timezone.utc))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(hours=1))
    event.add("summary", f"{gettext(language, 'Your convocation')} – {details['department']}")
    event.add("location", f"{details['place']}, {details['address']}")
    description = [hospital, gettext(language, "Questions, or a change of date or delivery? Call the secretariat at %(phone)s.",
                                     phone=details["secretariat_phone"])]
    if details.get("instructions"):
        description.insert(1, details["instructions"])
    event.add("description", "\n\n".join(description))
    for before in REMINDERS:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("trigger", -before)
        alarm.add("description", event["summary"])
        event.add_component(alarm)
    cal.add_component(event)
    # RFC 5545 §3.2.19: every TZID used must be defined by a VTIMEZONE in the same file (around the date).
    year = timedelta(days=366)
    cal.add_missing_timezones(first_date=start.date() - year, last_date=start.date() + year)
    return cal.to_ical()
