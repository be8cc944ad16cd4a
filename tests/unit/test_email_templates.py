"""The link e-mail: what the patient reads, in their language, and what it must never contain."""

from __future__ import annotations

import inspect
import re

import pytest

from mailer import emails
from mailer.emails import RenderedEmail, render_email

LINK = "https://convocations.hug.example/m/7c9e6679-7425-40de-944b-e07fc1f90ae7#k=q3Zt-8_LxW0pRf2sVbN1cA"
HOSPITAL = "Hôpitaux Universitaires de Genève"
PHONE = "+41 22 372 33 11"
EMAIL = "patients@hug.example"

# A word each language's subject and body use, and that no other language's version contains.
KNOWN_WORDS = {
    "fr": ("message sécurisé", "Bonjour"),
    "de": ("sichere Nachricht", "Guten Tag"),
    "it": ("messaggio sicuro", "Buongiorno"),
    "en": ("secure message", "Hello"),
}
# Words that would betray medical content, in the four languages (matched case-insensitively).
MEDICAL_WORDS = (
    "diagnos",
    "médecin",
    "docteur",
    "arzt",
    "ärztin",
    "medico",
    "doctor",
    "physician",
    "rendez-vous",
    "termin",
    "appuntamento",
    "appointment",
    "consultation",
    "konsultation",
    "visita",
    "examen",
    "untersuchung",
    "esame",
    "opération",
    "operation",
    "operazione",
    "traitement",
    "behandlung",
    "trattamento",
    "treatment",
    "cardiolog",
    "oncolog",
    "psychiat",
)


def render(language: str = "fr", **overrides: str | None) -> RenderedEmail:
    arguments: dict[str, str | None] = {
        "patient_name": "Zoë Müller",
        "link": LINK,
        "hospital_name": HOSPITAL,
        "contact_phone": PHONE,
        "contact_email": EMAIL,
    }
    arguments.update(overrides)
    return render_email(language=language, **arguments)  # type: ignore[arg-type]


def all_parts(mail: RenderedEmail) -> str:
    return "\n".join((mail.subject, mail.text, mail.html))


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_subject_and_bodies_are_in_the_patients_language(language: str) -> None:
    mail = render(language)

    phrase, greeting = KNOWN_WORDS[language]
    assert phrase in mail.subject
    assert HOSPITAL in mail.subject
    for body in (mail.text, mail.html):
        assert phrase in body
        assert greeting in body
        for other, (other_phrase, _) in KNOWN_WORDS.items():
            if other != language:
                assert other_phrase not in body
    assert f'<html lang="{language}"' in mail.html


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_link_appears_verbatim_in_text_and_as_button_in_html(language: str) -> None:
    mail = render(language)

    assert LINK in mail.text.splitlines()  # alone on its line: copy-pastable
    assert f'href="{LINK}"' in mail.html
    assert f">{LINK}</a>" in mail.html  # also shown in full for copy-paste


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_explains_the_sms_code_the_secretariat_and_the_password_rule(language: str) -> None:
    mail = render(language)

    for body in (mail.text, mail.html):
        assert "SMS" in body
        assert PHONE in body
        assert EMAIL in body
    assert render(language, contact_email=None).text.count(PHONE) == 1


def test_the_english_text_says_what_each_step_is() -> None:
    text = render("en").text

    assert "you will be asked to enter your mobile phone number" in text
    assert "verification code by SMS" in text
    assert "copy it and paste it into the address bar" in text
    assert "contact us by phone at +41 22 372 33 11" in text
    assert "We will never ask you by e-mail for a password" in text


def test_patient_name_is_escaped_in_html_and_kept_as_written_in_text() -> None:
    mail = render("de", patient_name="<b>Müller</b> & Fils")

    assert "&lt;b&gt;Müller&lt;/b&gt; &amp; Fils" in mail.html
    assert "<b>" not in mail.html
    assert "Guten Tag <b>Müller</b> & Fils," in mail.text


def test_hospital_and_secretariat_values_are_escaped_in_html() -> None:
    mail = render("fr", hospital_name='HUG "<script>"', contact_email="a<b@example.ch")

    assert "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html
    assert "a&lt;b@example.ch" in mail.html


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_no_placeholder_or_none_leaks(language: str) -> None:
    for mail in (render(language), render(language, contact_phone=None, contact_email=None)):
        for part in (mail.subject, mail.text, mail.html):
            for leak in ("None", "{{", "}}", "{%", "%(", "%s", "undefined"):
                assert leak not in part


