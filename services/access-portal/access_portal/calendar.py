"""The appointment as an iCalendar event (.ics) in the Europe/Zurich zone, and download file names,
in the language the patient reads the portal in (shared/i18n.py writes the dates and names)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event

from access_portal.i18n import N_, gettext
from shared.i18n import HOSPITAL_ZONE, download_name, format_appointment, normalize_language

ZURICH: ZoneInfo = HOSPITAL_ZONE
# Download names, one word in the patient's language (letters, digits and hyphens: it names a file).
FILE_WORDS = {"pdf": N_("convocation"), "ics": N_("appointment")}
# Calendar reminders: the day before and two hours before the appointment.
REMINDERS = (timedelta(days=1), timedelta(hours=2))


def local_start(details: dict) -> datetime:
    return datetime.fromisoformat(details["starts_at"]).astimezone(ZURICH)


def when(details: dict, language: str) -> str:
    """The appointment's date and time as the patient reads it, in Geneva time."""
    return format_appointment(local_start(details), language)


def file_name(kind: str, details: dict, language: str) -> str:
    """'convocation-2026-12-10.pdf', 'Termin-2026-12-10.ics': the appointment's local date."""
    return download_name(gettext(language, FILE_WORDS[kind]), local_start(details).date(), kind)


def ics(details: dict, *, message_id: uuid.UUID, host: str, language: str, hospital: str) -> bytes:
    """The event in ``language``: its texts are tagged with it (RFC 5545 LANGUAGE), reminders included."""
    start = local_start(details)
    tag = {"LANGUAGE": normalize_language(language)}
    cal = Calendar()
    cal.add("prodid", "-//Convocations//access-portal//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"{message_id}@{host}")
    event.add("dtstamp", datetime.now(timezone.utc))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(hours=1))
    event.add("summary", f"{gettext(language, 'Your convocation')} – {details['department']}", parameters=tag)
    event.add("location", f"{details['place']}, {details['address']}", parameters=tag)
    # The day and time in words first (Swiss time, whatever zone the patient's calendar shows).
    description = [
        when(details, language),
        hospital,
        gettext(
            language,
            "Questions, or a change of date or delivery? Call the secretariat at %(phone)s.",
            phone=details["secretariat_phone"],
        ),
    ]
    if details.get("instructions"):
        description.insert(2, details["instructions"])
    event.add("description", "\n\n".join(description), parameters=tag)
    for before in REMINDERS:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("trigger", -before)
        alarm.add("description", str(event["summary"]), parameters=tag)
        event.add_component(alarm)
    cal.add_component(event)
    # RFC 5545 §3.2.19: every TZID used must be defined by a VTIMEZONE in the same file (around the date).
    year = timedelta(days=366)
    cal.add_missing_timezones(first_date=start.date() - year, last_date=start.date() + year)
    return cal.to_ical()
