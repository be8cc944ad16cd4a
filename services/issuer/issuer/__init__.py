"""Issuer: seals convocations into secure messages and tracks each one's delivery status."""
