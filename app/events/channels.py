"""Every live-event channel the service publishes on, named in one place.

Names are what the bus (app/events/bus.py) takes; it prefixes them with `BUS_PREFIX` on Redis.
Code that publishes with its own Redis client (the AI gateway) uses `on_redis`.
- `execution:<id>`: one execution's events (executionUpdates);
- `tenant:<id>:executions`: every execution event of a tenant (executionsFeed);
- `tenant:<id>:ai`: a tenant's AI events (budget thresholds);
- `tenant:<id>:<name>`: what `events.publish` steps send; the service's own names are reserved;
- `notifications:<id>`: a wake-up (`{"tenantId", "seq"}`) after a tenant's notification log
  (app/notifications) grew; outside `tenant:<id>:*`, so no template's channel name can reach it.
"""

from __future__ import annotations

import uuid

BUS_PREFIX = "wfs:"
EXECUTIONS = "executions"
AI = "ai"
RESERVED = (EXECUTIONS, AI)  # names a template's events.publish step may not use


def execution(execution_id: uuid.UUID | str) -> str:
    return f"execution:{execution_id}"


def tenant(tenant_id: uuid.UUID | str, name: str) -> str:
    return f"tenant:{tenant_id}:{name}"


def notifications(tenant_id: uuid.UUID | str) -> str:
    return f"notifications:{tenant_id}"


def on_redis(channel: str) -> str:
    """The Redis channel the bus uses for `channel`."""
    return BUS_PREFIX + channel
