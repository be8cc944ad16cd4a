"""A day's list from a small clinic as CSV: one appointment per line, each accepted or refused on its own.

The first line names the columns (any order, comma or semicolon separated, UTF-8 or Windows-1252 as
spreadsheets save it): ``appointment_id``, ``patient_id``, ``name`` (or ``given_name`` and ``family_name``),
``birth_date``, ``email``, ``mobile``, ``language``, ``starts_at``, ``department``, and optionally ``place``,
``address``, ``instructions``, ``action`` (``book``, the default, or ``cancel``). Dates as ``2030-03-14`` or
``14.03.2030``; times as ``2030-03-14 09:00`` or ``14.03.2030 09:00``, local time at the hospital unless an
offset is given (ISO 8601).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime

from hospital_gateway.booking import Booking, Problem, language_of
from hospital_gateway.settings import HospitalSystem

REQUIRED = ("appointment_id", "patient_id", "starts_at", "department")
KNOWN = {
    *REQUIRED,
    "name",
    "given_name",
    "family_name",
    "birth_date",
    "email",
    "mobile",
    "language",
    "place",
    "address",
    "instructions",
    "action",
}
SWISS_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2}))?$")
MAX_LINES = 5000


def rows(body: bytes) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of each line after the header; Problem when the file is no such list."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = body.decode("cp1252", errors="replace")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        if missing := [c for c in REQUIRED if c not in header]:
            raise Problem("line 1", "required", f"the header lacks the column(s) {', '.join(missing)}")
        if "name" not in header and not {"given_name", "family_name"} <= set(header):
            raise Problem("line 1", "required", "the header needs name, or given_name and family_name")
        if unknown := [c for c in header if c and c not in KNOWN]:
            raise Problem("line 1", "unknown", f"unknown column(s) {', '.join(unknown[:5])}")
        found: list[tuple[int, dict[str, str]]] = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(found) >= MAX_LINES:
                raise Problem(f"line {reader.line_num}", "invalid", f"at most {MAX_LINES} lines per upload")
            found.append((reader.line_num, {h: v.strip() for h, v in zip(header, values, strict=False) if h}))
        return found
    except csv.Error:
        raise Problem("file", "invalid", "not a CSV file") from None


def _date(value: str, where: str) -> date:
    swiss = SWISS_DATE.match(value)
    try:
        if swiss and swiss[4] is None:
            return date(int(swiss[3]), int(swiss[2]), int(swiss[1]))
        return date.fromisoformat(value)
    except ValueError:
        raise Problem(where, "invalid", "not a date (2030-03-14 or 14.03.2030)") from None


def _time(value: str, where: str, system: HospitalSystem) -> datetime:
    swiss = SWISS_DATE.match(value)
    try:
        if swiss and swiss[4] is not None:
            moment = datetime(int(swiss[3]), int(swiss[2]), int(swiss[1]), int(swiss[4]), int(swiss[5]))
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or len(value) <= 10:  # a date alone has no time
        raise Problem(where, "invalid", "not a date and time (2030-03-14 09:00 or 14.03.2030 09:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=system.zone)


def booking(line: int, row: dict[str, str], system: HospitalSystem) -> Booking:
    def at(column: str) -> str:
        return f"line {line}, column {column}"

    action = (row.get("action") or "book").lower()
    if action not in ("book", "cancel"):
        raise Problem(at("action"), "unknown", "action is book or cancel")
    b = Booking(
        appointment_id=row.get("appointment_id", "")[:120],
        action=action,  # type: ignore[arg-type]
        where={(): f"line {line}", ("convocation_id",): at("appointment_id")},
    )
    if not b.appointment_id:
        raise Problem(at("appointment_id"), "required", "appointment_id is required")
    if action == "cancel":
        return b
    name = row.get("name") or " ".join(p for p in (row.get("given_name"), row.get("family_name")) if p)
    b.patient_id, b.patient_name = row.get("patient_id") or None, name or None
    b.email, b.mobile = row.get("email") or None, row.get("mobile") or None
    b.birth_date = _date(row["birth_date"], at("birth_date")) if row.get("birth_date") else None
    b.starts_at = _time(row["starts_at"], at("starts_at"), system) if row.get("starts_at") else None
    b.department, b.place = row.get("department") or None, row.get("place") or None
    b.address, b.instructions = row.get("address") or None, row.get("instructions") or None
    b.language, warning = language_of(row.get("language"), system, at("language"))
    if warning:
        b.warnings.append(warning)
    b.where.update(
        {
            ("patient", "id"): at("patient_id"),
            ("patient", "name"): at("name"),
            ("patient", "email"): at("email"),
            ("patient", "mobile"): at("mobile"),
            ("patient", "birth_date"): at("birth_date"),
            ("patient", "language"): at("language"),
            ("appointment", "starts_at"): at("starts_at"),
            ("appointment", "department"): at("department"),
            ("appointment", "place", "name"): at("place"),
            ("appointment", "place", "address"): at("address"),
            ("appointment", "instructions"): at("instructions"),
            ("patient",): f"line {line}",
            ("appointment",): f"line {line}",
        }
    )
    return b
