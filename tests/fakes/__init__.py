"""Fakes of external services for tests (import from here, not from app internals)."""
