"""convocations-admin: operator commands (dead-letter queues) run against the live broker."""
