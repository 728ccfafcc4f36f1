"""What plugins add to the AI layer, registered once at process start (app/plugins/ai.py):
AI tasks, providers, the models a plugin task is routed to first, and cache TTLs.

The built-in tables (TASK_SPECS, ROUTING, DEFAULT_TTLS, the providers of build_providers) stay
as they are; each lookup consults these after them: `app.ai.tasks.find_task`,
`routing.candidates`, `AiCache` and `build_providers`. Prices of plugin models join
`pricing.EXTRA_PRICES` (prices beside the catalogue's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from app.ai.contracts import ModelChoice, Provider, TaskSpec

if TYPE_CHECKING:
    from app.settings import Settings

# {"<plugin>.<task>": its spec}
TASKS: dict[str, TaskSpec] = {}
# {"<plugin>.<provider>": factory(settings) -> the provider, or None when not configured}
PROVIDERS: dict[str, Callable[[Settings], Provider | None]] = {}
# {"<plugin>.<task>": the plugin's own models, tried before the tier's}
ROUTES: dict[str, list[ModelChoice]] = {}
# {"<plugin>.<task>": seconds its validated outputs stay cached}
CACHE_TTLS: dict[str, int] = {}
