"""HL7 v2 scheduling messages in, acknowledgements out; and the messages we send back (ORU^R01).

Parsing and the ACK's header come from python-hl7; the character set (MSH-18), escape sequences and what an
SIU message means for a letter are ours. No I/O here: ``mllp.py`` moves the bytes, ``intake.py`` stores.

- SIU^S12 (new appointment), S13 (rescheduled), S14 (modified): a letter (S13 and S14 supersede the earlier
  one); S15 (cancelled): the letter is revoked; any other SIU event: acknowledged, ignored.
- AA: accepted (or a repeated MSH-10, accepted before). AE: the content is wrong; ERR names the segment and
  field (HL7 table 0357 code). AR: the message as a whole is refused (not HL7, unsupported type, version,
  processing id or character set) or could not be stored now: send it again later, same MSH-10.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import hl7

from hospital_gateway.booking import Booking, Problem, language_of, require
from hospital_gateway.settings import HospitalSystem

VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"})
EVENTS = {"S12": "book", "S13": "book", "S14": "book", "S15": "cancel"}
# MSH-18 (HL7 table 0211) -> Python codec. Empty: the system's default_charset.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
}
# HL7 table 0357, message error condition codes.
ERROR_CODES = {
    "segment": ("100", "Segment sequence error"),
    "required": ("101", "Required field missing"),
    "invalid": ("102", "Data type error"),
    "unknown": ("103", "Table value not found"),
    "past": ("102", "Data type error"),
    "message-type": ("200", "Unsupported message type"),
    "event": ("201", "Unsupported event code"),
    "processing-id": ("202", "Unsupported processing id"),
    "version": ("203", "Unsupported version id"),
    "no-such-key": ("204", "Unknown key identifier"),
    "internal": ("207", "Application internal error"),
    "not-supported": ("103", "Table value not found"),
}
AHV = re.compile(r"^756\.?\d{4}\.?\d{4}\.?\d{2}$")  # the Swiss social security number: never kept
DTM = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(?:(\d{2})(?:\.\d{1,4})?)?)?([+-]\d{4})?$")
SENDER = "CONVOCATIONS"  # MSH-3 of what we send


class Refused(Exception):
    """The message as a whole is refused (AR): ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Incoming:
    """A decoded, parsed HL7 message and its separators."""

    message: hl7.Message
    charset: str  # the MSH-18 value as sent ('' when absent)
    codec: str
    decoded: str = field(repr=False, default="")

    @property
    def control_id(self) -> str:
        return self.raw("MSH", 10)

    @property
    def version(self) -> str:
        return self.components(self.raw("MSH", 12))[0]

    def segments(self, name: str) -> list:
        return [s for s in self.message if str(s[0]) == name]

    def raw(self, segment: str, n: int) -> str:
        """Field ``n`` of the first ``segment`` as written ('' when absent); MSH counts as HL7 does."""
        found = self.segments(segment)
        return field_of(found[0], n) if found else ""

    def repetitions(self, value: str) -> list[str]:
        return value.split(self.message.separators[2]) if value else []

    def components(self, value: str) -> list[str]:
        return value.split(self.message.separators[3]) + [""] * 12

    def subcomponents(self, value: str) -> list[str]:
        return value.split(self.message.separators[4])

    def text(self, value: str) -> str:
        """A value with its escape sequences resolved (HL7 v2 chapter 2.7): delimiters, hexadecimal data in the
        message's character set, line breaks; formatting and unknown sequences dropped."""
        esc = self.message.esc
        if esc not in value:
            return value
        seps = self.message.separators
        plain = {"F": seps[1], "S": seps[3], "R": seps[2], "T": seps[4], "E": esc, ".br": "\n", ".sp": "\n"}
        out, i = [], 0
        while i < len(value):
            if value[i] != esc:
                out.append(value[i])
                i += 1
                continue
            end = value.find(esc, i + 1)
            if end < 0:  # a lone escape character: kept as written
                out.append(value[i:])
                break
            seq = value[i + 1 : end]
            if seq in plain:
                out.append(plain[seq])
            elif seq[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", seq[1:]):
                out.append(bytes.fromhex(seq[1:]).decode(self.codec, errors="replace"))
            i = end + 1
        return "".join(out)

    def escape(self, value: str) -> str:
        return escape(value, self.message.separators, self.message.esc)


def field_of(segment, n: int) -> str:
    return str(segment[n]) if n < len(segment) else ""


def escape(value: str, separators: str = "\r|~^&", esc: str = "\\") -> str:
    """Delimiters escaped for a field of ours, line breaks as \\.br\\; other characters are sent as they are
    (in MSH-18's character set: python-hl7's escape() would write every non-ASCII one as Latin-1 hex)."""
    value = value.replace(esc, f"{esc}E{esc}")
    for char, name in ((separators[1], "F"), (separators[3], "S"), (separators[2], "R"), (separators[4], "T")):
        value = value.replace(char, f"{esc}{name}{esc}")
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{esc}.br{esc}")


def decode(data: bytes, system: HospitalSystem) -> Incoming:
    """Bytes as received (MLLP framing removed) -> the parsed message, in the character set MSH-18 names."""
    if not data.startswith(b"MSH") or len(data) < 8:
        raise Refused(Problem("MSH", "segment", "not an HL7 v2 message: it must start with the MSH segment"))
    header = data.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = header.split(data[3:4])
    charset = fields[17].decode("ascii", errors="replace").strip() if len(fields) > 17 else ""
    charset = charset.split(data[4:5].decode("ascii", "replace"))[0] if charset else ""  # first repetition
    codec = CHARSETS.get(charset.upper() or system.default_charset.upper())
    if codec is None:
        raise Refused(Problem("MSH-18", "unknown", "character set not supported; use UNICODE UTF-8 or 8859/1"))
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        raise Refused(
            Problem("MSH-18", "invalid", f"the message is not valid {charset or system.default_charset}")
        ) from None
    text = text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")
    try:
        message = hl7.parse(text)
    except Exception:  # python-hl7 raises several types on malformed input; all mean "not HL7 v2"
        raise Refused(Problem("MSH", "segment", "not a parsable HL7 v2 message")) from None
    return Incoming(message, charset, codec, text)


def check_header(m: Incoming, system: HospitalSystem) -> str | None:
    """The action of a message we handle (``book``, ``cancel``), None for an SIU event we ignore; raises
    Refused for a message we do not take at all."""
    if not m.control_id:
        raise Refused(Problem("MSH-10", "required", "the message control id is required"))
    if m.version not in VERSIONS:
        raise Refused(Problem("MSH-12", "version", "version not supported; send 2.3 to 2.8 (2.5.1 preferred)"))
    processing = m.components(m.raw("MSH", 11))[0]
    if processing != "P" and not (system.sandbox and processing in ("T", "D")):
        raise Refused(Problem("MSH-11", "processing-id", "processing id not accepted here: P, or T on the sandbox"))
    kind, event = m.components(m.raw("MSH", 9))[:2]
    if kind != "SIU":
        raise Refused(Problem("MSH-9", "message-type", "message type not supported; send SIU^S12, S13, S14 or S15"))
    return EVENTS.get(event)


def dtm(value: str, where: str, zone, *, time_required: bool) -> datetime:
    """An HL7 DTM; without an offset it is local time at the hospital (``zone``)."""
    match = DTM.match(value)
    if not match or (time_required and match[4] is None):
        raise Problem(
            where,
            "invalid",
            "not an HL7 date and time (YYYYMMDDHHMM[SS][+ZZZZ])" if time_required else "not an HL7 date (YYYYMMDD)",
        )
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        tz = (
            zone
            if offset is None
            else timezone((1 if offset[0] == "+" else -1) * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        )
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz)
    except ValueError:
        raise Problem(where, "invalid", "not a valid calendar date") from None


def booking(m: Incoming, system: HospitalSystem, action: str) -> Booking:
    """The appointment an SIU message books or cancels."""
    if not m.segments("SCH"):
        raise Problem("SCH", "segment", "the SCH segment is required")
    placer, filler = (m.components(m.raw("SCH", n))[0] for n in (1, 2))
    appointment_id = m.text(require(placer or filler, "SCH-1", "the placer (SCH-1) or filler (SCH-2) appointment id"))
    b = Booking(
        appointment_id=appointment_id[:120],
        action="cancel" if action == "cancel" else "book",
        where={("convocation_id",): "SCH-1", (): "message"},
    )
    if action == "cancel":
        reason = m.components(m.raw("SCH", 6))
        b.reason, b.where[("reason",)] = m.text(reason[1] or reason[0]) or None, "SCH-6"
        return b
    if not m.segments("PID"):
        raise Problem("PID", "segment", "the PID segment is required")
    _patient(m, system, b)
    _appointment(m, system, b)
    _document(m, b)
    return b


def _patient(m: Incoming, system: HospitalSystem, b: Booking) -> None:
    ids = [m.components(r) for r in m.repetitions(m.raw("PID", 3))]
    usable = [c for c in ids if c[0] and c[4].upper() not in ("SS", "AHV") and not AHV.match(m.text(c[0]))]
    chosen = next((c for c in usable if c[4].upper() == "MR"), usable[0] if usable else None)
    b.patient_id = m.text(chosen[0]) if chosen else None
    names = [m.components(r) for r in m.repetitions(m.raw("PID", 5))]
    name = next((n for n in names if n[6].upper() == "L"), names[0] if names else None)
    if name:
        family = m.text(m.subcomponents(name[0])[0])
        b.patient_name = (
            " ".join(p for p in (m.text(name[4]), m.text(name[1]), m.text(name[2]), family, m.text(name[3])) if p)
            or None
        )
    b.where.update(
        {
            ("patient", "id"): "PID-3",
            ("patient", "name"): "PID-5",
            ("patient", "birth_date"): "PID-7",
            ("patient", "language"): "PID-15",
            ("patient",): "PID",
        }
    )
    born = m.raw("PID", 7)
    b.birth_date = date.fromordinal(dtm(born, "PID-7", system.zone, time_required=False).toordinal()) if born else None
    for n in (13, 14):
        for rep in m.repetitions(m.raw("PID", n)):
            c = m.components(rep)
            use, kind = c[1].upper(), c[2].upper()
            if (use == "NET" or kind in ("INTERNET", "X.400")) and not b.email:
                b.email, b.where[("patient", "email")] = m.text(c[3] or c[0]), f"PID-{n}"
            elif kind == "CP" and not b.mobile:
                number = c[11] or (f"+{c[4]}{c[5]}{c[6]}" if c[4] and c[6] else c[5] + c[6]) or c[0]
                b.mobile, b.where[("patient", "mobile")] = m.text(number), f"PID-{n}"
    b.language, warning = language_of(m.text(m.components(m.raw("PID", 15))[0]), system, "PID-15")
    if warning:
        b.warnings.append(warning)


def _appointment(m: Incoming, system: HospitalSystem, b: Booking) -> None:
    starts = [(f"{seg}-{n}", m.components(m.raw(seg, n))[0]) for seg, n in (("AIS", 4), ("AIL", 6), ("AIP", 6))]
    starts += [("TQ1-7", m.components(m.raw("TQ1", 7))[0]), ("SCH-11", m.components(m.raw("SCH", 11))[3])]
    where, value = next(((w, v) for w, v in starts if v), ("AIS-4", ""))
    b.where[("appointment", "starts_at")] = where
    b.starts_at = dtm(m.components(value)[0], where, system.zone, time_required=True) if value else None
    location = m.components(m.raw("AIL", 3))
    department, b.where[("appointment", "department")] = (
        (location[0], "AIL-3") if location[0] else (m.components(m.raw("PV1", 3))[0], "PV1-3")
    )
    b.department = m.text(department) or None
    b.place = m.text(location[8]) or None
    b.where[("appointment", "place")] = "AIL-3"
    # The notes of the appointment itself: the NTE segments between SCH and the first PID.
    notes, after_sch = [], False
    for seg in m.message:
        name = str(seg[0])
        if name == "SCH":
            after_sch = True
        elif name == "NTE" and after_sch:
            notes += [m.text(r) for r in m.repetitions(field_of(seg, 3))]
        elif name in ("PID", "RGS"):
            break
    b.instructions = "\n".join(n for n in notes if n) or None
    b.where[("appointment", "instructions")] = "NTE-3"
    b.where[("appointment",)] = "SCH"


def _document(m: Incoming, b: Booking) -> None:
    """The letter as an OBX of type ED: ``^AP^PDF^Base64^<data>``; without one the issuer renders it."""
    for i, seg in enumerate(m.segments("OBX"), start=1):
        if field_of(seg, 2) != "ED":
            continue
        where = f"OBX-5 (OBX {i})"
        b.where[("document_pdf_base64",)] = where
        ed = m.components(field_of(seg, 5))
        if ed[2].upper() != "PDF" or ed[3].upper() != "BASE64":
            raise Problem(where, "not-supported", "only a PDF in base64 is accepted: ^AP^PDF^Base64^<data>")
        data = "".join(m.text(ed[4]).split())
        try:
            head = base64.b64decode(data[:8], validate=True)
        except (binascii.Error, ValueError):
            raise Problem(where, "invalid", "the document is not valid base64") from None
        if not head.startswith(b"%PDF-"):
            raise Problem(where, "invalid", "the document is not a PDF (no %PDF- header)")
        b.pdf_base64 = data
        return


# --- acknowledgements -------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S+0000")


def ack(m: Incoming, code: str, problems: list[Problem] = (), text: str = "") -> bytes:  # type: ignore[assignment]
    """ACK in original mode: MSA-1 ``code``, MSA-3 a short text, one ERR per problem (error or warning), in
    the message's character set and version."""
    reply = m.message.create_ack(code, message_id=uuid.uuid4().hex[:20].upper(), application=SENDER)
    msh = reply.segment("MSH")
    msh.assign_field(_now(), 7)  # with its offset (python-hl7 writes UTC without one)
    if m.charset:
        msh.assign_field(m.charset, 18)
    msa = reply.segment("MSA")
    msa.assign_field(m.escape(text or (problems[0].text if problems else "")), 3)
    lines = [str(seg) for seg in reply]
    for problem in problems:
        lines.append(_err(m, problem, "E" if code != "AA" else "W"))
    return ("\r".join(lines) + "\r").encode(m.codec, errors="replace")


def _err(m: Incoming, problem: Problem, severity: str) -> str:
    code, name = ERROR_CODES.get(problem.code, ERROR_CODES["internal"])
    seg, _, rest = problem.where.partition("-")
    fieldno = re.match(r"\d+", rest)
    location = f"{seg}^1^{fieldno.group() if fieldno else ''}" if seg.isalnum() and len(seg) == 3 else ""
    text = m.escape(f"{problem.where}: {problem.text}")
    if m.version in ("2.3", "2.3.1", "2.4"):  # ERR-1, error code and location (ELD)
        return f"ERR|{location}^{code}&{name}&HL70357"
    return f"ERR||{location}|{code}^{name}^HL70357|{severity}||||{text}"


def bare_ack(code: str, problem: Problem) -> bytes:
    """An AR for bytes that are no HL7 message we could read (no MSH, unknown character set)."""
    text = problem.text.replace("|", " ").replace("^", " ")
    code_no, name = ERROR_CODES.get(problem.code, ERROR_CODES["internal"])
    return (
        f"MSH|^~\\&|{SENDER}||||{_now()}||ACK|{uuid.uuid4().hex[:20].upper()}|P|2.5.1\r"
        f"MSA|{code}||{text}\rERR||{problem.where.split('-')[0]}^1|{code_no}^{name}^HL70357|E||||"
        f"{problem.where}: {text}\r"
    ).encode("ascii", errors="replace")


# --- what we send back -------------------------------------------------------------------------------


def notification(
    *,
    system: HospitalSystem,
    appointment_id: str,
    kind: str,
    code: str,
    display: str,
    at: datetime,
    detail: str | None,
    control_id: str,
    sandbox: bool,
) -> bytes:
    """ORU^R01 about one appointment: OBR-2 carries the hospital's appointment id (the placer's, as it sent
    it), OBR-4 what this is (``CONVOC-STATUS`` a delivery status, ``CONVOC-REQUEST`` a request to send the
    letter again), OBX-5 the coded status or request, OBX-14 when. MSH-11 is T for a sandbox test."""
    when = at.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S+0000")
    service = (
        "CONVOC-STATUS^Convocation delivery status^L"
        if kind == "status"
        else "CONVOC-REQUEST^Request about a convocation^L"
    )
    lines = [
        f"MSH|^~\\&|{SENDER}||{escape(system.id.upper())}||{_now()}||ORU^R01^ORU_R01|{control_id}|"
        f"{'T' if sandbox else 'P'}|2.5.1|||AL|NE||UNICODE UTF-8",
        f"OBR|1|{escape(appointment_id)}||{service}|||{when}|||||||||||||||{when}|||F",
        f"OBX|1|CWE|{'STATUS^Convocation status^L' if kind == 'status' else 'REQUEST^Request^L'}||"
        f"{escape(code)}^{escape(display)}^L||||||F|||{when}",
    ]
    if detail:
        lines.append(f"NTE|1||{escape(detail)}")
    return ("\r".join(lines) + "\r").encode("utf-8")


def ack_code(data: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-3 of an acknowledgement we received ('' when it has none)."""
    for line in data.decode("utf-8", errors="replace").replace("\n", "\r").split("\r"):
        if line.startswith("MSA"):
            parts = line.split(line[3:4] or "|")
            return (parts[1] if len(parts) > 1 else ""), (parts[3] if len(parts) > 3 else "")
    return "", ""
