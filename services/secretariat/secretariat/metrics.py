"""Secretariat metrics."""

from prometheus_client import Counter

STAFF_ACTIONS = Counter(
    "convocations_staff_actions_total", "Actions asked by staff, by action and channel.", ["action", "via"]
)
STAFF_REFUSALS = Counter(
    "convocations_staff_refusals_total",
    "Requests refused (sign-in, token, department scope, CSRF), by reason.",
    ["reason"],
)
