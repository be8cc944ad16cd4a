"""Access portal metrics."""

from prometheus_client import Counter

OTP_REQUESTS = Counter(
    "convocations_otp_requests_total",
    "Code requests by outcome: sent, rate-limited, locked, number_mismatch, number_invalid, no-proof.",
    ["outcome"],
)
OTP_CHECKS = Counter(
    "convocations_otp_checks_total",
    "Code checks by outcome: right, wrong, expired, locked, old-code, no-proof.",
    ["outcome"],
)
for _outcome in ("right", "wrong", "expired", "locked"):
    OTP_CHECKS.labels(_outcome)  # exported from the start: the guessing alert's increase() sees the first ones
DOCUMENTS_RELEASED = Counter("convocations_documents_released_total", "First downloads, by kind (pdf, ics).", ["kind"])
UNKNOWN_LINKS = Counter(
    "convocations_portal_unknown_links_total",
    "Requests for a message id the portal does not know (counted here, not written to the access audit).",
)
