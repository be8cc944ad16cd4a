"""The SMS text, in the patient's language, ending with the origin-bound line for autofill.

The last line ``@host #code`` follows the WICG origin-bound one-time codes format, so phones and
browsers offer the code only on the portal's own origin (https://wicg.github.io/sms-one-time-codes/).
Each text stays in the GSM-7 alphabet (no "È", no typographic quotes) so that it fits one SMS segment.
"""

TEMPLATES = {
    "fr": "{code} est votre code pour ouvrir votre message sécurisé des HUG. Il est valable 10 minutes.",
    "de": "{code} ist Ihr Code, um Ihre sichere Nachricht der HUG zu öffnen. Er ist 10 Minuten gültig.",
    "it": "{code} è il suo codice per aprire il messaggio sicuro degli HUG. Il codice è valido 10 minuti.",
    "en": "{code} is your code to open your secure message from HUG. It is valid for 10 minutes.",
}


def otp_text(language: str, code: str, portal_host: str) -> str:
    """The whole SMS; unknown languages fall back to French, the hospital's language."""
    body = TEMPLATES.get(language, TEMPLATES["fr"]).format(code=code)
    return f"{body}\n\n@{portal_host} #{code}"
