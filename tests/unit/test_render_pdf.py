"""The issuer's own convocation letter: what a patient reads in the PDF, in each language, and what a screen
reader reads (issue 20, item 14: tagged PDF/UA-1, checked with pypdf; veraPDF is not in the package registries
this project installs from, so its PDF/UA profile is not run)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from issuer.render import FontNotFoundError, render_convocation_pdf
from shared.contracts import ConvocationCreatedV1

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="needs pdftotext (poppler-utils)")

HOSPITAL = "Hôpitaux Universitaires de Genève"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
WINTER_0830_UTC = "2026-12-03T08:30:00Z"  # CET, UTC+1: 09:30 in Geneva
PLACE = "Bâtiment Opéra, 2e étage, salle 12"
ADDRESS = "Rue Gabrielle-Perret-Gentil 4, 1205 Genève"
DEPARTMENT = "Service de cardiologie"
PHONE = "+41 22 372 33 11"


def make_convocation(
    *,
    language: str = "fr",
    starts_at: str = WINTER_0830_UTC,
    name: str = "Marie Dupont",
    instructions: str | None = None,
    secretariat_email: str | None = "cardiologie@hug.example",
) -> ConvocationCreatedV1:
    data: dict[str, Any] = {
        "convocation_id": str(uuid.uuid4()),
        "patient": {"id": f"P-{uuid.uuid4().hex[:8]}", "name": name, "language": language},
        "appointment": {
            "starts_at": starts_at,
            "place": {"name": PLACE, "address": ADDRESS},
            "department": {
                "name": DEPARTMENT,
                "secretariat_phone": PHONE,
                "secretariat_email": secretariat_email,
            },
            "instructions": instructions,
        },
    }
    return ConvocationCreatedV1.model_validate(data)


def pdf_text(pdf: bytes) -> str:
    """The text a reader sees, with line breaks and no-break spaces folded to single spaces."""
    out = subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=True)
    return " ".join(out.stdout.decode("utf-8").split())


def render(convocation: ConvocationCreatedV1) -> bytes:
    return render_convocation_pdf(convocation, hospital_name=HOSPITAL, now=NOW)


@pytest.mark.parametrize(
    ("language", "title", "when", "change_or_cancel"),
    [
        ("fr", "Convocation", "jeudi, 3 décembre 2026, 09:30", "Pour modifier ou annuler ce rendez-vous"),
        ("de", "Aufgebot", "Donnerstag, 3. Dezember 2026, 09:30", "verschieben oder absagen"),
        ("it", "Convocazione", "giovedì, 3 dicembre 2026, 09:30", "modificare o annullare"),
        ("en", "Convocation", "Thursday, 3 December 2026, 09:30", "To change or cancel"),
    ],
)
def test_letter_in_the_patients_language_shows_the_appointment_in_geneva_time(
    language: str, title: str, when: str, change_or_cancel: str
) -> None:
    pdf = render(make_convocation(language=language))

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in (HOSPITAL, title, "Marie Dupont", when, PLACE, ADDRESS, DEPARTMENT, PHONE):
        assert expected in text
    assert change_or_cancel in text
    assert "cardiologie@hug.example" in text
    assert "08:30" not in text  # the UTC wall-clock time must never reach the patient


def test_summer_appointment_is_shown_in_central_european_summer_time() -> None:
    text = pdf_text(render(make_convocation(starts_at="2026-07-02T07:15:00Z")))

    assert "jeudi, 2 juillet 2026, 09:15" in text


def test_appointment_sent_with_a_foreign_offset_is_converted_to_geneva_time() -> None:
    text = pdf_text(render(make_convocation(language="en", starts_at="2026-03-30T03:45:00-05:00")))

    assert "Monday, 30 March 2026, 10:45" in text


def test_appointment_near_midnight_utc_falls_on_the_next_local_day() -> None:
    text = pdf_text(render(make_convocation(language="de", starts_at="2026-12-31T23:30:00Z")))

    assert "Freitag, 1. Januar 2027, 00:30" in text


def test_instructions_are_printed_under_their_heading_and_wrapped() -> None:
    instructions = (
        "Merci de vous présenter 15 minutes avant l’heure du rendez-vous, à jeun depuis minuit. "
        "Apportez votre carte d’assurance, la liste de vos médicaments et vos derniers résultats.\n"
        "Le parking de l’hôpital est payant."
    )
    text = pdf_text(render(make_convocation(instructions=instructions)))

    assert "Consignes" in text
    assert " ".join(instructions.split()) in text


def test_letter_without_instructions_has_no_instructions_heading() -> None:
    text = pdf_text(render(make_convocation(language="en", instructions=None, secretariat_email=None)))

    assert "Instructions" not in text
    assert "Email" not in text
    assert PHONE in text


def test_names_outside_latin_1_survive() -> None:
    name = "Zoë Ça’Müller – Ørsted"
    text = pdf_text(render(make_convocation(language="de", name=name)))

    assert name in text


def test_very_long_name_and_instructions_wrap_onto_further_pages() -> None:
    long_name = "Ø" * 200
    instructions = ("Bitte nüchtern erscheinen und alle Unterlagen mitbringen. " * 40)[:2000]
    pdf = render(make_convocation(language="de", name=long_name, instructions=instructions))

    text = pdf_text(pdf)
    assert text.replace(" ", "").count("Ø" * 200) == 1
    assert "Seite 2/2" in text
    assert PHONE in text  # the contact block still made it onto the last page


def test_same_input_and_time_give_identical_bytes() -> None:
    convocation = make_convocation(language="it", instructions="Portare la tessera sanitaria.")

    assert render(convocation) == render(convocation)


def test_creation_date_comes_from_now() -> None:
    convocation = make_convocation()
    later_now = datetime(2027, 1, 5, tzinfo=timezone.utc)
    later = render_convocation_pdf(convocation, hospital_name=HOSPITAL, now=later_now)

    assert later != render(convocation)
    assert PdfReader(io.BytesIO(later)).metadata.creation_date == later_now
    assert "5 janvier 2027" in pdf_text(later)  # the letter's own date


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render_convocation_pdf(make_convocation(), hospital_name=HOSPITAL, now=datetime(2026, 1, 1))


def test_missing_font_fails_with_a_message_that_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(FontNotFoundError, match="fonts-dejavu-core") as caught:
        render_convocation_pdf(make_convocation(), hospital_name=HOSPITAL, now=NOW, font_dir=tmp_path)

    assert str(tmp_path) in str(caught.value)


def test_rendering_a_letter_writes_no_font_log_lines(capsys) -> None:
    import logging

    from shared.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("issuer", "INFO")
        render(make_convocation())
        logging.getLogger("issuer.test").info("rendered")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "fontTools" in line or "subset" in line.lower() or "Step " in line] == []
    assert any("rendered" in line for line in lines)  # the service's own lines still get through


# --- Issue 20, item 14: the letter a screen reader can read (tagged PDF/UA-1) -------------------------------


def marked_texts(reader: PdfReader) -> dict[tuple[int, int], str]:
    """(page, MCID) -> the text drawn inside that marked-content sequence."""
    texts: dict[tuple[int, int], str] = {}
    for number, page in enumerate(reader.pages):
        current: list[int | None] = [None]

        def before(op, args, cm, tm, current=current):
            if op == b"BDC":
                current[0] = args[1].get("/MCID") if isinstance(args[1], DictionaryObject) else None
            elif op == b"EMC":
                current[0] = None

        def text(t, cm, tm, font, size, current=current, number=number):
            if t and current[0] is not None:
                key = (number, current[0])
                texts[key] = texts.get(key, "") + t

        page.extract_text(visitor_operand_before=before, visitor_text=text)
    return texts


def reading_order(pdf: bytes) -> list[tuple[str, str]]:
    """What a screen reader reads, in the structure tree's order: (role, text) of each block element (the text of
    its spans and links included), and each figure with its alternative text."""
    reader = PdfReader(io.BytesIO(pdf))
    texts = marked_texts(reader)
    pages = {page.indirect_reference.idnum: n for n, page in enumerate(reader.pages)}
    inline = ("/Span", "/Link")
    read: list[tuple[str, str]] = []

    def kids_of(element) -> list:
        kids = element.get("/K", [])
        return kids if isinstance(kids, list) else [kids]

    def page_of(element, page: int | None) -> int | None:
        return pages[element.raw_get("/Pg").idnum] if "/Pg" in element else page

    def inline_text(element, page: int | None) -> list[str]:
        page, found = page_of(element, page), []
        for kid in kids_of(element):
            if isinstance(kid, int):
                found.append(texts.get((page, kid), ""))
            elif kid.get_object().get("/S") in inline:
                found += inline_text(kid.get_object(), page)
        return found

    def walk(element, page: int | None) -> None:
        element = element.get_object()
        role, page = str(element.get("/S", "")), page_of(element, page)
        if role == "/Figure":
            read.append((role, str(element.get("/Alt", ""))))
        elif text := " ".join(" ".join(inline_text(element, page)).split()):
            read.append((role, text))
        for kid in kids_of(element):
            if not isinstance(kid, int) and "/S" in kid.get_object() and kid.get_object()["/S"] not in inline:
                walk(kid, page)

    walk(reader.trailer["/Root"]["/StructTreeRoot"], None)
    return read


@pytest.mark.parametrize(
    ("language", "lang", "title"),
    [
        ("fr", "fr-CH", "Convocation"),
        ("de", "de-CH", "Aufgebot"),
        ("it", "it-CH", "Convocazione"),
        ("en", "en-GB", "Convocation"),
    ],
)
def test_the_letter_is_tagged_pdf_ua_1_in_the_patients_language(language: str, lang: str, title: str) -> None:
    reader = PdfReader(io.BytesIO(render(make_convocation(language=language))))
    root = reader.trailer["/Root"]
    assert reader.pdf_header == "%PDF-1.7"
    assert "/StructTreeRoot" in root and root["/StructTreeRoot"]["/K"]
    assert bool(root["/MarkInfo"]["/Marked"])
    assert root["/Lang"] == lang
    assert bool(root["/ViewerPreferences"]["/DisplayDocTitle"])  # the title, not the file name, in the window
    assert reader.metadata.title == f"{title} – {HOSPITAL}"
    xmp = root["/Metadata"].get_object().get_data().decode()
    assert 'pdfuaid:part="1"' in xmp and f'<rdf:li xml:lang="x-default">{title} – {HOSPITAL}</rdf:li>' in xmp


def test_a_screen_reader_reads_the_letter_in_order_with_headings_and_row_headers() -> None:
    pdf = render(make_convocation(language="de", instructions="Bitte nüchtern erscheinen.\nKarte mitbringen."))
    assert reading_order(pdf) == [
        ("/P", HOSPITAL),
        ("/P", "26. November 2026"),
        ("/H1", "Aufgebot"),
        ("/P", "Wir bitten Sie, sich zum folgenden Termin einzufinden:"),
        ("/TH", "Patient/in"),
        ("/TD", "Marie Dupont"),
        ("/TH", "Datum und Uhrzeit"),
        ("/TD", "Donnerstag, 3. Dezember 2026, 09:30"),
        ("/TH", "Ort"),
        ("/TD", f"{PLACE} {ADDRESS}"),
        ("/TH", "Abteilung"),
        ("/TD", DEPARTMENT),
        ("/H2", "Hinweise"),
        ("/P", "Bitte nüchtern erscheinen. Karte mitbringen."),
        ("/H2", "Sekretariat"),
        ("/P", "Wenn Sie diesen Termin verschieben oder absagen möchten, wenden Sie sich bitte an das Sekretariat:"),
        ("/TH", "Telefon"),
        ("/TD", PHONE),
        ("/TH", "E-Mail"),
        ("/TD", "cardiologie@hug.example"),
        ("/P", f"Freundliche Grüsse {HOSPITAL}"),
    ]  # "Seite 1/1" at the foot of the page is pagination, outside the tree (WeasyPrint's margin boxes)


def test_the_phone_and_email_are_tagged_links(tmp_path: Path) -> None:
    reader = PdfReader(io.BytesIO(render(make_convocation(language="fr"))))
    links = [a.get_object() for a in reader.pages[0].get("/Annots", [])]
    assert [link["/A"]["/URI"] for link in links] == ["tel:+41223723311", "mailto:cardiologie@hug.example"]
    assert all("/StructParent" in link and link.get("/Contents") for link in links)  # in the tree, described


def test_the_logo_is_a_figure_whose_alternative_text_is_the_hospitals_name(tmp_path: Path) -> None:
    from PIL import Image

    logo = tmp_path / "logo.png"
    Image.new("RGB", (120, 40), (0, 85, 140)).save(logo)
    pdf = render_convocation_pdf(make_convocation(language="it"), hospital_name=HOSPITAL, now=NOW, logo=logo)
    order = reading_order(pdf)
    assert order[:2] == [("/Figure", HOSPITAL), ("/P", HOSPITAL)]
    assert not [role for role, _ in reading_order(render(make_convocation(language="it"))) if role == "/Figure"]


def test_every_word_on_the_page_is_in_the_structure_tree_but_the_page_counter() -> None:
    """Nothing a screen reader would skip but the page counter, which is pagination, not the letter."""
    pdf = render(make_convocation(language="en", instructions="Bring your insurance card."))
    tagged = " ".join(text for _, text in reading_order(pdf))
    drawn = pdf_text(pdf)
    assert drawn.endswith(" Page 1/1")
    assert re.sub(r"\s+", "", tagged) == re.sub(r"\s+", "", drawn.removesuffix(" Page 1/1"))
