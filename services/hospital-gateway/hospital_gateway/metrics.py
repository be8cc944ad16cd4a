"""Hospital gateway metrics (on the process registry served at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "convocations_gateway_messages_total",
    "Messages from hospital systems (HL7 messages, FHIR Appointments, CSV lines) by path and outcome: accepted,"
    " duplicate, refused (AE, 4xx: the content), rejected (AR: the message as a whole), ignored, unavailable.",
    ["system", "via", "outcome"],
)
MESSAGE_SECONDS = Histogram(
    "convocations_gateway_message_seconds",
    "Time from a message's arrival to its acknowledgement, by path.",
    ["via"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERED = Counter(
    "convocations_gateway_dead_lettered_total",
    "Accepted messages that did not become a letter in time (the issuer never sealed them), by system.",
    ["system", "reason"],
)
WAITING = Gauge("convocations_gateway_unconfirmed", "Accepted letters the issuer has not reported on yet.")
DELIVERIES = Counter(
    "convocations_gateway_deliveries_total",
    "Statuses and requests sent back to hospital systems, by format and outcome: sent, transient, failed.",
    ["system", "format", "outcome"],
)
