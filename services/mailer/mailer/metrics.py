"""Mailer metrics."""

from prometheus_client import Counter

SMTP_ATTEMPTS = Counter(
    "convocations_smtp_attempts_total",
    "SMTP sends by outcome: accepted, transient (retry scheduled), permanent, exhausted.",
    ["outcome"],
)
