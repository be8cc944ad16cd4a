"""The secretariat's rules as plain functions: which actions fit a convocation's state, search criteria."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from shared import phones, topology
from shared.contracts import Email

ZURICH = ZoneInfo("Europe/Zurich")
ACTIONS = ("post", "email-instead", "resend", "correct-email", "withdraw", "correct-mobile", "reset-binding", "unlock")
# Carried out by the hospital system publishing the convocation again (the issuer keeps no letter).
REISSUE_ACTIONS = frozenset({"resend", "correct-email", "email-instead"})
# Asked again on a confirmation page of their own (the console; the API asks nothing).
CONFIRMED_ACTIONS = frozenset({"withdraw"})
WORKLISTS = ("bounced", "not-downloaded", "locked", "paper-today", "returned", "unanswered")
CLOSED = frozenset({"cancelled", "superseded", "expired", "withdrawn"})
# Reasons for paper that the patient's own e-mail channel stands behind: a switch back to e-mail makes sense.
SWITCHABLE_PAPER = frozenset({"secretariat", "patient-request", "not-downloaded"})
REASON_MIN, REASON_MAX = 5, 500
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)


def action_refusal(
    action: str, c, now: datetime, actions=(), *, reissue_wait: timedelta = timedelta(minutes=30)
) -> str | None:
    """Why ``action`` cannot be done on convocation row ``c`` now (a message key), or None. ``actions``: the
    actions already asked on it; ``reissue_wait``: how long a request to the hospital system blocks another."""
    if action not in ACTIONS:
        return "unknown-action"
    if c["message_id"] is None or c["status"] is None:
        return "not-sealed"
    if c["status"] in CLOSED:
        return "closed"
    on_paper = c["postal_at"] is not None and c["paper_cancelled_at"] is None
    returned = c["returned_at"] is not None
    printed = c["printed_at"] is not None or c["posted_at"] is not None or returned
    waiting = reissue_waiting(actions, now, reissue_wait)
    if action == "post":
        if pending(actions, "post"):
            return "post-pending"
        if c["downloaded_at"] is not None or on_paper:
            return "already-delivered"
    if action == "unlock" and not (c["locked_until"] and c["locked_until"] > now):
        return "not-locked"
    if action == "withdraw" and on_paper:
        return "after-paper"
    if action in REISSUE_ACTIONS:
        # The hospital system would publish a letter whose appointment is over: the issuer refuses those.
        if c["appointment_at"] is None or c["appointment_at"] <= now:
            return "appointment-past"
        if waiting:
            return "reissue-pending"
        if c["delivery"] == "postal" and not returned:
            return "postal-channel"
    if action == "resend" and on_paper and not returned:
        return "after-paper"
    if action == "correct-email" and printed and not returned:
        return "after-paper"
    if action == "email-instead":
        if not on_paper or returned:
            return "not-on-paper"
        if printed:
            return "already-printed"
        if c["postal_reason"] not in SWITCHABLE_PAPER:
            return "no-email-channel"
    return None


def pending(actions, kind: str) -> bool:
    return any(a["kind"] == kind and a["done_at"] is None for a in actions)


def reissue_waiting(actions, now: datetime, wait: timedelta) -> bool:
    """A resend, an e-mail correction or a switch back to e-mail was asked less than ``wait`` ago and its new
    letter has not come yet: another one would only ask the hospital system twice. Past ``wait`` it no
    longer blocks the letter (the hospital system did not answer: post it, or ask again)."""
    return any(
        a["kind"] in REISSUE_ACTIONS and a["done_at"] is None and now - a["requested_at"] < wait for a in actions
    )


def reissue_unanswered(actions, now: datetime, wait: timedelta):
    """The oldest request to the hospital system still unanswered after ``wait``, or None."""
    late = [
        a for a in actions if a["kind"] in REISSUE_ACTIONS and a["done_at"] is None and now - a["requested_at"] >= wait
    ]
    return min(late, key=lambda a: a["requested_at"]) if late else None


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


def parse_mobile(raw: str, allowed_countries: frozenset[str]) -> tuple[str | None, str | None]:
    """(E.164, None) for a mobile of an allowed country typed in any usual form (national numbers read as
    Swiss), else (None, why): 'mobile-invalid', 'mobile-not-mobile' (premium-rate, landline…) or
    'mobile-country'."""
    number = phones.e164(raw)
    if number is None:
        return None, "mobile-invalid"
    problem = phones.mobile_problem(number, allowed_countries)
    return (None, f"mobile-{problem}") if problem else (number, None)


def name_words(name: str) -> list[str]:
    """The words of a name as typed or as the hospital wrote it, without accents or case: 'Müller-Lüdi,
    Zoë' -> ['muller', 'ludi', 'zoe']. The same words hash the same (search by name)."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))
    return sorted(set(re.findall(r"[^\W_]+", plain.casefold())))


