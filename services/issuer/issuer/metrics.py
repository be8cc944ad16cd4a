"""Issuer metrics."""

from prometheus_client import Counter, Gauge

POSTAL_REQUESTS = Counter(
    "convocations_postal_requests_total",
    "Letters sent to the print room, by reason (preference, no-email, email-failed, not-downloaded).",
    ["reason"],
)
REISSUE_REQUESTS = Counter(
    "convocations_reissue_requests_total",
    "Letters the hospital system was asked to publish again for the secretariat, by reason (resend, email-corrected).",
    ["reason"],
)
REISSUES_WAITING = Gauge(
    "convocations_reissue_waiting",
    "Requests to the hospital system to publish a convocation again that it has not answered yet (sweeper's view).",
)
REISSUE_OLDEST_WAITING = Gauge(
    "convocations_reissue_oldest_waiting_seconds",
    "Age of the oldest request to the hospital system to publish a convocation again not answered yet (0: none).",
)
PERIOD_KEY_FAILURES = Counter(
    "convocations_period_key_failures_total",
    "Letters refused at sealing for want of a period key, by reason (unreachable, refused, closed, destroyed,"
    " unknown, unsafe): each is dead-lettered with reason period-key-unavailable.",
    ["reason"],
)
for _reason in ("unreachable", "refused", "closed", "destroyed", "unknown", "unsafe"):
    PERIOD_KEY_FAILURES.labels(_reason)
