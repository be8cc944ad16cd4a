"""Issue 11 in the mailer's pure parts: how to recognise a genuine e-mail, the replacement line,
the notices (withdrawal, reminder) in four languages, DKIM signatures, and reading bounces."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email import message_from_bytes, message_from_string
from email.policy import compat32

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.bounces import classify, token_of
from mailer.compose import bounce_address, build_message, to_bytes, token_hash
from mailer.emails import render_email, render_notice
from mailer.signing import DkimSigner
from tests.unit.test_email_templates import HOSPITAL, LINK, MEDICAL_WORDS

SENT = datetime(2026, 12, 3, 9, 30, tzinfo=timezone.utc)
GENUINE = {
    "fr": "Comment reconnaître un véritable e-mail",
    "de": "So erkennen Sie eine echte E-Mail",
    "it": "Come riconoscere un’e-mail autentica",
    "en": "How to recognise a genuine e-mail",
}
REPLACES = {
    "fr": "remplace celui que nous vous avons envoyé le 3 décembre 2026",
    "de": "ersetzt diejenige, die wir Ihnen am 3. Dezember 2026 gesendet haben",
    "it": "sostituisce quello che Le abbiamo inviato il 3 dicembre 2026",
    "en": "replaces the one we sent you on 3 December 2026",
}
# What happened, told apart (issue 20, item 9): the hospital cancelled, or the secretariat withdrew.
CANCELLED = {
    "fr": "a annulé la convocation",
    "de": "hat das Aufgebot annulliert",
    "it": "ha annullato",
    "en": "has cancelled",
}
WITHDRAWN = {
    "fr": "Le secrétariat a retiré",
    "de": "Das Sekretariat hat das Aufgebot zurückgezogen",
    "it": "La segreteria ha ritirato",
    "en": "The secretariat has withdrawn",
}
# ... and whom to call.
CALL = {
    "fr": "appelez l’hôpital au",
    "de": "rufen Sie das Spital unter",
    "it": "chiami l’ospedale al",
    "en": "call the hospital at",
}
CHANGED = {
    "fr": "Votre convocation a changé",
    "de": "Ihr Aufgebot hat sich geändert",
    "it": "La Sua convocazione è cambiata",
    "en": "Your convocation has changed",
}
SENT_AGAIN = {
    "fr": "À la demande du secrétariat",
    "de": "Auf Wunsch des Sekretariats",
    "it": "Su richiesta della segreteria",
    "en": "At the secretariat's request",
}
REMINDER = {
    "fr": "pas encore ouvert",
    "de": "noch nicht geöffnet",
    "it": "Non ha ancora aperto",
    "en": "have not opened",
}


def notice(kind: str, language: str, **kw):
    args = dict(
        kind=kind,
        language=language,
        patient_name="Zoë Müller",
        hospital_name=HOSPITAL,
        portal_host="convocations.hug.example",
        sent_at=SENT,
        contact_phone="+41 22 372 33 11",
        contact_email="patients@hug.example",
    )
    return render_notice(**{**args, **kw})


@pytest.mark.parametrize("language", list(GENUINE))
def test_every_email_says_how_to_recognise_it_and_names_the_portal_host(language):
    mails = [
        render_email(language=language, patient_name="Zoë", link=LINK, hospital_name=HOSPITAL),
        notice("cancelled", language),
        notice("withdrawn", language),
        notice("reminder", language),
    ]
    for mail in mails:
        for body in (mail.text, mail.html):
            assert GENUINE[language] in body
            assert "convocations.hug.example" in body


@pytest.mark.parametrize("language", list(REPLACES))
def test_a_replacement_says_which_email_it_replaces_in_the_patients_language(language):
    mail = render_email(language=language, patient_name="Zoë", link=LINK, hospital_name=HOSPITAL, replaces_date=SENT)
    assert REPLACES[language] in mail.text and REPLACES[language] in mail.html
    plain = render_email(language=language, patient_name="Zoë", link=LINK, hospital_name=HOSPITAL)
    assert REPLACES[language] not in plain.text
    # Why (issue 20, item 9): a new version from the hospital changed it; the secretariat's resend did not.
    assert CHANGED[language] in mail.text and CHANGED[language] in mail.html
    again = render_email(
        language=language,
        patient_name="Zoë",
        link=LINK,
        hospital_name=HOSPITAL,
        replaces_date=SENT,
        replaced_because="sent-again",
    )
    assert SENT_AGAIN[language] in again.text and SENT_AGAIN[language] in again.html
    assert REPLACES[language] in again.text and CHANGED[language] not in again.text


@pytest.mark.parametrize(
    "language, until",
    [
        ("fr", "Vous pouvez ouvrir ce message jusqu’au lundi, 21 décembre 2026, 18:30."),
        ("de", "Sie können diese Nachricht bis Montag, 21. Dezember 2026, 18:30 öffnen."),
        ("it", "Può aprire questo messaggio fino a lunedì, 21 dicembre 2026, 18:30."),
        ("en", "You can open this message until Monday, 21 December 2026, 18:30."),
    ],
)
def test_the_email_says_until_when_the_link_opens_in_the_patients_language(language, until):
    """Issue 17, item 4: the message's expiry, in Geneva's time, written as the portal's pages write it."""
    expires = datetime(2026, 12, 21, 17, 30, tzinfo=timezone.utc)
    mail = render_email(language=language, patient_name="Zoë", link=LINK, hospital_name=HOSPITAL, open_until=expires)
    assert until in mail.text and until in mail.html


