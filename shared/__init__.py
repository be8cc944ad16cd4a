"""Contracts and plumbing shared by the four Convocations services (never business rules)."""
