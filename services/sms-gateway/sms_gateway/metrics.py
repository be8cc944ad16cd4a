"""SMS gateway metrics (on the process registry served at /metrics)."""

from prometheus_client import Counter

SMS_ATTEMPTS = Counter(
    "convocations_sms_attempts_total",
    "Provider sends by provider and outcome: accepted, transient, permanent, exhausted, blocked.",
    ["provider", "outcome"],
)
SMS_BLOCKED = Counter(
    "convocations_sms_blocked_total",
    "Codes the gateway refused to text, by reason: expired, invalid-number, country-not-allowed,"
    " number-hourly-cap, global-hourly-cap.",
    ["reason"],
)
for _reason in ("expired", "invalid-number", "country-not-allowed", "number-hourly-cap", "global-hourly-cap"):
    SMS_BLOCKED.labels(_reason)  # exported from the start: the pumping alert's increase() sees the first one
SMS_REPORTS = Counter(
    "convocations_sms_delivery_reports_total",
    "Delivery reports (status callbacks) by provider and outcome: applied, stale, ignored, unmatched,"
    " bad-signature, malformed.",
    ["provider", "outcome"],
)
SMS_FINAL = Counter(
    "convocations_sms_final_total",
    "SMS that reached a final delivery state, by provider and state.",
    ["provider", "status"],
)
