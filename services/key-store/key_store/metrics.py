"""Key store metrics (never a key, never a period's content)."""

from prometheus_client import Counter, Gauge

PERIODS = Gauge("convocations_period_keys", "Period keys the key store holds, by state (live, destroyed).", ["state"])
for _state in ("live", "destroyed"):
    PERIODS.labels(_state)
OVERDUE = Gauge(
    "convocations_period_keys_overdue",
    "Live period keys past their end plus the grace: the sweep should have destroyed them (0 when all is well).",
)
DESTROYED = Counter("convocations_period_keys_destroyed_total", "Period keys destroyed by the sweep.")
REQUESTS = Counter(
    "convocations_key_store_requests_total",
    "Requests to the key store by caller (issuer, access-portal, unknown), action (create, get) and HTTP status.",
    ["caller", "action", "status"],
)
