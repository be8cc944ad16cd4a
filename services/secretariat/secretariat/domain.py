"""The secretariat's rules as plain functions: which actions fit a convocation's state, search criteria."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
from pydantic import TypeAdapter, ValidationError

from shared.contracts import Email

ZURICH = ZoneInfo("Europe/Zurich")
ACTIONS = ("post", "resend", "correct-email", "withdraw", "correct-mobile", "reset-binding", "unlock")
# Carried out by the hospital system publishing the convocation again (the issuer keeps no letter).
REISSUE_ACTIONS = frozenset({"resend", "correct-email"})
WORKLISTS = ("bounced", "not-downloaded", "locked", "paper-today")
CLOSED = frozenset({"cancelled", "superseded", "expired", "withdrawn"})
REASON_MIN, REASON_MAX = 5, 500
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)


def action_refusal(action: str, c, now: datetime, actions=()) -> str | None:
    """Why ``action`` cannot be done on convocation row ``c`` now (a message key), or None. ``actions``:
    the actions already asked on it."""
    if action not in ACTIONS:
        return "unknown-action"
    if c["message_id"] is None or c["status"] is None:
        return "not-sealed"
    if c["status"] in CLOSED:
        return "closed"
    if action == "post" and (c["postal_at"] is not None or c["downloaded_at"] is not None):
        return "already-delivered"
    if action == "unlock" and not (c["locked_until"] and c["locked_until"] > now):
        return "not-locked"
    if action in REISSUE_ACTIONS:
        # The hospital system would publish a letter whose appointment is over: the issuer refuses those.
        if c["appointment_at"] is None or c["appointment_at"] <= now:
            return "appointment-past"
        if c["delivery"] == "postal":
            return "postal-channel"
        if reissue_pending(actions):
            return "reissue-pending"
    return None


def reissue_pending(actions) -> bool:
    """A resend or e-mail correction was asked and the new letter is not e-mailed yet: another one would
    only ask the hospital system twice."""
    return any(a["kind"] in REISSUE_ACTIONS and a["done_at"] is None for a in actions)


def parse_email(raw: str) -> str | None:
    """The address as the contracts accept it (one line, one plain address), else None."""
    try:
        return _EMAIL.validate_python((raw or "").strip())
    except ValidationError:
        return None


def reason_problem(reason: str) -> str | None:
    reason = reason.strip()
    if len(reason) < REASON_MIN:
        return "reason-required"
    if len(reason) > REASON_MAX:
        return "reason-too-long"
    return None


def parse_mobile(raw: str) -> str | None:
    """E.164 of a valid number typed in any usual form (national numbers read as Swiss), else None."""
    try:
        number = phonenumbers.parse(raw, "CH")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Criteria:
    convocation_id: uuid.UUID | None = None
    patient_id: str | None = None
    department: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    worklist: str | None = None
    days: int = 3

    def empty(self) -> bool:
        return not (self.convocation_id or self.patient_id or self.department or self.date_from or self.date_to
                    or self.worklist)

    def summary(self) -> str:
        """For the audit: what was searched, never the patient id itself."""
        parts = [f"{k}={v}" for k, v in (("id", self.convocation_id), ("department", self.department),
                                         ("from", self.date_from), ("to", self.date_to),
                                         ("worklist", self.worklist)) if v]
        if self.patient_id:
            parts.append("patient-id")
        if self.worklist == "not-downloaded":
            parts.append(f"days={self.days}")
        return " ".join(parts)[:300]


def criteria(*, convocation_id: str = "", patient_id: str = "", department: str = "", date_from: str = "",
             date_to: str = "", worklist: str = "", days: str = "") -> tuple[Criteria, list[str]]:
    """Criteria from form or query text, and the names of the fields that do not parse."""
    bad: list[str] = []

    def parse(name, raw, fn):
        raw = (raw or "").strip()
        if not raw:
            return None
        try:
            return fn(raw)
        except ValueError:
            bad.append(name)
            return None

    wl = (worklist or "").strip() or None
    if wl and wl not in WORKLISTS:
        bad.append("worklist")
        wl = None
    n = parse("days", days, int)
    if n is not None and not 0 <= n <= 365:
        bad.append("days")
        n = None
    pid = (patient_id or "").strip()[:64] or None
    c = Criteria(convocation_id=parse("convocation_id", convocation_id, uuid.UUID), patient_id=pid,
                 department=(department or "").strip()[:32] or None,
                 date_from=parse("date_from", date_from, date.fromisoformat),
                 date_to=parse("date_to", date_to, date.fromisoformat), worklist=wl, days=3 if n is None else n)
    return c, bad


def local_day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), ZURICH)


def day_bounds(c: Criteria) -> tuple[datetime | None, datetime | None]:
    """The date range in Geneva time, the end day included."""
    start = local_day_start(c.date_from) if c.date_from else None
    end = local_day_start(c.date_to + timedelta(days=1)) if c.date_to else None
    return start, end
