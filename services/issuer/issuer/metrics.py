"""Issuer metrics."""

from prometheus_client import Counter

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
