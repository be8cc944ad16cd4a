"""The appointment as an iCalendar event (.ics), in the Europe/Zurich zone."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from access_portal.i18n import text

ZURICH = ZoneInfo("Europe/Zurich")


def ics(details: dict, *, message_id: uuid.UUID, host: str, language: str, hospital: str) -> bytes:
    start = datetime.fromisoformat(details["starts_at"]).astimezone(ZURICH)
    cal = Calendar()
    cal.add("prodid", "-//Convocations//access-portal//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"{message_id}@{host}")
    event.add("dtstamp", datetime.now(ZURICH))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(hours=1))
    event.add("summary", f"{text(language, 'doc_title')} – {details['department']}")
    event.add("location", f"{details['place']}, {details['address']}")
    description = [hospital, text(language, "help", phone=details["secretariat_phone"])]
    if details.get("instructions"):
        description.insert(1, details["instructions"])
    event.add("description", "\n\n".join(description))
    cal.add_component(event)
    return cal.to_ical()