def test_text_part_has_no_html_tags_and_no_runs_of_blank_lines() -> None:
    text = render("it").text

    assert not re.search(r"<[a-zA-Z/!][^>]*>", text)
    assert "\n\n\n" not in text
    assert "\n-- \n" in text  # standard signature delimiter before the footer


def test_html_is_self_contained_with_no_images_or_tracking() -> None:
    html = render("en").html.lower()

    assert "<img" not in html
    assert "<script" not in html
    assert "<link" not in html
    assert "url(" not in html
    # The patient's link (button and bare URL), the portal's own guide and the hospital's phone, nothing else.
    guide = "https://convocations.hug.example/guide?lang=en"
    assert re.findall(r'(?:href|src)="([^"]+)"', html) == [LINK.lower(), LINK.lower(), guide, "tel:+41223723311"]


def test_without_secretariat_contact_the_help_sentence_is_left_out() -> None:
    mail = render("en", contact_phone=None, contact_email=None)

    assert "contact us" not in mail.text
    assert "copy it and paste it" in mail.text


def test_email_only_secretariat() -> None:
    mail = render("fr", contact_phone=None)

    assert f"par e-mail à l’adresse {EMAIL}" in mail.text
    assert "téléphone au" not in mail.text


@pytest.mark.parametrize("language", ["es", "", "xx", "zh-Hant"])
def test_unsupported_language_falls_back_to_french(language: str) -> None:
    mail = render(language)

    assert "message sécurisé" in mail.subject
    assert '<html lang="fr"' in mail.html


@pytest.mark.parametrize(("language", "expected"), [("DE", "de"), ("de-CH", "de"), ("it_CH", "it")])
def test_regional_language_tags_use_their_base_language(language: str, expected: str) -> None:
    assert f'<html lang="{expected}"' in render(language).html


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_no_medical_content_whatever_the_language(language: str) -> None:
    for mail in (render(language), render(language, contact_phone=None, contact_email=None)):
        content = all_parts(mail).lower()
        for word in MEDICAL_WORDS:
            assert word not in content, f"{word!r} in the {language} e-mail"
        assert not re.search(r"\b\d{1,2}[./]\d{1,2}[./]\d{2,4}\b", content)  # no date
        assert not re.search(r"\b\d{1,2}[:h]\d{2}\b", content)  # no time of day


def test_render_email_cannot_receive_medical_details() -> None:
    parameters = set(inspect.signature(render_email).parameters)

    assert parameters == {
        "language",
        "patient_name",
        "link",
        "hospital_name",
        "contact_phone",
        "contact_email",
        "replaces_date",
        "replaced_because",  # "changed" or "sent-again": what happened, never what changed
        "open_until",  # the message's expiry: until when the link opens it
    }
    with pytest.raises(TypeError):
        render_email(  # type: ignore[call-arg]
            language="fr", patient_name="A", link=LINK, hospital_name=HOSPITAL, department="Cardiologie"
        )


@pytest.mark.parametrize("link", ["javascript:alert(1)", "/m/123#k=x", "https://", "https://a.example/m 1"])
def test_link_must_be_an_absolute_web_url(link: str) -> None:
    with pytest.raises(ValueError, match="link"):
        render(link=link)


def test_line_breaks_in_names_cannot_add_paragraphs() -> None:
    mail = render("en", patient_name="Zoë\n\nClick https://evil.example\r\n")

    assert "Hello Zoë Click https://evil.example," in mail.text


def test_subject_is_a_single_line() -> None:
    assert "\n" not in render("de", hospital_name="HUG\r\nBcc: victim@example.com").subject


def test_environment_is_built_once_per_language() -> None:
    assert emails.environment("it") is emails.environment("it")
    assert emails.environment("it") is not emails.environment("de")


@pytest.mark.parametrize("language", list(KNOWN_WORDS))
def test_the_email_links_the_portals_guide_in_the_patients_language(language: str) -> None:
    email = render(language)
    guide = f"https://convocations.hug.example/guide?lang={language}"
    assert guide in email.text and f'href="{guide}"' in email.html
