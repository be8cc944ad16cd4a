"""Render a convocation letter as PDF when the upstream system sent none.

Pure function of its inputs: the same convocation, hospital name and ``now`` give the same bytes
(fpdf2's /ID is a hash of the content and the creation date, which comes from ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from fpdf import FPDF, XPos, YPos
from fpdf.enums import Align, MethodReturnValue

from shared.contracts import ConvocationCreatedV1, Language
from shared.i18n import LANGUAGES, N_, Catalogs

from .fonts import find_fonts

# Appointments are given in the hospital's wall-clock time, whatever offset upstream used.
HOSPITAL_ZONE = ZoneInfo("Europe/Zurich")

FONT_FAMILY = "DejaVu"
MARGIN_MM = 20.0
LINE_MM = 6.0
LABEL_WIDTH_MM = 42.0


@dataclass(frozen=True, slots=True)
class LetterTexts:
    """The letter's fixed wording in one language, and how dates are written in it."""

    locale: str
    # Custom pattern: CLDR's fr_CH "full" time reads "09.30:00 h", which patients would misread.
    datetime_pattern: str
    title: str
    intro: str
    patient: str
    when: str
    place: str
    department: str
    instructions: str
    contact: str
    change_or_cancel: str
    phone: str
    email: str
    closing: str
    page: str


# The CLDR locale each language's dates are written in.
LOCALES: dict[str, str] = {"fr": "fr_CH", "de": "de_CH", "it": "it_CH", "en": "en_GB"}
# The letter's wording as English msgids, translated in ``locale/`` (see shared/i18n.py). The date
# pattern is translated too. French wants a no-break space before ":" (in its catalog).
MSGIDS: dict[str, str] = {
    "datetime_pattern": N_("EEEE d MMMM y 'at' HH:mm"),
    "title": N_("Convocation"),
    "intro": N_("Please attend the following appointment:"),
    "patient": N_("Patient"),
    "when": N_("Date and time"),
    "place": N_("Location"),
    "department": N_("Department"),
    "instructions": N_("Instructions"),
    "contact": N_("Secretariat"),
    "change_or_cancel": N_("To change or cancel this appointment, please contact the secretariat:"),
    "phone": N_("Telephone"),
    "email": N_("Email"),
    "closing": N_("Kind regards"),
    "page": N_("Page"),
}
CATALOGS = Catalogs(Path(__file__).resolve().parent.parent / "locale")
TEXTS: dict[str, LetterTexts] = {
    language: LetterTexts(locale=LOCALES[language],
                          **{field: CATALOGS.gettext(language, msgid) for field, msgid in MSGIDS.items()})
    for language in LANGUAGES
}
DEFAULT_LANGUAGE: Language = "fr"


def format_appointment(starts_at: datetime, language: Language) -> str:
    """The appointment's date and time in Zurich wall-clock time, worded for ``language``."""
    texts = TEXTS.get(language, TEXTS[DEFAULT_LANGUAGE])
    return format_datetime(starts_at, texts.datetime_pattern, tzinfo=HOSPITAL_ZONE, locale=texts.locale)


