"""The video guide's script: what each screen of the video shows, and the sentences spoken over it, which are
also its captions and its transcript (``make guide``, tools/devstack/guide.py, records and narrates them).

The sentences are this service's gettext texts, translated in its catalogs with every other word of the
portal. Each one is short: a caption stays on screen at least as long as it takes to speak and to read
(17 characters a second at most), so a sentence of 60 characters needs 3.5 seconds.
"""

from __future__ import annotations

from access_portal.i18n import N_, gettext

# (screen, sentences): the screens in the order the video shows them (see devstack.guide for each one).
SCRIPT: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "email",
        (
            N_("The hospital sends you an e-mail."),
            N_("The e-mail itself says nothing about your appointment."),
            N_("Open it and tap the button in it."),
        ),
    ),
    (
        "link",
        (
            N_("The link opens the hospital's secure page."),
            N_("The first time, type your mobile number."),
            N_("The page shows how the number on file ends."),
            N_("Then ask for a code by SMS."),
        ),
    ),
    (
        "sms",
        (
            N_("An SMS arrives on your phone with a 6-digit code."),
            N_("Never give this code to anyone."),
        ),
    ),
    (
        "code",
        (
            N_("Type the code on the page."),
            N_("Your phone may also offer to fill it in."),
            N_("The code is valid for %(minutes)s minutes."),
            N_("No SMS? You can ask for a new code."),
        ),
    ),
    (
        "document",
        (
            N_("Your appointment appears: date, time and place."),
            N_("The department's instructions are shown too."),
        ),
    ),
    (
        "download",
        (
            N_("Download the convocation as a PDF and keep it."),
            N_("You can also add the appointment to your calendar."),
            N_("Until you download it, you can ask for it by post."),
        ),
    ),
    (
        "help",
        (
            N_("Questions? Call the secretariat."),
            N_("Its number is at the bottom of every page."),
            N_("No mobile phone? They can send the convocation by post."),
        ),
    ),
)


def narration(language: str, *, minutes: int) -> list[tuple[str, list[str]]]:
    """The script in ``language``: (screen, its sentences), with the code's lifetime filled in."""
    return [
        (screen, [gettext(language, s, minutes=minutes) if "%(" in s else gettext(language, s) for s in lines])
        for screen, lines in SCRIPT
    ]
