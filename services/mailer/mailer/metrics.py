"""Mailer metrics."""

from prometheus_client import Counter

SMTP_ATTEMPTS = Counter(
    "convocations_smtp_attempts_total",
    "SMTP sends by outcome: accepted, transient (retry scheduled), permanent, exhausted.",
    ["outcome"],
)
NOTICES = Counter(
    "convocations_email_notices_total",
    "Notices to patients (withdrawn, reminder) by outcome: sent, failed, skipped (no e-mail to refer to).",
    ["kind", "outcome"],
)
BOUNCES = Counter(
    "convocations_email_bounces_total",
    "Mail received on the bounce listener, by verdict: hard, soft, auto-reply, not-a-bounce, duplicate,"
    " other-recipient (a hard bounce naming another address), malformed, too-many-refused (connection closed).",
    ["verdict"],
)
