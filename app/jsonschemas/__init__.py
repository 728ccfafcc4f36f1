"""JSON Schema for schemas and values written by strangers: one validator factory, the checks
of a schema before it is stored, size and depth caps, and a bounded way to run it all.

Tenants write the JSON Schema of a template's parameters and send the params checked against
it, so everything here assumes a hostile author (docs/security.md):

- validator.py: the one validator class. No retrieval (only references inside the schema
  resolve), linear keywords (`uniqueItems` by canonical form, RE2 patterns), the same class
  for every subschema, and a look at the thread's deadline before every keyword.
- schema_checks.py: `schema_problems` reports a `$ref` or `$dynamicRef` that is not a local
  fragment (or leads nowhere), a `$schema` other than Draft 2020-12 and a pattern RE2 cannot
  compile, before a schema is stored.
- pool.py: bounded time and a fair share. `run_bounded` runs a check in a small thread pool
  with a deadline that every keyword looks at; one tenant holds at most
  MAX_RUNNING_PER_TENANT of its threads.
- bounds.py: bounded size. `limit_problems` measures depth without recursion, then the compact
  JSON size, before anything recursive touches the value.
- problems.py: what is wrong, as clipped `{path, message}` dicts.

This is a kit package: it imports no domain module. Import from here, not from its modules.
"""

from app.jsonschemas.bounds import (
    compact_size,
    limit_problems,
    shape_problem,
    storable,
    storable_text,
    text_problem,
)
from app.jsonschemas.pool import (
    MAX_RUNNING_PER_TENANT,
    ValidationTimeout,
    check_deadline,
    deadline_at,
    run_bounded,
)
from app.jsonschemas.problems import (
    MAX_MESSAGE_CHARS,
    MAX_PROBLEMS,
    Problem,
    instance_problems,
    problem,
)
from app.jsonschemas.schema_checks import DIALECT, schema_problems
from app.jsonschemas.validator import (
    FORMAT_CHECKER,
    PatternError,
    canonical,
    compile_pattern,
    json_validator,
)

__all__ = [
    "DIALECT",
    "FORMAT_CHECKER",
    "MAX_MESSAGE_CHARS",
    "MAX_PROBLEMS",
    "MAX_RUNNING_PER_TENANT",
    "PatternError",
    "Problem",
    "ValidationTimeout",
    "canonical",
    "check_deadline",
    "compact_size",
    "compile_pattern",
    "deadline_at",
    "instance_problems",
    "json_validator",
    "limit_problems",
    "problem",
    "run_bounded",
    "schema_problems",
    "shape_problem",
    "storable",
    "storable_text",
    "text_problem",
]
