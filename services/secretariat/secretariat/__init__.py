"""Secretariat console: the department's view of its convocations, and its actions."""
