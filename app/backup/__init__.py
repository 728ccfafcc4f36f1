"""Backup and recovery of the service's own state (docs/backup.md).

- `pgtools`: finds pg_dump/pg_restore that match the server, and runs them with the
  connection in the environment (never on the command line).
- `manifest`: what a backup holds (versions, Alembic revision, backup point, row counts,
  checksums), written last, so a folder without one is not a backup.
- `archive`: `create_backup` and `restore_backup`, the database and the tenant storage.
- `replay`: after a restore, brings back from Temporal what the workflows recorded after
  the backup point (their `execution.record_event` calls are in their histories) and
  reports the executions the backup never saw.
"""