class _LetterPDF(FPDF):
    """A4 portrait with a page counter in the footer, for letters whose instructions overflow."""

    def __init__(self, page_label: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._page_label = page_label

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(FONT_FAMILY, size=8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, f"{self._page_label} {self.page_no()}/{{nb}}", align=Align.C)
        self.set_text_color(0, 0, 0)


def render_convocation_pdf(
    convocation: ConvocationCreatedV1,
    *,
    hospital_name: str,
    now: datetime | None = None,
    font_dir: Path | None = None,
) -> bytes:
    """Render the convocation letter in the patient's language and return the PDF bytes.

    ``now`` dates the letter and sets the PDF creation date; pass it for reproducible output.
    ``font_dir`` overrides where DejaVu Sans is looked up (see :mod:`.fonts`).
    Raises :class:`~.fonts.FontNotFoundError` when the font is missing, ``ValueError`` when
    ``now`` is naive.
    """
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    language = convocation.patient.language
    texts = TEXTS.get(language, TEXTS[DEFAULT_LANGUAGE])
    appointment = convocation.appointment
    fonts = find_fonts(font_dir)

    pdf = _LetterPDF(texts.page)
    pdf.add_font(FONT_FAMILY, fname=str(fonts.regular))
    pdf.add_font(FONT_FAMILY, style="B", fname=str(fonts.bold))
    pdf.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
    pdf.set_auto_page_break(auto=True, margin=25)
    pdf.set_creation_date(now)
    # Metadata stays generic: file managers and mail previews show it without opening the letter.
    pdf.set_title(texts.title)
    pdf.set_author(hospital_name)
    pdf.set_creator("Convocations issuer")
    pdf.set_lang(texts.locale.replace("_", "-"))
    pdf.add_page()

    # Letterhead: the hospital's name over a rule, the letter's date on the right.
    _paragraph(pdf, hospital_name, size=14, bold=True, line=7)
    rule_y = pdf.get_y() + 1
    pdf.set_draw_color(120, 120, 120)
    pdf.line(pdf.l_margin, rule_y, pdf.w - pdf.r_margin, rule_y)
    pdf.set_y(rule_y + 4)
    pdf.set_font(FONT_FAMILY, size=10)
    letter_date = format_date(now.astimezone(HOSPITAL_ZONE), "long", locale=texts.locale)
    pdf.cell(0, 5, letter_date, align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)

    _paragraph(pdf, texts.title, size=20, bold=True, line=10)
    pdf.ln(4)
    _paragraph(pdf, texts.intro)
    pdf.ln(3)
    _field(pdf, texts.patient, convocation.patient.name)
    _field(pdf, texts.when, format_appointment(appointment.starts_at, language))
    _field(pdf, texts.place, f"{appointment.place.name}\n{appointment.place.address}")
    _field(pdf, texts.department, appointment.department.name)

    instructions = (appointment.instructions or "").replace("\r\n", "\n").strip()
    if instructions:
        _heading(pdf, texts.instructions)
        _paragraph(pdf, instructions)

    department = appointment.department
    _heading(pdf, texts.contact)
    _paragraph(pdf, texts.change_or_cancel)
    pdf.ln(1)
    _field(pdf, texts.phone, department.secretariat_phone)
    if department.secretariat_email:
        _field(pdf, texts.email, str(department.secretariat_email))

    pdf.ln(6)
    _paragraph(pdf, f"{texts.closing}\n{hospital_name}")
    return bytes(pdf.output())


def _paragraph(pdf: FPDF, text: str, *, size: float = 11, bold: bool = False, line: float = LINE_MM) -> None:
    """Full-width text, wrapped and ragged-right (justified lines stretch word gaps unreadably)."""
    pdf.set_font(FONT_FAMILY, style="B" if bold else "", size=size)
    pdf.multi_cell(0, line, text, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(4)
    # Keep a heading with at least two lines of what follows it.
    if pdf.will_page_break(7 + 2 * LINE_MM):
        pdf.add_page()
    _paragraph(pdf, text, size=12, bold=True, line=7)


def _field(pdf: FPDF, label: str, value: str) -> None:
    """One "label | value" row; either side may wrap, and the row never splits across pages."""
    value_width = pdf.epw - LABEL_WIDTH_MM
    pdf.set_font(FONT_FAMILY, style="B", size=10)
    label_lines = pdf.multi_cell(LABEL_WIDTH_MM, LINE_MM, label, dry_run=True, output=MethodReturnValue.LINES)
    pdf.set_font(FONT_FAMILY, size=11)
    value_lines = pdf.multi_cell(value_width, LINE_MM, value, dry_run=True, output=MethodReturnValue.LINES)
    height = max(len(label_lines), len(value_lines), 1) * LINE_MM
    if pdf.will_page_break(height):
        pdf.add_page()

    top = pdf.get_y()
    pdf.set_font(FONT_FAMILY, style="B", size=10)
    pdf.multi_cell(LABEL_WIDTH_MM, LINE_MM, label, align=Align.L, new_x=XPos.RIGHT, new_y=YPos.TOP)
    pdf.set_font(FONT_FAMILY, size=11)
    pdf.multi_cell(value_width, LINE_MM, value, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_xy(pdf.l_margin, top + height + 1)