@pytest.mark.parametrize("language", list(WITHDRAWN))
@pytest.mark.parametrize("kind,words", [("cancelled", CANCELLED), ("withdrawn", WITHDRAWN), ("reminder", REMINDER)])
def test_notices_in_four_languages_with_the_public_contact_no_link_and_no_medical_content(kind, words, language):
    mail = notice(kind, language)
    if kind != "reminder":  # says whom to call about what happened
        assert CALL[language] in mail.text and CALL[language] in mail.html
    others = {"cancelled": WITHDRAWN, "withdrawn": CANCELLED, "reminder": CANCELLED}[kind]
    assert others[language] not in mail.text
    date = {"fr": "3 décembre 2026", "de": "3. Dezember 2026", "it": "3 dicembre 2026", "en": "3 December 2026"}
    for body in (mail.text, mail.html):
        assert words[language] in body
        assert date[language] in body
        assert "+41 22 372 33 11" in body and "patients@hug.example" in body
        assert "/m/" not in body  # a notice opens nothing: its only link dials the hospital
        assert set(re.findall(r'href="([^"]+)"', body)) == ({"tel:+41223723311"} if body is mail.html else set())
    assert HOSPITAL in mail.subject and "\n" not in mail.subject
    content = "\n".join((mail.subject, mail.text, mail.html)).lower()
    for word in MEDICAL_WORDS:
        assert word not in content


def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem


def test_a_signed_message_verifies_with_the_published_record_and_breaks_when_altered():
    old, new = keypair(), keypair()
    signer = DkimSigner("hug.example", (("s2026a", old), ("s2026b", new)))
    records = {r.split(".", 1)[0]: r.split('"')[1].encode() for r in signer.dns_records()}
    mail = render_email(language="fr", patient_name="Zoë", link=LINK, hospital_name=HOSPITAL)
    raw = signer.sign(
        to_bytes(
            build_message(
                mail,
                mail_from="HUG <convocations@hug.example>",
                to_name="Zoë",
                to_address="zoe@example.ch",
                message_id=__import__("uuid").uuid4(),
                language="fr",
            )
        )
    )
    assert b"s=s2026b;" in raw.split(b"\r\n\r\n")[0].replace(b"\r\n", b"").replace(b" ", b"")  # newest signs

    def dns(name, timeout=5):
        return records.get(name.decode().split(".", 1)[0])

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Subject:", b"Subject: URGENT"), dnsfunc=dns)
    assert message_from_bytes(raw)["Auto-Submitted"] == "auto-generated"


def test_vERP_tokens_are_random_and_only_their_hash_is_kept():
    a, ha = bounce_address("hug.example")
    b, _ = bounce_address("hug.example")
    assert a != b and re.fullmatch(r"bounces\+[a-z2-7]{24}@hug\.example", a)
    token = token_of(a, "hug.example")
    assert token_hash(token) == ha and token_hash(token.upper()) == ha
    assert token_of(a, "evil.example") is None and token_of("bounces+abc@hug.example", "hug.example") is None


def dsn(action: str, status: str, extra_headers: str = "") -> str:
    return (
        "From: MAILER-DAEMON@mx.example.ch\nTo: bounces+x@hug.example\nSubject: Undelivered Mail\n"
        f"{extra_headers}MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.ch\n\n"
        f"Final-Recipient: rfc822; marie@example.ch\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {'550' if status.startswith('5') else '452'} {status} mailbox of marie@example.ch\n"
        "\n--b--\n"
    )


def test_dsns_are_classified_hard_or_soft_and_auto_replies_are_not_bounces():
    hard = classify(message_from_string(dsn("failed", "5.1.1"), policy=compat32))
    assert (hard.kind, hard.status, hard.smtp_code) == ("hard", "5.1.1", 550)
    assert hard.recipients == ("marie@example.ch",)  # checked against the address the e-mail went to
    assert hard.reason == "late-bounce 5.1.1"  # codes only: the text quotes the address
    assert classify(message_from_string(dsn("delayed", "4.2.2"), policy=compat32)).kind == "soft"
    assert classify(message_from_string(dsn("failed", "4.4.7"), policy=compat32)).kind == "soft"
    assert classify(message_from_string(dsn("delivered", "2.0.0"), policy=compat32)).kind == "not-a-bounce"
    ooo = "From: marie@example.ch\nAuto-Submitted: auto-replied\nSubject: Out of office\n\nBack on Monday.\n"
    assert classify(message_from_string(ooo, policy=compat32)).kind == "auto-reply"
    assert classify(message_from_string("Subject: hi\n\nhello\n", policy=compat32)).kind == "not-a-bounce"
