"""The bounds of an `sla` block (app/sla/spec.py's SlaSpec, a version's block and a tenant's
override alike), in a leaf module: app.models builds template_versions.sla's expression from
them (app/models/template.py, SLA_SQL) and sits below app.sla in the import contract's layers.

Changing a bound needs a migration that regenerates template_versions.sla, as 0026 does: the
column is STORED, so PostgreSQL computed it with the bounds of the release that wrote each row
(drop it and add it again with the new SLA_SQL, written out literally; see
alembic/versions/0026_sla_valid.py). Overrides (template_slas) need none: their SQL
(`override_valid` in app/sla/repository.py) reads these bounds at query time."""

from __future__ import annotations

# A run longer than this is not a service level any more, it is a batch job.
MAX_DURATION_LIMIT = 30 * 86400.0
# Windows between 5 minutes and 31 days: a shorter one judges a handful of runs, a longer one
# makes the evaluation's count scan months of executions every round.
MIN_WINDOW_SECONDS = 300
MAX_WINDOW_SECONDS = 31 * 86400
DEFAULT_WINDOW_SECONDS = 86400
DEFAULT_MIN_RUNS = 10
MAX_MIN_RUNS = 100_000
