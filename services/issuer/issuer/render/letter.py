"""Render a convocation letter as a tagged PDF (PDF/UA-1) when the upstream system sent none.

The letter is HTML (``letter.html``, Jinja2, its wording from the issuer's gettext catalogs) laid out by
WeasyPrint, which writes the structure tree a screen reader follows (headings, paragraphs, a table with row
headers, links, the logo as a figure with its alternative text), the document's language (``/Lang``),
``/MarkInfo``, the title shown instead of the file name (``/DisplayDocTitle``) and the PDF/UA claim in its
XMP metadata. Dates are written by shared/i18n.py, as everywhere else the patient reads them.

Pure function of its inputs: the same convocation, hospital name and ``now`` give the same bytes.
WeasyPrint (and its pango) is imported at the first letter, not when the issuer starts: most letters
come with the hospital's own PDF.
"""

from __future__ import annotations

import base64
import functools
import mimetypes
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.contracts import ConvocationCreatedV1
from shared.i18n import Catalogs, format_appointment, format_long_date, locale_of, normalize_language, tel_link

from .fonts import find_fonts

HERE = Path(__file__).resolve().parent
CATALOGS = Catalogs(HERE.parent / "locale")
# PDF/UA-1: PDF 1.7 with tags and the pdfuaid claim (WeasyPrint does not check conformance: the tests do).
PDF_VARIANT = "pdf/ua-1"


def _css_string(text: str) -> str:
    """A text safe inside a CSS double-quoted string (the page counter's word)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


@functools.lru_cache(maxsize=8)
def _environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    env.filters["tel"] = tel_link
    env.filters["css_string"] = _css_string
    return CATALOGS.install(env, language)


@functools.lru_cache(maxsize=4)
def _data_uri(path: Path) -> str:
    """The logo inlined (read once): the renderer opens no file or URL the letter names."""
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{media};base64,{base64.b64encode(path.read_bytes()).decode()}"


def letter_html(
    convocation: ConvocationCreatedV1,
    *,
    hospital_name: str,
    now: datetime,
    font_dir: Path | None = None,
    logo: Path | None = None,
) -> str:
    """The letter as the HTML WeasyPrint lays out (for the PDF, and to look at in a browser)."""
    language = normalize_language(convocation.patient.language)
    appointment, department = convocation.appointment, convocation.appointment.department
    fonts = find_fonts(font_dir)
    return (
        _environment(language)
        .get_template("letter.html")
        .render(
            lang=locale_of(language).replace("_", "-"),
            hospital=hospital_name,
            created=now.isoformat(),
            fonts={"regular": fonts.regular.as_uri(), "bold": fonts.bold.as_uri()},
            logo=_data_uri(Path(logo)) if logo else None,
            letter_date=format_long_date(now, language),
            patient=convocation.patient.name,
            when=format_appointment(appointment.starts_at, language),
            place=appointment.place.name,
            address=appointment.place.address,
            department=department.name,
            instructions=(appointment.instructions or "").replace("\r\n", "\n").strip(),
            phone=department.secretariat_phone,
            email=str(department.secretariat_email) if department.secretariat_email else None,
        )
    )


def render_convocation_pdf(
    convocation: ConvocationCreatedV1,
    *,
    hospital_name: str,
    now: datetime | None = None,
    font_dir: Path | None = None,
    logo: Path | None = None,
) -> bytes:
    """Render the convocation letter in the patient's language and return the PDF bytes.

    ``now`` dates the letter and sets the PDF creation date; pass it for reproducible output.
    ``font_dir`` overrides where DejaVu Sans is looked up (see :mod:`.fonts`); ``logo`` is an image file
    (PNG, JPEG or SVG) shown above the hospital's name, with the name as its alternative text.
    Raises :class:`~.fonts.FontNotFoundError` when the font is missing, ``ValueError`` when
    ``now`` is naive.
    """
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    html = letter_html(convocation, hospital_name=hospital_name, now=now, font_dir=font_dir, logo=logo)
    import weasyprint  # lazily: pango and the layout engine cost memory only once a letter is rendered

    return weasyprint.HTML(string=html, base_url=str(HERE)).write_pdf(
        pdf_variant=PDF_VARIANT, font_config=_font_config()
    )


@functools.lru_cache(maxsize=1)
def _font_config():
    """One font configuration for every letter: a new one per letter (WeasyPrint's default) loads the fonts
    again and kept growing the issuer's memory, about 0.6 MB a letter (``make bench-letter``). The issuer
    renders on its event loop's thread only."""
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()
