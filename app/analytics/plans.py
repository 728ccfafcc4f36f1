"""How PostgreSQL plans the analytics statements, set for the rest of the caller's transaction
in one round trip (set_config(..., is_local => true) is SET LOCAL as a function). They reach
no other GraphQL field's statements: every resolver opens its own session and transaction
(app/api/context.py `session()`); what follows them in the same transaction is the resolver's
own small lookups, or the rest of the rollup refresh, which wants the same settings.

- Custom plans: asyncpg prepares each statement once per connection, and from a statement's
  sixth run PostgreSQL may switch to a generic plan, one for any values. A generic plan cannot
  see which window, statuses or template are asked for: tenantComparison over 90 days took
  215-245 ms a statement against 120-145 ms custom, the SLA report's count of open runs went
  from 30 ms to 300-500 ms, a broad paramsContains from 0.7 s to 1.5-3 s
  (docs/library-notes.md).
- JIT off: these statements pass jit_above_cost, and compiling them took longer than running
  them here.
- `random_page_cost`, when given: the planner's cost of a random page read for one statement
  (stats_repository: a broad paramsContains).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def plan_for_values(
    session: AsyncSession, *, jit: bool = False, random_page_cost: float | None = None
) -> None:
    """Custom plans (and JIT off unless `jit`) until the session's transaction ends."""
    settings = [("plan_cache_mode", "force_custom_plan")]
    if not jit:
        settings.append(("jit", "off"))
    if random_page_cost is not None:
        settings.append(("random_page_cost", str(random_page_cost)))
    await session.execute(select(*(func.set_config(k, v, True) for k, v in settings)))
