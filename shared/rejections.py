"""Why an event is dead-lettered: the one table of reasons. A consumer refuses an event only with one of
these (``raise Rejected(rejections.APPOINTMENT_IN_PAST, detail)``); the reason's code travels in the
dead letter's ``x-rejected-reason`` header, labels the metrics, and the event catalogue
(docs/contracts/README.md, `make contracts`) lists every reason with its meaning and who raises it."""

from __future__ import annotations

from dataclasses import dataclass

EVERY_CONSUMER = "every consumer"


@dataclass(frozen=True)
class Reason:
    code: str  # the x-rejected-reason header
    meaning: str  # for integrators and operators reading a dead-letter queue (markdown)
    raised_by: tuple[str, ...]  # the services whose handlers raise it, or EVERY_CONSUMER
    contract: bool = False  # the event breaks its contract (counted as "invalid", not "rejected")


class Rejected(Exception):
    """A well-formed event the domain refuses (e.g. an appointment in the past): dead-letter it."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.code}: {detail}")
        self.reason, self.detail = reason.code, detail


def _every(code: str, meaning: str, *, contract: bool = True) -> Reason:
    return Reason(code, meaning, (EVERY_CONSUMER,), contract)


# The contract, checked by every consumer before any handler runs (shared/consumer.py).
MALFORMED_JSON = _every("malformed-json", "The body is not UTF-8 JSON.")
TOO_LARGE = _every(
    "too-large",
    "The message body is larger than its event may be (convocation.created: the 10 MB letter in base64 and"
    " 256 KiB more); refused on its size, before it is read.",
)
INVALID_EVENT = _every(
    "invalid-event",
    "The body does not match the schema of the routing key's event; the detail names the fields"
    " (a control character such as CR or LF in a one-line field is named by its code point).",
)
WRONG_TYPE = _every("wrong-type", "The envelope's type or version is not the routing key's event.")
WRONG_PRODUCER = _every("wrong-producer", "The envelope's `producer` is not a party that publishes this event.")
CANNOT_OPEN = _every(
    "cannot-open",
    "A field sealed for this service does not open with its keys (a key removed from the ring too early, or a"
    " forged field).",
    contract=False,
)
# What one service's handlers refuse.
APPOINTMENT_IN_PAST = Reason(
    "appointment-in-past", "A convocation.created whose appointment has already started.", ("issuer",)
)
UNKNOWN_CONVOCATION = Reason(
    "unknown-convocation", "The event names a convocation this service does not know.", ("issuer",)
)
PDF_ACTIVE_CONTENT = Reason(
    "pdf-active-content",
    "The PDF carries JavaScript, a launch or other action, an embedded file or XFA; the detail says which.",
    ("issuer",),
)
PDF_UNREADABLE = Reason(
    "pdf-unreadable", "The PDF cannot be inspected (damaged, or encrypted with a password).", ("issuer",)
)
EMAIL_INVALID = Reason(
    "email-invalid",
    "A secretariat's correct-email whose address (sealed for the issuer) is missing or is not one e-mail address;"
    " the address itself is never in the detail.",
    ("issuer",),
)
PERIOD_KEY_UNAVAILABLE = Reason(
    "period-key-unavailable",
    "The key store gave no period key for the letter's expiry: it did not answer (three tries), refused the"
    " issuer, or the period has ended or is destroyed; the detail says which. Nothing is sealed without one"
    " (docs/runbooks.md, `ConvocationsPeriodKeyUnavailable`); once the store answers, move the letter back.",
    ("issuer",),
)
UNSAFE_HEADER = Reason(
    "unsafe-header", "A value meant for an e-mail header holds a control character or is no plain address.", ("mailer",)
)
UNREADABLE_SECRET = Reason(
    "unreadable-secret",
    "An encrypted field does not open with this service's key (wrong key or forged field).",
    ("sms-gateway",),
)
UNKNOWN_MESSAGE = Reason(
    "unknown-message", "A secretariat's action names a message this service does not know.", ("access-portal",)
)
NO_NUMBER = Reason("no-number", "A secretariat's correct-mobile that carries no number.", ("access-portal",))

REASONS: tuple[Reason, ...] = (
    MALFORMED_JSON,
    TOO_LARGE,
    INVALID_EVENT,
    WRONG_TYPE,
    WRONG_PRODUCER,
    CANNOT_OPEN,
    APPOINTMENT_IN_PAST,
    UNKNOWN_CONVOCATION,
    PDF_ACTIVE_CONTENT,
    PDF_UNREADABLE,
    EMAIL_INVALID,
    PERIOD_KEY_UNAVAILABLE,
    UNSAFE_HEADER,
    UNREADABLE_SECRET,
    UNKNOWN_MESSAGE,
    NO_NUMBER,
)
CONTRACT_REASONS = frozenset(r.code for r in REASONS if r.contract)
