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
