"""`make bench`: the service against raw Temporal on the same server (docs/performance.md)."""