@dataclass(frozen=True)
class Criteria:
    convocation_id: uuid.UUID | None = None
    patient_id: str | None = None
    department: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    worklist: str | None = None
    days: int = 3
    name: str | None = None  # searched by the words of the name (whole words, any order, accents and case aside)
    birth_date: date | None = None

    def empty(self) -> bool:
        return not (
            self.convocation_id
            or self.patient_id
            or self.department
            or self.date_from
            or self.date_to
            or self.worklist
            or self.name
            or self.birth_date
        )

    @property
    def about_patient(self) -> bool:
        """Searched by who the patient is: only within the searcher's own departments."""
        return bool(self.patient_id or self.name or self.birth_date)

    def summary(self) -> str:
        """For the audit: what was searched, never the patient's id, name or birth date themselves."""
        parts = [
            f"{k}={v}"
            for k, v in (
                ("id", self.convocation_id),
                ("department", self.department),
                ("from", self.date_from),
                ("to", self.date_to),
                ("worklist", self.worklist),
            )
            if v
        ]
        parts += [
            label
            for label, given in (
                ("patient-id", self.patient_id),
                ("patient-name", self.name),
                ("birth-date", self.birth_date),
            )
            if given
        ]
        if self.worklist == "not-downloaded":
            parts.append(f"days={self.days}")
        return " ".join(parts)[:300]


def field_parser(bad: list[str]):
    """``parse(name, raw, fn)``: ``fn`` of the text stripped, None for no text, and None with ``name`` added to
    ``bad`` when ``fn`` raises ValueError (a form field that does not parse)."""

    def parse(name: str, raw: str | None, fn):
        raw = (raw or "").strip()
        if not raw:
            return None
        try:
            return fn(raw)
        except ValueError:
            bad.append(name)
            return None

    return parse


def criteria(
    *,
    convocation_id: str = "",
    patient_id: str = "",
    department: str = "",
    date_from: str = "",
    date_to: str = "",
    worklist: str = "",
    days: str = "",
    name: str = "",
    birth_date: str = "",
) -> tuple[Criteria, list[str]]:
    """Criteria from form or query text, and the names of the fields that do not parse."""
    bad: list[str] = []
    parse = field_parser(bad)
    wl = (worklist or "").strip() or None
    if wl and wl not in WORKLISTS:
        bad.append("worklist")
        wl = None
    n = parse("days", days, int)
    if n is not None and not 0 <= n <= 365:
        bad.append("days")
        n = None
    pid = (patient_id or "").strip()[:64] or None
    typed_name = " ".join((name or "").split())[:200] or None
    if typed_name and not name_words(typed_name):
        bad.append("name")
        typed_name = None
    c = Criteria(
        convocation_id=parse("convocation_id", convocation_id, uuid.UUID),
        patient_id=pid,
        department=(department or "").strip()[:32] or None,
        date_from=parse("date_from", date_from, date.fromisoformat),
        date_to=parse("date_to", date_to, date.fromisoformat),
        worklist=wl,
        days=3 if n is None else n,
        name=typed_name,
        birth_date=parse("birth_date", birth_date, parse_day),
    )
    return c, bad


def parse_day(raw: str) -> date:
    """A date as the form's date field sends it (2026-03-21) or as typed at a counter (21.03.2026, 21/3/2026)."""
    raw = raw.strip()
    if match := re.fullmatch(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4})", raw):
        day, month, year = (int(g) for g in match.groups())
        return date(year, month, day)
    return date.fromisoformat(raw)


def local_day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), ZURICH)


def day_bounds(c: Criteria) -> tuple[datetime | None, datetime | None]:
    """The date range in Geneva time, the end day included."""
    start = local_day_start(c.date_from) if c.date_from else None
    end = local_day_start(c.date_to + timedelta(days=1)) if c.date_to else None
    return start, end


@dataclass(frozen=True)
class Period:
    """The department figures' period (Geneva days, both included) and the N of "downloaded within N days"."""

    start: date
    end: date
    days: int = 3

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        return local_day_start(self.start), local_day_start(self.end + timedelta(days=1))


def period(*, date_from: str = "", date_to: str = "", days: str = "", today: date) -> tuple[Period, list[str]]:
    """The period typed (the last 30 days when nothing is), and the names of the fields that do not parse."""
    bad: list[str] = []

    def day(name: str, raw: str, default: date) -> date:
        try:
            return parse_day(raw) if raw.strip() else default
        except ValueError:
            bad.append(name)
            return default

    end = day("date_to", date_to or "", today)
    start = day("date_from", date_from or "", end - timedelta(days=29))
    if start > end:
        bad.append("date_from")
        start = end
    n = 3
    if (days or "").strip():
        try:
            n = int(days)
        except ValueError:
            n = -1
        if not 0 <= n <= 365:
            bad.append("days")
            n = 3
    return Period(start, end, n), bad


# The services that erase a patient's rows and confirm it, the secretariat's own erasure included; the hospital
# gateway confirms too, for the letters it made, once the hospital got their 'erased' status.
ERASING_SERVICES = ("issuer", *topology.BUS["patient.erased.v1"][1])


def erasure_waiting_for(confirmations) -> list[str]:
    """The services that hold letters' data and have not confirmed an erasure yet."""
    done = {c["service"] for c in confirmations}
    return [s for s in ERASING_SERVICES if s not in done]
