"""Issuer metrics."""

from prometheus_client import Counter

POSTAL_REQUESTS = Counter(
    "convocations_postal_requests_total",
    "Letters sent to the print room, by reason (preference, no-email, email-failed, not-downloaded).",
    ["reason"],
)
