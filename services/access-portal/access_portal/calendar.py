"""The appointment as an iCalendar event (.ics) in the Europe/Zurich zone, and download file names."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from access_portal.i18n import text

ZURICH = ZoneInfo("Europe/Zurich")


def local_start(details: dict) -> datetime:
    return datetime.fromisoformat(details["starts_at"]).astimezone(ZURICH)


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
    event.add("summary", f"{text(language, 'doc_title')} – {details['department']}")
    event.add("location", f"{details['place']}, {details['address']}")
    description = [hospital, text(language, "help", phone=details["secretariat_phone"])]
    if details.get("instructions"):
        description.insert(1, details["instructions"])
    event.add("description", "\n\n".join(description))
    cal.add_component(event)
    # RFC 5545 §3.2.19: every TZID used must be defined by a VTIMEZONE in the same file (around the date).
    year = timedelta(days=366)
    cal.add_missing_timezones(first_date=start.date() - year, last_date=start.date() + year)
    return cal.to_ical()
