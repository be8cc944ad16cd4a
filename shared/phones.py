"""Phone numbers: typed forms read as E.164, masked for display, and which numbers a code may go to."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

# Numbers a text message with a code may go to: a mobile, or a number the plan does not tell apart from
# one. Premium-rate, shared-cost, toll-free, personal and other numbers cost the hospital or serve fraud.
_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


def e164(raw: str) -> str | None:
    """Any usual form ('079 123 45 67', '+41 79…', '0041 79…') -> E.164, or None if not a valid number.
    National numbers are read as Swiss."""
    try:
        number = phonenumbers.parse((raw or "").strip(), "CH")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mobile_problem(number: str, allowed_countries: frozenset[str]) -> str | None:
    """Why a valid E.164 number cannot receive the codes: 'not-mobile' (premium-rate, landline…),
    'country' (outside ``allowed_countries``, ISO codes), or None."""
    parsed = phonenumbers.parse(number)
    if phonenumbers.region_code_for_number(parsed) not in allowed_countries:
        return "country"
    if phonenumbers.number_type(parsed) not in _MOBILE_TYPES:
        return "not-mobile"
    return None


def phone_hint(number: str) -> str:
    """'+41791234534' -> '+41 79 *** ** 34': enough to recognise one's own number, not to learn it."""
    groups = phonenumbers.format_number(phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.INTERNATIONAL).split(
        " "
    )
    if len(groups) < 3:
        return groups[0] + " " + "*" * max(0, len(number) - 5) + number[-2:]
    middle = ["*" * len(g) for g in groups[2:-1]]
    last = groups[-1]
    return " ".join([groups[0], groups[1], *middle, "*" * (len(last) - 2) + last[-2:]])
