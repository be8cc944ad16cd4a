"""SMS gateway metrics."""

from prometheus_client import Counter

SMS_ATTEMPTS = Counter(
    "convocations_sms_attempts_total",
    "Provider sends by provider and outcome: accepted, transient, permanent, exhausted, blocked.",
    ["provider", "outcome"],
)
