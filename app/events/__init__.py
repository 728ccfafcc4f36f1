"""Live event delivery between processes (Redis pub/sub); PostgreSQL stays the source of truth."""
