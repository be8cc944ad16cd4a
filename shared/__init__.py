"""Contracts and plumbing shared by the Convocations services (never business rules)."""
